/* DORA statistics: the window and filters of a query, and relfleet_stats over the release records.
 */
#include "rf_stats.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATS_STR_(x) #x
#define STATS_STR(x) STATS_STR_(x)

long long rf_stats_window_s(const char *s)
{
    static const struct {
        char unit;
        long long seconds;
    } units[] = {{'m', 60}, {'h', 3600}, {'d', 86400}, {'w', 7 * 86400}};
    char *end = NULL;
    long long n;

    if (!s || !isdigit((unsigned char)*s) || strlen(s) > 8)
        return -1;
    n = strtoll(s, &end, 10);
    if (!end || end[0] == '\0' || end[1] != '\0')
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (*end == units[i].unit) {
            n *= units[i].seconds;
            return n >= 60 && n <= (long long)RF_STATS_MAX_DAYS * 86400 ? n : -1;
        }
    return -1;
}

/* 1 for a DNS label (service, env names). */
static int stats_label_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '-')
            return 0;
    return 1;
}

/* 1 for a group name: 1-128 printable ASCII characters. */
static int stats_group_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
            return 0;
    return 1;
}

static rf_err_t stats_bad(const char **field, const char *name, char *errstr, size_t errstr_size,
                          const char *what, const char *value)
{
    if (field)
        *field = name;
    return rf_errf(RF_ERR_PERM, errstr, errstr_size, "%s '%.64s' is not %s", name, value, what);
}

rf_err_t rf_stats_run(rf_db_t *db, const rf_stats_query_t *q, char **out, const char **field,
                      char *errstr, size_t errstr_size)
{
    const char *since = q->since ? q->since : RF_STATS_SINCE_DEFAULT;
    long long window = rf_stats_window_s(since);
    const char *p[6];
    char secs[32], ignored[256];
    PGresult *res = NULL;
    rf_err_t result;

    *out = NULL;
    if (q->service && !stats_label_ok(q->service))
        return stats_bad(field, "service", errstr, errstr_size, "a service name", q->service);
    if (q->env && !stats_label_ok(q->env))
        return stats_bad(field, "env", errstr, errstr_size, "an env name", q->env);
    if (q->group && !stats_group_ok(q->group))
        return stats_bad(field, "group", errstr, errstr_size,
                         "a group name (1-128 printable characters)", q->group);
    snprintf(secs, sizeof(secs), "%lld", window);
    if (window < 0) {
        const char *tp[1] = {since};
        /* ISO 8601 only: PostgreSQL would also take words such as 'yesterday'. */
        if (strspn(since, "0123456789") != 4 || since[4] != '-' ||
            rf_db_exec(db, "SELECT 1 WHERE $1::timestamptz < now()", 1, tp, &res, ignored,
                       sizeof(ignored)) != RF_OK ||
            PQntuples(res) != 1) {
            PQclear(res);
            return stats_bad(field, "since", errstr, errstr_size,
                             "a window (30d, 12h, 90m, 2w) or a past time (ISO 8601, e.g."
                             " 2026-11-01T00:00:00Z)",
                             since);
        }
        PQclear(res);
        res = NULL;
    }
    p[0] = window < 0 ? since : NULL;
    p[1] = window < 0 ? NULL : secs;
    p[2] = q->service;
    p[3] = q->env;
    p[4] = q->group;
    p[5] = q->user;
    result =
        rf_db_exec(db,
                   "SELECT relfleet_stats(greatest(coalesce($1::timestamptz, now() -"
                   " make_interval(secs => $2::bigint)), now() - make_interval(days => " STATS_STR(
                       RF_STATS_MAX_DAYS) ")), now(), $3, $4, $5, $6)",
                   6, p, &res, errstr, errstr_size);
    if (result != RF_OK)
        return result;
    *out = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (!*out)
        abort();
    return RF_OK;
}
