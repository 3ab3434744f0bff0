/* Durations and clocks: the one parser every setting and strategy uses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "rf_clock.h"

static void test_parse(void **state)
{
    static const struct {
        const char *in;
        long long ms;
    } cases[] = {
        {"600", 600000},   {"30s", 30000},   {"500ms", 500},      {"5m", 300000},
        {"1h", 3600000},   {"0", 0},          {"2400h", 8640000000LL}, {"2401h", -1},
        {"", -1},          {"s", -1},         {"-5", -1},          {" 5", -1},
        {"5 m", -1},       {"5d", -1},        {"1.5s", -1},        {"10sec", -1},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (rf_clock_parse_ms(cases[i].in) != cases[i].ms)
            fail_msg("'%s': got %lld, want %lld", cases[i].in, rf_clock_parse_ms(cases[i].in),
                     cases[i].ms);
    }
    assert_int_equal(rf_clock_parse_ms(NULL), -1);
}

static void test_clocks_move_forward(void **state)
{
    long a = rf_clock_mono_ms();
    long long e = rf_clock_epoch_ms();

    (void)state;
    assert_true(rf_clock_mono_ms() >= a);
    assert_true(e > 1700000000000LL); /* after 2023 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_clocks_move_forward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
