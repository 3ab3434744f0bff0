/* Pod behaviour rules: what a container does, chosen by a glob on its image, and its state at a given age. */
#include "ks_rules.h"
#include "ks_patch.h"
#include "rf_buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RULES_MAX_BYTES (1 << 20)

static void rule_release(ks_rule_t *r)
{
    free(r->image);
    free(r->waiting);
    for (size_t i = 0; i < r->nlogs; i++)
        free(r->logs[i]);
    free(r->logs);
}

void ks_rules_destroy(ks_rules_t *rules)
{
    if (!rules)
        return;
    for (size_t i = 0; i < rules->n; i++)
        rule_release(&rules->rules[i]);
    free(rules->rules);
    free(rules);
}

static int rule_parse(const json_t *j, size_t idx, ks_rule_t *r, char *errstr, size_t errstr_size)
{
    const char *key;
    json_t *v;

    r->ready_after_ms = 500;
    r->crash_after_ms = -1;
    json_object_foreach((json_t *)j, key, v) {
        if (strcmp(key, "image") == 0 && json_is_string(v)) {
            r->image = strdup(json_string_value(v));
        } else if (strcmp(key, "readyAfterMs") == 0 && json_is_integer(v) &&
                   json_integer_value(v) >= 0) {
            r->ready_after_ms = json_integer_value(v);
        } else if (strcmp(key, "crashAfterMs") == 0 && json_is_integer(v) &&
                   json_integer_value(v) >= 0) {
            r->crash_after_ms = json_integer_value(v);
        } else if (strcmp(key, "waiting") == 0 && json_is_string(v)) {
            r->waiting = strdup(json_string_value(v));
        } else if (strcmp(key, "logs") == 0 && json_is_array(v)) {
            size_t i;
            json_t *line;
            r->logs = calloc(json_array_size(v) + 1, sizeof(*r->logs));
            json_array_foreach(v, i, line) {
                if (!json_is_string(line)) {
                    snprintf(errstr, errstr_size, "rule %zu: 'logs' must be a list of strings", idx);
                    return -1;
                }
                r->logs[r->nlogs++] = strdup(json_string_value(line));
            }
        } else {
            snprintf(errstr, errstr_size, "rule %zu: unknown key or bad value for '%s'", idx, key);
            return -1;
        }
    }
    if (!r->image) {
        snprintf(errstr, errstr_size, "rule %zu: 'image' is required", idx);
        return -1;
    }
    if (r->waiting && strcmp(r->waiting, "CrashLoopBackOff") == 0) {
        /* a container that crashes as soon as it starts */
        free(r->waiting);
        r->waiting = NULL;
        if (r->crash_after_ms < 0)
            r->crash_after_ms = 0;
        r->ready_after_ms = r->crash_after_ms + 1;
    }
    return 0;
}

static void rules_add_default(ks_rules_t *rules)
{
    ks_rule_t *r = &rules->rules[rules->n++];

    memset(r, 0, sizeof(*r));
    r->image = strdup("*");
    r->ready_after_ms = 500;
    r->crash_after_ms = -1;
    r->logs = calloc(2, sizeof(*r->logs));
    r->logs[0] = strdup("listening on :8080");
    r->nlogs = 1;
}

ks_rules_t *ks_rules_load(const char *path, char *errstr, size_t errstr_size)
{
    ks_rules_t *rules = calloc(1, sizeof(*rules));
    rf_buf_t b = RF_BUF_INIT;
    json_t *doc = NULL, *list, *j;
    FILE *f = NULL;
    char chunk[4096], perr[256];
    size_t n, i;

    rf_buf_init(&b, RULES_MAX_BYTES);
    if (!path) {
        rules->rules = calloc(1, sizeof(ks_rule_t));
        rules_add_default(rules);
        goto cleanup;
    }
    f = fopen(path, "r");
    if (!f) {
        snprintf(errstr, errstr_size, "cannot open rules file '%s': %s", path, strerror(errno));
        goto fail;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (rf_buf_add(&b, chunk, n) != 0) {
            snprintf(errstr, errstr_size, "rules file '%s' is larger than 1 MiB", path);
            goto fail;
        }
    }
    doc = ks_yaml_parse(rf_buf_str(&b), b.len, perr, sizeof(perr));
    if (!doc) {
        snprintf(errstr, errstr_size, "cannot parse rules file '%s': %s", path, perr);
        goto fail;
    }
    list = json_object_get(doc, "rules");
    if (!json_is_array(list) || json_object_size(doc) != 1) {
        snprintf(errstr, errstr_size, "rules file '%s' must hold one key 'rules' with a list", path);
        goto fail;
    }
    rules->rules = calloc(json_array_size(list) + 1, sizeof(ks_rule_t));
    json_array_foreach(list, i, j) {
        char rerr[200];
        if (!json_is_object(j) || rule_parse(j, i, &rules->rules[rules->n], rerr, sizeof(rerr))) {
            rules->n++;
            snprintf(errstr, errstr_size, "bad rules file '%s': %s", path,
                     json_is_object(j) ? rerr : "a rule must be a mapping");
            goto fail;
        }
        rules->n++;
    }
    rules_add_default(rules);
cleanup:
    if (f)
        fclose(f);
    json_decref(doc);
    rf_buf_release(&b);
    return rules;
fail:
    ks_rules_destroy(rules);
    rules = NULL;
    goto cleanup;
}

const ks_rule_t *ks_rules_match(const ks_rules_t *rules, const char *image)
{
    for (size_t i = 0; i < rules->n; i++)
        if (ks_glob_match(rules->rules[i].image, image ? image : ""))
            return &rules->rules[i];
    return &rules->rules[rules->n - 1];
}

/* Kubelet's crash back-off: 10 s doubling up to 5 minutes. */
static int64_t backoff_for(int restarts)
{
    int64_t b = 10000;

    for (int i = 1; i < restarts && b < 300000; i++)
        b *= 2;
    return b < 300000 ? b : 300000;
}

void ks_rules_state(const ks_rule_t *rule, int64_t age, ks_cstate_t *out)
{
    int64_t t = KS_CONTAINER_CREATE_MS;

    memset(out, 0, sizeof(*out));
    out->next_change = -1;
    if (rule->waiting) {
        out->waiting = rule->waiting;
        return;
    }
    if (rule->ready_after_ms < t)
        t = rule->ready_after_ms;
    if (age < t) {
        out->waiting = "ContainerCreating";
        out->next_change = t;
        return;
    }
    for (;;) {
        int64_t ready_at = t + (rule->ready_after_ms > KS_CONTAINER_CREATE_MS
                                    ? rule->ready_after_ms - KS_CONTAINER_CREATE_MS
                                    : 0);
        int64_t crash_at = rule->crash_after_ms >= 0 ? t + rule->crash_after_ms : -1;
        int can_ready = crash_at < 0 || ready_at < crash_at;
        if (crash_at < 0 || age < crash_at) {
            out->running = 1;
            out->started_at = t;
            if (can_ready && age >= ready_at) {
                out->ready = 1;
                out->ready_since = ready_at;
                out->next_change = crash_at;
            } else {
                out->next_change = can_ready ? ready_at : crash_at;
            }
            return;
        }
        out->restarts++;
        out->term_started_at = t;
        out->term_finished_at = crash_at;
        out->backoff_ms = backoff_for(out->restarts);
        t = crash_at + out->backoff_ms;
        if (age < t) {
            out->waiting = "CrashLoopBackOff";
            out->next_change = t;
            return;
        }
    }
}
