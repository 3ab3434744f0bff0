/* GET /api/v1/stats: DORA metrics of the releases the caller may view (docs/dora.md). */
#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "rf_stats.h"

int api_stats_get(api_req_t *r)
{
    rf_stats_query_t q = {api_req_arg(r, "since"), api_req_arg(r, "service"), api_req_arg(r, "env"),
                          api_req_arg(r, "group"), r->user};
    const char *field = NULL;
    char errstr[1024], *text = NULL;
    rf_err_t err;

    err = rf_stats_run(r->db, &q, &text, &field, errstr, sizeof(errstr));
    if (err != RF_OK && field)
        return api_reply_error(r, MHD_HTTP_BAD_REQUEST, field, "%s", errstr);
    if (err != RF_OK)
        return api_reply_failure(r, err, "cannot compute statistics", errstr);
    r->status = MHD_HTTP_OK;
    r->raw = text;
    r->raw_len = strlen(text);
    r->raw_type = "application/json";
    return 0;
}
