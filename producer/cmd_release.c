/* relctl verbs about releases: deploy, watch, show, history, cancel, promote, abort. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "relctl.h"
#include "rf_release.h"
#include "rf_request.h"
#include "rf_store.h"

static int output_json(const char *v)
{
    return v && strcmp(v, "json") == 0;
}

int relctl_cmd_deploy(relctl_t *ctl, int argc, char **argv)
{
    static const struct option opts[] = {
        {"service", required_argument, NULL, 's'}, {"env", required_argument, NULL, 'e'},
        {"version", required_argument, NULL, 'v'}, {"message", required_argument, NULL, 'm'},
        {"wait", no_argument, NULL, 'w'},          {"output", required_argument, NULL, 'o'},
        {NULL, 0, NULL, 0}};
    const char *service = NULL, *env = NULL, *version = NULL, *desc = NULL;
    int wait = 0, c;

    optind = 0;
    while ((c = getopt_long(argc, argv, "s:e:v:m:wo:", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            service = optarg;
            break;
        case 'e':
            env = optarg;
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
            ctl->json = output_json(optarg);
            break;
        default:
            return RELCTL_USAGE;
        }
    }
    if (!service || !env || !version || optind != argc)
        return relctl_usage("deploy needs --service, --env and --version");
    return relctl_request(
        ctl, rf_request_new("deploy", service, env, version, NULL, ctl->operator_name, desc),
        wait);
}

/* The arguments of show and watch: one release id, and --output. */
static int release_id_arg(relctl_t *ctl, int argc, char **argv, const char **id)
{
    static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                         {NULL, 0, NULL, 0}};
    int c;

    optind = 0;
    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        if (c != 'o')
            return RELCTL_USAGE;
        ctl->json = output_json(optarg);
    }
    if (optind != argc - 1)
        return relctl_usage("%s needs one release id", argv[0]);
    *id = argv[optind];
    return RELCTL_OK;
}

static const char *str_or(const json_t *o, const char *key, const char *def)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : def;
}

/* "HH:MM:SS.mmm" out of an ISO time. */
static const char *clock_part(const char *iso)
{
    const char *t = iso ? strchr(iso, 'T') : NULL;
    return t ? t + 1 : "";
}

static void print_event(const json_t *ev)
{
    printf("  %.12s  %-8s %-12s %s\n", clock_part(str_or(ev, "at", "")), str_or(ev, "stage", ""),
           str_or(ev, "event", ""), str_or(ev, "message", ""));
}

static void print_pods(const json_t *pods)
{
    size_t i;
    json_t *pod;

    json_array_foreach(pods, i, pod) {
        printf("  pod %s: %s%s%s, restarts %lld\n", str_or(pod, "name", "?"),
               str_or(pod, "phase", "?"), json_object_get(pod, "reason") ? " " : "",
               str_or(pod, "reason", ""),
               (long long)json_integer_value(json_object_get(pod, "restarts")));
        if (json_string_value(json_object_get(pod, "log_tail"))) {
            const char *log = str_or(pod, "log_tail", "");
            const char *line = log;
            while (*line) {
                const char *nl = strchr(line, '\n');
                int len = nl ? (int)(nl - line) : (int)strlen(line);
                printf("    | %.*s\n", len, line);
                line += len + (nl ? 1 : 0);
            }
        }
    }
}

static void print_record(const json_t *r)
{
    const json_t *v;
    size_t i;
    json_t *ev;

    printf("release     %s\n", str_or(r, "id", ""));
    printf("service     %s (env %s)\n", str_or(r, "service", ""), str_or(r, "env", ""));
    printf("version     %s\n", str_or(r, "version", ""));
    printf("kind        %s", str_or(r, "kind", ""));
    if (json_string_value(json_object_get(r, "parent")))
        printf(" of %s", str_or(r, "parent", ""));
    printf("\nstatus      %s\n", str_or(r, "status", ""));
    printf("operator    %s\n", str_or(r, "operator", ""));
    if (*str_or(r, "description", ""))
        printf("description %s\n", str_or(r, "description", ""));
    printf("created     %s\n", str_or(r, "created_at", ""));
    if (json_string_value(json_object_get(r, "started_at")))
        printf("started     %s\n", str_or(r, "started_at", ""));
    if (json_string_value(json_object_get(r, "finished_at")))
        printf("finished    %s\n", str_or(r, "finished_at", ""));
    v = json_object_get(r, "duration_ms");
    if (json_is_integer(v))
        printf("duration    %.3f s\n", (double)json_integer_value(v) / 1000.0);
    if (json_string_value(json_object_get(r, "error")))
        printf("error       %s\n", str_or(r, "error", ""));
    if (json_string_value(json_object_get(r, "template_id")))
        printf("template    %s @ %.12s\n", str_or(r, "template_id", ""),
               str_or(r, "template_version", ""));
    if (json_is_integer(json_object_get(r, "approvals_needed"))) {
        printf("approvals   %lld needed\n",
               (long long)json_integer_value(json_object_get(r, "approvals_needed")));
        json_array_foreach(json_object_get(r, "approvals"), i, ev)
            printf("  %-8s by %s at %s%s%s\n", str_or(ev, "decision", ""), str_or(ev, "user", ""),
                   str_or(ev, "at", ""), *str_or(ev, "comment", "") ? ": " : "",
                   str_or(ev, "comment", ""));
    }
    printf("timeline\n");
    json_array_foreach(json_object_get(r, "timeline"), i, ev) print_event(ev);
    if (json_array_size(json_object_get(r, "pods")) > 0) {
        printf("failing pods\n");
        print_pods(json_object_get(r, "pods"));
    }
    if (json_array_size(json_object_get(r, "notifications")) > 0) {
        printf("notifications\n");
        json_array_foreach(json_object_get(r, "notifications"), i, ev)
            printf("  %-9s %-30s %-9s attempts %lld %s\n", str_or(ev, "channel", ""),
                   str_or(ev, "target", ""), str_or(ev, "state", ""),
                   (long long)json_integer_value(json_object_get(ev, "attempts")),
                   str_or(ev, "last_error", ""));
    }
}

int relctl_cmd_show(relctl_t *ctl, int argc, char **argv)
{
    const char *id;
    rf_db_t *db;
    json_t *rec = NULL;
    char errstr[1024];
    rf_err_t err;
    int result;

    result = release_id_arg(ctl, argc, argv, &id);
    if (result != RELCTL_OK)
        return result;
    db = relctl_db(ctl);
    if (!db)
        return RELCTL_FAIL;
    err = rf_store_record(db, id, &rec, errstr, sizeof(errstr));
    if (err != RF_OK)
        return relctl_fail("%s", errstr);
    if (relctl_require(ctl, "viewer", str_or(rec, "service", ""), str_or(rec, "env", "")) !=
        RELCTL_OK) {
        json_decref(rec);
        return RELCTL_FAIL;
    }
    if (ctl->json) {
        relctl_print_json(rec);
    } else {
        print_record(rec);
        json_decref(rec);
    }
    return RELCTL_OK;
}

static void draw_progress(const json_t *progress, int tty)
{
    json_int_t desired = json_integer_value(json_object_get(progress, "desired"));
    json_int_t updated = json_integer_value(json_object_get(progress, "updated"));
    json_int_t available = json_integer_value(json_object_get(progress, "available"));
    int width = 30, filled;

    if (!tty || desired <= 0)
        return;
    filled = (int)(available * width / desired);
    if (filled > width)
        filled = width;
    printf("\r  [%.*s%.*s] %lld/%lld available, %lld updated ", filled,
           "##############################", width - filled, "..............................",
           (long long)available, (long long)desired, (long long)updated);
    if (json_object_get(progress, "steps")) /* a gray release: where its steps are */
        printf("| step %lld/%lld, weight %lld%% (%s) ",
               (long long)json_integer_value(json_object_get(progress, "step")),
               (long long)json_integer_value(json_object_get(progress, "steps")),
               (long long)json_integer_value(json_object_get(progress, "weight")),
               str_or(progress, "phase", ""));
    fflush(stdout);
}

int relctl_follow(relctl_t *ctl, const char *id, int json)
{
    rf_db_t *db = relctl_db(ctl);
    struct timespec pause = {0, 200 * 1000000L};
    size_t shown = 0;
    int tty = isatty(STDOUT_FILENO);
    int waited = 0, bar = 0, viewer = 0;
    char errstr[1024];

    if (!db)
        return RELCTL_FAIL;
    for (;;) {
        json_t *rec = NULL;
        rf_err_t err = rf_store_record(db, id, &rec, errstr, sizeof(errstr));
        const char *status;
        json_t *tl;
        int done;

        if (err == RF_ERR_NOTFOUND) {
            /* Published but not yet consumed by the render stage. */
            if (++waited > 5 * 60 * 60)
                return relctl_fail("release %s was not picked up in an hour", id);
            nanosleep(&pause, NULL);
            continue;
        }
        if (err != RF_OK) {
            if (err == RF_ERR_RETRY) {
                nanosleep(&pause, NULL);
                continue;
            }
            return relctl_fail("%s", errstr);
        }
        if (!viewer && relctl_require(ctl, "viewer", str_or(rec, "service", ""),
                                      str_or(rec, "env", "")) != RELCTL_OK) {
            json_decref(rec);
            return RELCTL_FAIL;
        }
        viewer = 1;
        status = str_or(rec, "status", "");
        tl = json_object_get(rec, "timeline");
        if (!json) {
            for (; shown < json_array_size(tl); shown++) {
                if (bar) {
                    printf("\r%60s\r", "");
                    bar = 0;
                }
                print_event(json_array_get(tl, shown));
            }
            if (json_is_object(json_object_get(rec, "progress")) &&
                !rf_release_status_terminal(rf_release_status_parse(status))) {
                draw_progress(json_object_get(rec, "progress"), tty);
                bar = tty;
            }
            fflush(stdout);
        }
        done = rf_release_status_terminal(rf_release_status_parse(status));
        if (done) {
            int ok = strcmp(status, "succeeded") == 0;
            if (bar)
                printf("\n");
            if (json) {
                relctl_print_json(rec);
            } else {
                if (json_array_size(json_object_get(rec, "pods")) > 0)
                    print_pods(json_object_get(rec, "pods"));
                printf("release %s %s", id, status);
                if (json_is_integer(json_object_get(rec, "duration_ms")))
                    printf(" in %.1f s",
                           (double)json_integer_value(json_object_get(rec, "duration_ms")) /
                               1000.0);
                if (json_string_value(json_object_get(rec, "error")))
                    printf(": %s", str_or(rec, "error", ""));
                printf("\n");
                json_decref(rec);
            }
            return ok ? RELCTL_OK : RELCTL_FAIL;
        }
        json_decref(rec);
        nanosleep(&pause, NULL);
    }
}

int relctl_cmd_watch(relctl_t *ctl, int argc, char **argv)
{
    const char *id;
    int result = release_id_arg(ctl, argc, argv, &id);

    if (result != RELCTL_OK)
        return result;
    return relctl_follow(ctl, id, ctl->json);
}

int relctl_cmd_history(relctl_t *ctl, int argc, char **argv)
{
    static const struct option opts[] = {
        {"service", required_argument, NULL, 's'}, {"env", required_argument, NULL, 'e'},
        {"limit", required_argument, NULL, 'n'},   {"output", required_argument, NULL, 'o'},
        {NULL, 0, NULL, 0}};
    const char *params[4] = {NULL, NULL, "20", NULL};
    PGresult *res = NULL;
    rf_db_t *db;
    char errstr[1024];
    int c;

    optind = 0;
    while ((c = getopt_long(argc, argv, "s:e:n:o:", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            params[0] = optarg;
            break;
        case 'e':
            params[1] = optarg;
            break;
        case 'n':
            if (atoi(optarg) <= 0)
                return relctl_usage("--limit takes a positive number, not '%s'", optarg);
            params[2] = optarg;
            break;
        case 'o':
            ctl->json = output_json(optarg);
            break;
        default:
            return RELCTL_USAGE;
        }
    }
    if (optind != argc)
        return relctl_usage("history takes no arguments besides its options");
    db = relctl_db(ctl);
    if (!db)
        return RELCTL_FAIL;
    /* With a token: the releases its user may view (and a refusal when asked for one
     * service in one env it may not view). */
    if (params[0] && params[1] &&
        relctl_require(ctl, "viewer", params[0], params[1]) != RELCTL_OK)
        return RELCTL_FAIL;
    if (relctl_whoami(ctl, &params[3]) != RELCTL_OK)
        return RELCTL_FAIL;
    if (rf_db_exec(db,
                   "SELECT coalesce(jsonb_agg(x ORDER BY x->>'created_at' DESC), '[]') FROM ("
                   " SELECT relfleet_release_record(id) - 'timeline' - 'pods' - 'notifications'"
                   " AS x FROM releases WHERE ($1::text IS NULL OR service = $1)"
                   " AND ($2::text IS NULL OR env = $2) AND ($4::text IS NULL OR"
                   " relfleet_has_role($4, 'viewer', service, env)) ORDER BY created_at DESC, id"
                   " LIMIT $3::int) t",
                   4, params, &res, errstr, sizeof(errstr)) != RF_OK)
        return relctl_fail("%s", errstr);
    {
        json_t *list = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
        size_t i;
        json_t *r;
        PQclear(res);
        if (ctl->json) {
            relctl_print_json(list);
            return RELCTL_OK;
        }
        printf("%-36s  %-16s %-6s %-14s %-8s %-11s %-10s %-19s %9s  %s\n", "ID", "SERVICE", "ENV",
               "VERSION", "KIND", "STATUS", "OPERATOR", "CREATED", "DURATION", "DESCRIPTION");
        json_array_foreach(list, i, r) {
            char dur[32] = "-";
            if (json_is_integer(json_object_get(r, "duration_ms")))
                snprintf(dur, sizeof(dur), "%.1fs",
                         (double)json_integer_value(json_object_get(r, "duration_ms")) / 1000.0);
            printf("%-36s  %-16s %-6s %-14s %-8s %-11s %-10s %-19.19s %9s  %s%.8s%s%s%s%s\n",
                   str_or(r, "id", ""), str_or(r, "service", ""), str_or(r, "env", ""),
                   str_or(r, "version", ""), str_or(r, "kind", ""), str_or(r, "status", ""),
                   str_or(r, "operator", ""), str_or(r, "created_at", ""), dur,
                   json_string_value(json_object_get(r, "parent")) ? "[of " : "",
                   json_string_value(json_object_get(r, "parent")) ? str_or(r, "parent", "") : "",
                   json_string_value(json_object_get(r, "parent")) ? "] " : "",
                   str_or(r, "description", ""),
                   json_string_value(json_object_get(r, "error")) ? " | " : "",
                   str_or(r, "error", ""));
        }
        json_decref(list);
    }
    return RELCTL_OK;
}

int relctl_cmd_command(relctl_t *ctl, int argc, char **argv)
{
    const char *action = argv[0];
    const char *id = NULL;
    int full = 0;
    rf_db_t *db;
    json_t *rec = NULL, *msg;
    char errstr[1024], cmd_id[RF_MSG_UUID_SIZE];
    int result;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--full") == 0 && strcmp(action, "promote") == 0)
            full = 1;
        else if (argv[i][0] != '-' && !id)
            id = argv[i];
        else
            return relctl_usage("%s: unexpected argument '%s'", action, argv[i]);
    }
    if (!id)
        return relctl_usage("%s needs a release id", action);
    db = relctl_db(ctl);
    if (!db)
        return RELCTL_FAIL;
    /* A release published a moment ago may not be recorded yet: give the render stage a
     * few seconds before calling the id unknown. */
    for (int waited = 0;; waited++) {
        rf_err_t err = rf_store_record(db, id, &rec, errstr, sizeof(errstr));
        struct timespec pause = {0, 100 * 1000000L};
        if (err == RF_OK)
            break;
        if (err != RF_ERR_NOTFOUND || waited >= 100)
            return relctl_fail("%s", errstr);
        nanosleep(&pause, NULL);
    }
    if (rf_release_status_terminal(rf_release_status_parse(str_or(rec, "status", "")))) {
        result = relctl_fail("release %s has already ended as %s", id, str_or(rec, "status", ""));
        json_decref(rec);
        return result;
    }
    msg = rf_request_command(action, id, str_or(rec, "service", ""), str_or(rec, "env", ""),
                             ctl->operator_name, full, cmd_id);
    json_decref(rec);
    if (!msg)
        return relctl_fail("out of memory");
    result = relctl_publish(ctl, "commands", msg);
    json_decref(msg);
    if (result == RELCTL_OK)
        printf("%s of %s sent (command %s)\n", action, id, cmd_id);
    return result;
}
