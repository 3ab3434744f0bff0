/* relctl verbs of promotion between environments: advance, approve, deny. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relctl.h"
#include "rf_request.h"

/* relctl advance --service S --from E1 --to E2 [--version V] [-m DESC] [--wait]
 * [--output json]: a deploy into E2 of what runs in E1 (its newest success, or the newest
 * success of V there), with the template version it ran with. */
int relctl_cmd_advance(relctl_t *ctl, int argc, char **argv)
{
    static const struct option opts[] = {
        {"service", required_argument, NULL, 's'}, {"from", required_argument, NULL, 'f'},
        {"to", required_argument, NULL, 't'},      {"version", required_argument, NULL, 'v'},
        {"message", required_argument, NULL, 'm'}, {"wait", no_argument, NULL, 'w'},
        {"output", required_argument, NULL, 'o'},  {NULL, 0, NULL, 0}};
    const char *service = NULL, *from = NULL, *to = NULL, *version = NULL, *desc = NULL;
    char errstr[1024], text[512];
    PGresult *res = NULL;
    json_t *msg;
    rf_db_t *db;
    int wait = 0, c;

    optind = 0;
    while ((c = getopt_long(argc, argv, "s:f:t:v:m:wo:", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            service = optarg;
            break;
        case 'f':
            from = optarg;
            break;
        case 't':
            to = optarg;
            break;
        case 'v':
            version = optarg;
            break;
        case 'm':
            desc = optarg;
            break;
        case 'w':
            wait = 1;
            break;
        case 'o':
            ctl->json = strcmp(optarg, "json") == 0;
            break;
        default:
            return RELCTL_USAGE;
        }
    }
    if (!service || !from || !to || optind != argc)
        return relctl_usage("advance needs --service, --from and --to");
    if (strcmp(from, to) == 0)
        return relctl_usage("advance: --from and --to name the same env '%s'", from);
    db = relctl_db(ctl);
    if (!db)
        return RELCTL_FAIL;
    if (relctl_require(ctl, "viewer", service, from) != RELCTL_OK ||
        relctl_require(ctl, "releaser", service, to) != RELCTL_OK)
        return RELCTL_FAIL;
    {
        const char *params[3] = {service, from, version};
        if (rf_db_exec(db,
                       "SELECT id, version, template_version FROM releases WHERE service = $1"
                       " AND env = $2 AND status = 'succeeded' AND template_version IS NOT NULL"
                       " AND ($3::text IS NULL OR version = $3) ORDER BY finished_at DESC, id"
                       " LIMIT 1",
                       3, params, &res, errstr, sizeof(errstr)) != RF_OK)
            return relctl_fail("%s", errstr);
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        if (version)
            return relctl_fail("cannot advance service '%s': version '%s' has not succeeded in"
                               " env '%s'",
                               service, version, from);
        return relctl_fail("cannot advance service '%s': no successful release in env '%s'",
                           service, from);
    }
    if (!desc) {
        snprintf(text, sizeof(text), "advance from %s (release %s)", from, PQgetvalue(res, 0, 0));
        desc = text;
    }
    msg = rf_request_new("deploy", service, to, PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 0),
                         ctl->operator_name, desc);
    if (msg)
        json_object_set_new(msg, "template_version", json_string(PQgetvalue(res, 0, 2)));
    PQclear(res);
    return relctl_request(ctl, msg, wait);
}

/* relctl approve ID [-m WHY] | relctl deny ID -m WHY: the decision of the token's user. */
int relctl_cmd_decide(relctl_t *ctl, int argc, char **argv)
{
    static const struct option opts[] = {{"message", required_argument, NULL, 'm'},
                                         {"output", required_argument, NULL, 'o'},
                                         {NULL, 0, NULL, 0}};
    const int deny = strcmp(argv[0], "deny") == 0;
    const char *id, *why = NULL, *user = NULL, *status;
    char errstr[1024];
    PGresult *res = NULL;
    json_t *out = NULL, *request;
    rf_db_t *db;
    int c, result = RELCTL_FAIL;

    optind = 0;
    while ((c = getopt_long(argc, argv, "m:o:", opts, NULL)) != -1) {
        if (c == 'm')
            why = optarg;
        else if (c == 'o')
            ctl->json = strcmp(optarg, "json") == 0;
        else
            return RELCTL_USAGE;
    }
    if (optind != argc - 1)
        return relctl_usage("%s needs one release id", argv[0]);
    id = argv[optind];
    if (!rf_request_is_id(id))
        return relctl_usage("%s: '%s' is not a release id", argv[0], id);
    if (deny && (!why || !*why))
        return relctl_usage("deny needs -m WHY: the reason goes on the release's record");
    db = relctl_db(ctl);
    if (!db)
        return RELCTL_FAIL;
    if (relctl_whoami(ctl, &user) != RELCTL_OK)
        return RELCTL_FAIL;
    if (!user)
        return relctl_fail("%s needs the API token of an approver (RELFLEET_TOKEN): a decision"
                           " names its user",
                           argv[0]);
    {
        const char *params[4] = {id, user, deny ? "denied" : "approved", why ? why : ""};
        if (rf_db_exec(db, "SELECT relfleet_decide($1::uuid, $2, $3, $4)::text", 4, params, &res,
                       errstr, sizeof(errstr)) != RF_OK)
            return relctl_fail("%s", errstr);
    }
    out = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    PQclear(res);
    if (!out)
        return relctl_fail("out of memory");
    if (json_string_value(json_object_get(out, "error"))) {
        result =
            relctl_fail("cannot %s: %s", argv[0], json_string_value(json_object_get(out, "error")));
        goto out;
    }
    status = json_string_value(json_object_get(out, "status"));
    /* Approved enough: hand the stored request (as it was signed) to the render stage now;
     * its sweep would start it anyway. */
    request = json_object_get(out, "request");
    if (json_is_object(request)) {
        rf_producer_t *p = relctl_producer(ctl);
        char key[300], *text = json_dumps(request, JSON_COMPACT | JSON_SORT_KEYS);
        snprintf(key, sizeof(key), "%s/%s", json_string_value(json_object_get(request, "env")),
                 json_string_value(json_object_get(request, "service")));
        if (!p || !text ||
            rf_producer_send(p, "requests", key, text, strlen(text), errstr, sizeof(errstr)) !=
                RF_OK)
            fprintf(stderr,
                    "relctl: warning: release %s is queued; the render stage's sweep"
                    " starts it (cannot publish its request now)\n",
                    id);
        free(text);
        json_object_del(out, "request");
    }
    if (ctl->json) {
        json_object_set_new(out, "release_id", json_string(id));
        relctl_print_json(out);
        out = NULL;
    } else if (deny) {
        printf("denied release %s: %s\n", id, status);
    } else {
        printf("approved release %s (%lld of %lld): %s\n", id,
               (long long)json_integer_value(json_object_get(out, "approvals")),
               (long long)json_integer_value(json_object_get(out, "needed")), status);
    }
    result = RELCTL_OK;
out:
    json_decref(out);
    return result;
}
