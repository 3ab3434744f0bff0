/* relctl wave: create, show, watch, pause, resume, abort and list waves (docs/waves.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "relctl.h"
#include "rf_wave.h"

#define WAVE_USAGE                                                                                 \
    "wave create (--select group=G | --services A,B | --template T)\n"                             \
    "             (--version V | --redo | --template-version latest) --env E --max-parallel N\n"   \
    "             [--max-failures F | F%] [--steps JSON] [--pause-between DURATION] [-m DESC]\n"   \
    "             [--wait] [--output json]\n"                                                      \
    "       relctl wave show|watch ID [--output json]\n"                                           \
    "       relctl wave pause|resume|abort ID [-m WHY]\n"                                          \
    "       relctl wave list [--env E] [--limit N] [--output json]"

static const char *wstr(const json_t *o, const char *key, const char *def)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : def;
}

static long long wint(const json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

/* The user to check (NULL: no token, and auth_required off). */
static int wave_user(relctl_t *ctl, const char **user)
{
    if (relctl_whoami(ctl, user) != RELCTL_OK)
        return RELCTL_FAIL;
    if (!*user && strcmp(ctl->conf.auth_required, "on") == 0)
        return relctl_fail("this needs the releaser role: set the API token (RELFLEET_TOKEN)");
    return RELCTL_OK;
}

static void wave_bar(const json_t *w, char *out, size_t size)
{
    long long total = wint(w, "total"), ended = wint(w, "ended");
    int width = 30, filled = total > 0 ? (int)(ended * width / total) : 0;

    snprintf(out, size, "[%.*s%.*s] %lld/%lld", filled, "##############################",
             width - filled, "..............................", ended, total);
}

/* "7 succeeded, 1 failed, 2 running, 1 queued, 2 pending" */
static void wave_counts(const json_t *c, char *out, size_t size)
{
    static const char *const keys[] = {"succeeded", "failed",  "cancelled", "running",
                                       "queued",    "pending", NULL};
    size_t used = 0;

    out[0] = '\0';
    for (int i = 0; keys[i] && used < size; i++) {
        long long v = wint(c, keys[i]);
        if (v == 0 && strcmp(keys[i], "succeeded") != 0)
            continue;
        used +=
            (size_t)snprintf(out + used, size - used, "%s%lld %s", used ? ", " : "", v, keys[i]);
    }
}

static void wave_print_event(const json_t *ev)
{
    const char *at = wstr(ev, "at", "");
    const char *t = strchr(at, 'T');
    printf("  %.12s  %-9s %s\n", t ? t + 1 : at, wstr(ev, "event", ""), wstr(ev, "message", ""));
}

static void wave_print(const json_t *w)
{
    char bar[96], counts[256];
    const json_t *sel = json_object_get(w, "selector");
    const char *key = NULL;
    json_t *v, *s;
    size_t i;

    printf("wave        %s\n", wstr(w, "id", ""));
    printf("status      %s", wstr(w, "status", ""));
    if (strcmp(wstr(w, "status", ""), "running") == 0 ||
        strcmp(wstr(w, "status", ""), "paused") == 0)
        printf(" (step %lld of %zu)", wint(w, "step"),
               json_array_size(json_object_get(w, "steps")));
    printf("\n");
    if (json_string_value(json_object_get(w, "reason")))
        printf("reason      %s\n", wstr(w, "reason", ""));
    printf("env         %s\n", wstr(w, "env", ""));
    json_object_foreach((json_t *)sel, key, v)
    {
        if (json_is_string(v)) {
            printf("selects     %s=%s", key, json_string_value(v));
        } else {
            printf("selects     services ");
            json_array_foreach(v, i, s) printf("%s%s", i ? "," : "", json_string_value(s));
        }
    }
    printf(" (%lld services)\n", wint(w, "total"));
    if (strcmp(wstr(w, "mode", ""), "version") == 0)
        printf("releases    deploy of version %s\n", wstr(w, "version", ""));
    else if (strcmp(wstr(w, "mode", ""), "redo") == 0)
        printf("releases    redo of each service's latest release\n");
    else
        printf("releases    each service's running version rendered with its latest template\n");
    printf("limits      at most %lld at once, failure budget %s", wint(w, "max_parallel"),
           wstr(w, "max_failures_spec", "0"));
    if (wint(w, "pause_between_ms") > 0)
        printf(", %.1f s between steps", (double)wint(w, "pause_between_ms") / 1000.0);
    printf("\noperator    %s\n", wstr(w, "operator", ""));
    if (*wstr(w, "description", ""))
        printf("description %s\n", wstr(w, "description", ""));
    printf("created     %s\n", wstr(w, "created_at", ""));
    if (json_string_value(json_object_get(w, "finished_at")))
        printf("finished    %s\n", wstr(w, "finished_at", ""));
    wave_bar(w, bar, sizeof(bar));
    wave_counts(json_object_get(w, "counts"), counts, sizeof(counts));
    printf("progress    %s ended: %s\n", bar, counts);
    printf("steps\n");
    json_array_foreach(json_object_get(w, "steps"), i, s)
    {
        char spec[128];
        const json_t *sp = json_object_get(s, "spec");
        if (json_object_get(sp, "percent"))
            snprintf(spec, sizeof(spec), "percent %g",
                     json_number_value(json_object_get(sp, "percent")));
        else
            snprintf(spec, sizeof(spec), "services (%zu)",
                     json_array_size(json_object_get(sp, "services")));
        wave_counts(s, counts, sizeof(counts));
        printf("  %2lld  %-16s %5lld releases  %-8s %s\n", wint(s, "step"), spec, wint(s, "size"),
               wstr(s, "status", ""), counts);
    }
    if (json_array_size(json_object_get(w, "failures")) > 0) {
        printf("failures\n");
        json_array_foreach(json_object_get(w, "failures"), i, s)
            printf("  %-24s %s %s: %s\n", wstr(s, "service", ""), wstr(s, "release_id", ""),
                   wstr(s, "status", ""), wstr(s, "error", ""));
    }
    printf("events\n");
    json_array_foreach(json_object_get(w, "events"), i, s) wave_print_event(s);
    if (json_is_array(json_object_get(w, "releases"))) {
        printf("releases\n");
        json_array_foreach(json_object_get(w, "releases"), i, s)
            printf("  %-24s step %-3lld %-12s %s\n", wstr(s, "service", ""), wint(s, "step"),
                   wstr(s, "status", ""), wstr(s, "release_id", "-"));
    }
}

/* Whether a wave has ended: succeeded, or halted or aborted with none of its releases open. */
static int wave_ended(const json_t *w)
{
    const char *st = wstr(w, "status", "");

    return strcmp(st, "succeeded") == 0 ||
           ((strcmp(st, "halted") == 0 || strcmp(st, "aborted") == 0) &&
            json_string_value(json_object_get(w, "finished_at")));
}

static int wave_follow(relctl_t *ctl, const char *id, const char *user)
{
    struct timespec pause = {0, 300 * 1000000L};
    int tty = isatty(STDOUT_FILENO), bar = 0;
    size_t shown = 0;
    char last[512] = "";
    char errstr[1024];

    for (;;) {
        json_t *w = NULL;
        rf_err_t err = rf_wave_record(ctl->db, id, 0, user, "viewer", &w, errstr, sizeof(errstr));
        json_t *events;
        int done;

        if (err == RF_ERR_RETRY) {
            nanosleep(&pause, NULL);
            continue;
        }
        if (err != RF_OK)
            return relctl_fail("%s", errstr);
        user = NULL; /* checked once */
        done = wave_ended(w);
        if (!ctl->json) {
            char line[512], b[96], counts[256];
            events = json_object_get(w, "events");
            for (; shown < json_array_size(events); shown++) {
                if (bar) {
                    printf("\r%100s\r", "");
                    bar = 0;
                }
                wave_print_event(json_array_get(events, shown));
            }
            wave_bar(w, b, sizeof(b));
            wave_counts(json_object_get(w, "counts"), counts, sizeof(counts));
            snprintf(line, sizeof(line), "%s %s, step %lld/%zu: %s", b, wstr(w, "status", ""),
                     wint(w, "step"), json_array_size(json_object_get(w, "steps")), counts);
            if (tty) {
                printf("\r  %-96.96s", line);
                bar = 1;
            } else if (strcmp(line, last) != 0) {
                printf("  %s\n", line);
            }
            snprintf(last, sizeof(last), "%s", line);
            fflush(stdout);
        }
        if (done) {
            int ok = strcmp(wstr(w, "status", ""), "succeeded") == 0;
            if (bar)
                printf("\n");
            if (ctl->json) {
                relctl_print_json(w);
            } else {
                printf("wave %s %s", id, wstr(w, "status", ""));
                if (json_string_value(json_object_get(w, "reason")))
                    printf(": %s", wstr(w, "reason", ""));
                printf("\n");
                json_decref(w);
            }
            return ok ? RELCTL_OK : RELCTL_FAIL;
        }
        json_decref(w);
        nanosleep(&pause, NULL);
    }
}

/* "a,b,c" as a JSON list of names. */
static json_t *wave_names(const char *list)
{
    json_t *out = json_array();
    const char *p = list;

    while (p && *p) {
        size_t n = strcspn(p, ",");
        if (n > 0)
            json_array_append_new(out, json_stringn(p, n));
        p += n + (p[n] == ',');
    }
    return out;
}

static int wave_create(relctl_t *ctl, int argc, char **argv)
{
    static const struct option opts[] = {{"select", required_argument, NULL, 'S'},
                                         {"services", required_argument, NULL, 's'},
                                         {"template", required_argument, NULL, 'T'},
                                         {"version", required_argument, NULL, 'v'},
                                         {"redo", no_argument, NULL, 'R'},
                                         {"template-version", required_argument, NULL, 'V'},
                                         {"env", required_argument, NULL, 'e'},
                                         {"max-parallel", required_argument, NULL, 'p'},
                                         {"max-failures", required_argument, NULL, 'f'},
                                         {"steps", required_argument, NULL, 't'},
                                         {"pause-between", required_argument, NULL, 'P'},
                                         {"message", required_argument, NULL, 'm'},
                                         {"wait", no_argument, NULL, 'w'},
                                         {"output", required_argument, NULL, 'o'},
                                         {NULL, 0, NULL, 0}};
    json_t *spec = json_object(), *sel = json_object(), *rec = NULL;
    const char *user = NULL;
    char errstr[1024], *end;
    int c, wait = 0, usage = 0, result = RELCTL_USAGE, selectors = 0;

    optind = 0;
    while ((c = getopt_long(argc, argv, "m:o:w", opts, NULL)) != -1) {
        switch (c) {
        case 'S':
            if (strncmp(optarg, "group=", 6) != 0 || !optarg[6]) {
                relctl_usage("--select takes group=G, not '%s'", optarg);
                goto out;
            }
            json_object_set_new(sel, "group", json_string(optarg + 6));
            selectors++;
            break;
        case 's':
            json_object_set_new(sel, "services", wave_names(optarg));
            selectors++;
            break;
        case 'T':
            json_object_set_new(sel, "template", json_string(optarg));
            selectors++;
            break;
        case 'v':
            json_object_set_new(spec, "version", json_string(optarg));
            break;
        case 'R':
            json_object_set_new(spec, "redo", json_true());
            break;
        case 'V':
            json_object_set_new(spec, "template_version", json_string(optarg));
            break;
        case 'e':
            json_object_set_new(spec, "env", json_string(optarg));
            break;
        case 'p': {
            long n = strtol(optarg, &end, 10);
            if (*end || end == optarg) {
                relctl_usage("--max-parallel takes a number, not '%s'", optarg);
                goto out;
            }
            json_object_set_new(spec, "max_parallel", json_integer(n));
            break;
        }
        case 'f':
            json_object_set_new(spec, "max_failures", json_string(optarg));
            break;
        case 't': {
            json_error_t jerr;
            json_t *steps = json_loads(optarg, JSON_DECODE_ANY, &jerr);
            if (!steps) {
                relctl_usage("--steps is not JSON: %s", jerr.text);
                goto out;
            }
            json_object_set_new(spec, "steps", steps);
            break;
        }
        case 'P':
            json_object_set_new(spec, "pause_between", json_string(optarg));
            break;
        case 'm':
            json_object_set_new(spec, "description", json_string(optarg));
            break;
        case 'w':
            wait = 1;
            break;
        case 'o':
            ctl->json = strcmp(optarg, "json") == 0;
            break;
        default:
            goto out;
        }
    }
    if (optind != argc) {
        relctl_usage("wave create: unexpected argument '%s'", argv[optind]);
        goto out;
    }
    if (selectors != 1) {
        relctl_usage("wave create takes one of --select group=G, --services and --template");
        goto out;
    }
    if (!json_object_get(spec, "env") || !json_object_get(spec, "max_parallel")) {
        relctl_usage("wave create needs --env and --max-parallel");
        goto out;
    }
    json_object_set(spec, "select", sel);
    result = RELCTL_FAIL;
    if (!relctl_db(ctl) || wave_user(ctl, &user) != RELCTL_OK)
        goto out;
    if (rf_wave_create(ctl->db, spec, ctl->operator_name, user, &rec, &usage, errstr,
                       sizeof(errstr)) != RF_OK) {
        result = usage ? relctl_usage("%s", errstr) : relctl_fail("%s", errstr);
        goto out;
    }
    if (wait) {
        result = wave_follow(ctl, wstr(rec, "id", ""), NULL);
    } else {
        if (ctl->json)
            relctl_print_json(json_incref(rec));
        else
            printf("%s\n", wstr(rec, "id", ""));
        result = RELCTL_OK;
    }
out:
    json_decref(rec);
    json_decref(sel);
    json_decref(spec);
    return result;
}

/* ID [-m WHY] [--output json] */
static int wave_id_args(relctl_t *ctl, int argc, char **argv, const char **id, const char **why)
{
    static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                         {"message", required_argument, NULL, 'm'},
                                         {NULL, 0, NULL, 0}};
    int c;

    optind = 0;
    while ((c = getopt_long(argc, argv, "o:m:", opts, NULL)) != -1) {
        if (c == 'o')
            ctl->json = strcmp(optarg, "json") == 0;
        else if (c == 'm' && why)
            *why = optarg;
        else
            return RELCTL_USAGE;
    }
    if (optind != argc - 1)
        return relctl_usage("wave %s needs one wave id", argv[0]);
    *id = argv[optind];
    return RELCTL_OK;
}

static int wave_list(relctl_t *ctl, int argc, char **argv)
{
    static const struct option opts[] = {{"env", required_argument, NULL, 'e'},
                                         {"limit", required_argument, NULL, 'n'},
                                         {"output", required_argument, NULL, 'o'},
                                         {NULL, 0, NULL, 0}};
    const char *env = NULL, *user = NULL;
    json_t *list = NULL, *w;
    char errstr[1024];
    int c, limit = 20;
    size_t i;

    optind = 0;
    while ((c = getopt_long(argc, argv, "e:n:o:", opts, NULL)) != -1) {
        if (c == 'e') {
            env = optarg;
        } else if (c == 'n') {
            limit = atoi(optarg);
            if (limit <= 0)
                return relctl_usage("--limit takes a positive number, not '%s'", optarg);
        } else if (c == 'o') {
            ctl->json = strcmp(optarg, "json") == 0;
        } else {
            return RELCTL_USAGE;
        }
    }
    if (optind != argc)
        return relctl_usage("wave list takes no arguments besides its options");
    if (!relctl_db(ctl) || relctl_whoami(ctl, &user) != RELCTL_OK)
        return RELCTL_FAIL;
    if (rf_wave_list(ctl->db, env, limit, user, &list, errstr, sizeof(errstr)) != RF_OK)
        return relctl_fail("%s", errstr);
    if (ctl->json) {
        relctl_print_json(list);
        return RELCTL_OK;
    }
    printf("%-36s  %-9s %-8s %-11s %-19s %-10s %s\n", "ID", "STATUS", "ENV", "ENDED", "CREATED",
           "OPERATOR", "DESCRIPTION");
    json_array_foreach(list, i, w)
    {
        char ended[32];
        snprintf(ended, sizeof(ended), "%lld/%lld", wint(w, "ended"), wint(w, "total"));
        printf("%-36s  %-9s %-8s %-11s %-19.19s %-10s %s\n", wstr(w, "id", ""),
               wstr(w, "status", ""), wstr(w, "env", ""), ended, wstr(w, "created_at", ""),
               wstr(w, "operator", ""), wstr(w, "description", ""));
    }
    json_decref(list);
    return RELCTL_OK;
}

int relctl_cmd_wave(relctl_t *ctl, int argc, char **argv)
{
    const char *verb = argc > 1 ? argv[1] : "";
    const char *id = NULL, *why = NULL, *user = NULL;
    json_t *w = NULL;
    char errstr[1024];
    int result;

    if (strcmp(verb, "create") == 0)
        return wave_create(ctl, argc - 1, argv + 1);
    if (strcmp(verb, "list") == 0)
        return wave_list(ctl, argc - 1, argv + 1);
    if (strcmp(verb, "show") != 0 && strcmp(verb, "watch") != 0 && strcmp(verb, "pause") != 0 &&
        strcmp(verb, "resume") != 0 && strcmp(verb, "abort") != 0)
        return relctl_usage("%s", "usage: relctl " WAVE_USAGE);
    result = wave_id_args(ctl, argc - 1, argv + 1, &id,
                          strcmp(verb, "show") && strcmp(verb, "watch") ? &why : NULL);
    if (result != RELCTL_OK)
        return result;
    if (!relctl_db(ctl))
        return RELCTL_FAIL;
    if (strcmp(verb, "watch") == 0) {
        if (relctl_whoami(ctl, &user) != RELCTL_OK)
            return RELCTL_FAIL;
        return wave_follow(ctl, id, user);
    }
    if (strcmp(verb, "show") == 0) {
        if (relctl_whoami(ctl, &user) != RELCTL_OK)
            return RELCTL_FAIL;
        if (rf_wave_record(ctl->db, id, 1, user, "viewer", &w, errstr, sizeof(errstr)) != RF_OK)
            return relctl_fail("%s", errstr);
        if (ctl->json) {
            relctl_print_json(w);
        } else {
            wave_print(w);
            json_decref(w);
        }
        return RELCTL_OK;
    }
    if (wave_user(ctl, &user) != RELCTL_OK)
        return RELCTL_FAIL;
    if (rf_wave_command(ctl->db, id, verb, ctl->operator_name, why, user, errstr, sizeof(errstr)) !=
        RF_OK)
        return relctl_fail("%s", errstr);
    printf("wave %s %s\n", id,
           strcmp(verb, "pause") == 0    ? "paused"
           : strcmp(verb, "resume") == 0 ? "resumed"
                                         : "aborted");
    return RELCTL_OK;
}
