/* Unit tests of kubesim's pure logic: intstr rounding, fenceposts, selectors, patches, pod states. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "ks_ctrl.h"

static void test_placeholder(void **state)
{
    (void)state;
    assert_int_equal(ks_ctrl_scaled(NULL, 10, 1, 3), 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_placeholder)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
