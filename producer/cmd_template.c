/* relctl template check, and the dry renders template sync reports: templates against the schema. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relctl.h"
#include "rf_buf.h"
#include "rf_kschema.h"
#include "rf_kubeconfig.h"
#include "rf_render.h"

#define CHECK_MAX_ERRORS 50

/* Values of a dry render for each service of env (NULL: every env) using template_id, or
 * service/env alone when service is given: what the render stage would give a release of
 * the service's newest image. Rows: service, env, cluster, values (JSON). */
static const char check_services_sql[] =
    "SELECT s.service, s.env, coalesce(s.cluster, ''), (s.extra || jsonb_build_object("
    " 'service', s.service, 'env', s.env, 'namespace', s.namespace, 'replicas', s.replicas,"
    " 'health_path', s.health_path, 'group', s.group_name, 'port', s.port,"
    " 'version', v.version, 'image', coalesce(s.image_repo, s.service) || ':' || v.version,"
    " 'release_id', '00000000-0000-0000-0000-000000000000', 'operator', $4::text))::text"
    " FROM services s, LATERAL (SELECT coalesce((SELECT i.tag FROM images i WHERE"
    " i.service = s.service ORDER BY i.added_at DESC, i.tag DESC LIMIT 1), (SELECT r.version"
    " FROM releases r WHERE r.service = s.service ORDER BY r.created_at DESC LIMIT 1),"
    " '0.0.0') AS version) v"
    " WHERE ($1::text IS NULL AND s.template_id = $2 OR s.service = $1)"
    " AND ($3::text IS NULL OR s.env = $3) ORDER BY s.service, s.env";

/* The sample values of a check without a service. */
static json_t *sample_values(void)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:i, s:s, s:s}", "service",
                     "example", "env", "test", "namespace", "example", "version", "1.0.0",
                     "image", "registry.example/example:1.0.0", "replicas", 1, "health_path",
                     "/healthz", "group", "default", "port", 8080, "release_id",
                     "00000000-0000-0000-0000-000000000000", "operator", "relctl");
}

typedef struct checker {
    relctl_t *ctl;
    rf_kschema_cache_t *cache;
    char cluster[256];
    rf_kube_t *kube; /* of cluster; NULL: none configured or unreachable */
    int kube_tried;
} checker_t;

/* The schema to check against for cluster: the cluster's when a kubeconfig is configured
 * and it answers, else the built-in one (said on stderr). */
static rf_kschema_t *checker_schema(checker_t *c, const char *cluster)
{
    char errstr[1024];
    rf_kubeconfig_t *cfg;
    rf_kschema_t *s = NULL;

    if (!c->kube_tried || strcmp(c->cluster, cluster) != 0) {
        rf_kube_destroy(c->kube);
        c->kube = NULL;
        c->kube_tried = 1;
        snprintf(c->cluster, sizeof(c->cluster), "%s", cluster);
        if (c->ctl->conf.kubeconfig) {
            cfg = rf_kubeconfig_load(c->ctl->conf.kubeconfig,
                                     *cluster ? cluster : c->ctl->conf.kube_context, errstr,
                                     sizeof(errstr));
            c->kube = cfg ? rf_kube_new(cfg, errstr, sizeof(errstr)) : NULL;
            rf_kubeconfig_destroy(cfg);
            if (c->kube) {
                rf_kube_set_retry(c->kube, 2, 100, 1000);
                rf_kube_set_timeouts(c->kube, 2000, 10000);
            } else {
                fprintf(stderr, "relctl: %s; checking against the built-in schema\n", errstr);
            }
        }
    }
    if (rf_kschema_cache_get(c->cache, cluster, c->kube, &s, errstr, sizeof(errstr)) == RF_OK)
        return s;
    fprintf(stderr,
            "relctl: cannot read the schema of cluster '%s': %s; checking against the built-in"
            " schema\n",
            *cluster ? cluster : "(default)", errstr);
    rf_kube_destroy(c->kube);
    c->kube = NULL;
    if (rf_kschema_cache_get(c->cache, cluster, NULL, &s, errstr, sizeof(errstr)) != RF_OK)
        return NULL;
    return s;
}

/* One dry render of tpl with values, checked. Returns the check as JSON
 * {service, env, valid, schema, errors[]} (service NULL: the sample values). */
static json_t *check_one(checker_t *c, const rf_render_template_t *tpl, const char *service,
                         const char *env, const char *cluster, const json_t *values)
{
    char errstr[1024];
    json_t *manifests = NULL, *errors = json_array();
    json_t *out = json_pack("{s:s?, s:s?}", "service", service, "env", env);
    rf_kschema_t *s;
    rf_err_t err;

    if (!errors || !out)
        abort();
    err = rf_render_exec(tpl, values, &manifests, errstr, sizeof(errstr));
    if (err != RF_OK) {
        json_array_append_new(errors, json_pack("{s:s, s:s}", "field", "", "message", errstr));
        goto done;
    }
    s = checker_schema(c, cluster);
    if (!s) {
        json_array_append_new(errors, json_pack("{s:s, s:s}", "field", "", "message",
                                                "no schema to check against"));
        goto done;
    }
    json_object_set_new(out, "schema", json_string(rf_kschema_describe(s)));
    err = rf_kschema_validate_render(s, c->kube, tpl, values, manifests, errors, CHECK_MAX_ERRORS,
                                     errstr, sizeof(errstr));
    if (err == RF_ERR_RETRY) {
        /* a document the cluster did not give: the built-in schema then */
        s = NULL;
        rf_kschema_cache_get(c->cache, cluster, NULL, &s, errstr, sizeof(errstr));
        if (s) {
            json_object_set_new(out, "schema", json_string(rf_kschema_describe(s)));
            rf_kschema_validate_render(s, NULL, tpl, values, manifests, errors, CHECK_MAX_ERRORS,
                                       errstr, sizeof(errstr));
        }
    }
done:
    json_object_set_new(out, "valid", json_boolean(json_array_size(errors) == 0));
    json_object_set_new(out, "errors", errors);
    json_decref(manifests);
    return out;
}

static void print_check(const char *id, const json_t *chk)
{
    const char *service = json_string_value(json_object_get(chk, "service"));
    const char *env = json_string_value(json_object_get(chk, "env"));
    const json_t *errors = json_object_get(chk, "errors");
    char who[300], line[1400];
    const json_t *e;
    size_t i;

    if (service)
        snprintf(who, sizeof(who), " for %s in %s", service, env);
    else
        snprintf(who, sizeof(who), " with sample values");
    if (json_array_size(errors) == 0) {
        printf("valid     %s%s\n", id, who);
        return;
    }
    printf("invalid   %s%s (%zu error%s%s%s):\n", id, who, json_array_size(errors),
           json_array_size(errors) == 1 ? "" : "s", json_object_get(chk, "schema") ? ", against " : "",
           json_object_get(chk, "schema") ? json_string_value(json_object_get(chk, "schema")) : "");
    json_array_foreach(errors, i, e) {
        if (json_object_get(e, "object")) {
            rf_kschema_error_text(e, line, sizeof(line));
            printf("          %s\n", line);
        } else {
            printf("          %s\n", json_string_value(json_object_get(e, "message")));
        }
    }
}

int relctl_template_verify(relctl_t *ctl, rf_db_t *db, const char *id, const char *body,
                           size_t len, const char *service, const char *env, int print,
                           int sample, json_t *checks)
{
    char errstr[1024];
    checker_t c;
    rf_render_template_t *tpl;
    PGresult *res = NULL;
    const char *params[4] = {service, id, env, ctl->operator_name ? ctl->operator_name : "relctl"};
    int invalid = 0;

    memset(&c, 0, sizeof(c));
    c.ctl = ctl;
    tpl = rf_render_compile(id, body, len, errstr, sizeof(errstr));
    if (!tpl) {
        json_t *chk = json_pack("{s:b, s:[{s:s, s:s}]}", "valid", 0, "errors", "field", "",
                                "message", errstr);
        if (print)
            print_check(id, chk);
        json_array_append_new(checks, chk);
        return 1;
    }
    c.cache = rf_kschema_cache_new(60000);
    if (db && rf_db_exec(db, check_services_sql, 4, params, &res, errstr, sizeof(errstr)) != RF_OK) {
        fprintf(stderr, "relctl: %s\n", errstr);
        invalid = -1;
        goto out;
    }
    if (service && db && PQntuples(res) == 0) {
        fprintf(stderr, "relctl: unknown service '%s'%s%s\n", service, env ? " in env " : "",
                env ? env : "");
        invalid = -1;
        goto out;
    }
    if (sample && (!res || PQntuples(res) == 0)) {
        json_t *values = sample_values();
        char cluster[256];
        json_t *chk;
        rf_config_cluster(&ctl->conf, env ? env : "test", NULL, cluster, sizeof(cluster));
        chk = check_one(&c, tpl, NULL, NULL, cluster, values);
        invalid += !json_is_true(json_object_get(chk, "valid"));
        if (print)
            print_check(id, chk);
        json_array_append_new(checks, chk);
        json_decref(values);
    }
    for (int i = 0; res && i < PQntuples(res); i++) {
        json_t *values = json_loads(PQgetvalue(res, i, 3), 0, NULL);
        char cluster[256];
        json_t *chk;
        rf_config_cluster(&ctl->conf, PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), cluster,
                          sizeof(cluster));
        chk = check_one(&c, tpl, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), cluster, values);
        invalid += !json_is_true(json_object_get(chk, "valid"));
        if (print)
            print_check(id, chk);
        json_array_append_new(checks, chk);
        json_decref(values);
    }
out:
    PQclear(res);
    rf_kube_destroy(c.kube);
    rf_kschema_cache_destroy(c.cache);
    rf_render_template_destroy(tpl);
    return invalid;
}

/* relctl template check FILE [--service S] [--env E] [--output json] */
int relctl_template_check(relctl_t *ctl, int argc, char **argv)
{
    const char *file = NULL, *service = NULL, *env = NULL, *slash, *dot;
    char id[256];
    rf_buf_t body;
    rf_db_t *db = NULL;
    json_t *checks = json_array();
    int invalid, result;
    FILE *f;

    if (!checks)
        abort();
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--service") == 0 && i + 1 < argc)
            service = argv[++i];
        else if (strcmp(argv[i], "--env") == 0 && i + 1 < argc)
            env = argv[++i];
        else if (strcmp(argv[i], "--output") == 0 && i + 1 < argc)
            ctl->json = strcmp(argv[++i], "json") == 0;
        else if (argv[i][0] != '-' && !file)
            file = argv[i];
        else
            return relctl_usage("usage: relctl template check FILE [--service S] [--env E]"
                                " [--output json]");
    }
    if (!file)
        return relctl_usage("usage: relctl template check FILE [--service S] [--env E]"
                            " [--output json]");
    slash = strrchr(file, '/');
    slash = slash ? slash + 1 : file;
    dot = strrchr(slash, '.');
    snprintf(id, sizeof(id), "%.*s", dot ? (int)(dot - slash) : (int)strlen(slash), slash);
    rf_buf_init(&body, RF_RENDER_MAX_BYTES);
    f = fopen(file, "rb");
    if (!f) {
        rf_buf_release(&body);
        json_decref(checks);
        return relctl_fail("cannot read template '%s'", file);
    }
    for (;;) {
        char chunk[8192];
        size_t n = fread(chunk, 1, sizeof(chunk), f);
        if (n == 0)
            break;
        if (rf_buf_add(&body, chunk, n) != 0) {
            fclose(f);
            rf_buf_release(&body);
            json_decref(checks);
            return relctl_fail("template '%s' is larger than %d bytes", file,
                               RF_RENDER_MAX_BYTES);
        }
    }
    fclose(f);
    /* the services' values need the database; without one, sample values */
    if (service || ctl->conf.pg_dsn) {
        db = relctl_db(ctl);
        if (!db) {
            rf_buf_release(&body);
            json_decref(checks);
            return RELCTL_FAIL;
        }
    }
    invalid = relctl_template_verify(ctl, db, id, body.len ? body.data : "", body.len, service,
                                     env, !ctl->json, 1, checks);
    rf_buf_release(&body);
    if (invalid < 0) {
        json_decref(checks);
        return RELCTL_FAIL;
    }
    result = invalid ? RELCTL_FAIL : RELCTL_OK;
    if (ctl->json)
        relctl_print_json(json_pack("{s:s, s:b, s:o}", "template", id, "valid", invalid == 0,
                                    "checks", checks));
    else
        json_decref(checks);
    return result;
}
