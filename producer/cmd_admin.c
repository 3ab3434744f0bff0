/* relctl verbs about configuration: service, template, image, db. */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relctl.h"
#include "rf_buf.h"
#include "rf_hash.h"
#include "rf_kschema.h"
#include "rf_registry.h"
#include "rf_render.h"
#include "rf_service.h"

static int relctl_env_arg(int argc, char **argv, int *argi, const char **env, int *json)
{
    for (; *argi < argc; (*argi)++) {
        if (strcmp(argv[*argi], "--env") == 0 && *argi + 1 < argc)
            *env = argv[++(*argi)];
        else if (strcmp(argv[*argi], "--output") == 0 && *argi + 1 < argc)
            *json = strcmp(argv[++(*argi)], "json") == 0;
        else
            break;
    }
    return 0;
}

static int service_set(relctl_t *ctl, const char *service, const char *env, int argc,
                       char **argv)
{
    rf_db_t *db = relctl_db(ctl);
    char errstr[1024];
    const char *template_id = NULL;
    int changed = 0, created = 0;
    rf_err_t err;

    if (!db)
        return RELCTL_FAIL;
    if (argc == 0)
        return relctl_usage("service set needs KEY=VALUE pairs");
    if (relctl_require(ctl, "admin", service, env) != RELCTL_OK)
        return RELCTL_FAIL;
    for (int i = 0; i < argc; i++) {
        if (!strchr(argv[i], '=') || argv[i][0] == '=')
            return relctl_usage("expected KEY=VALUE, got '%s'", argv[i]);
        if (strncmp(argv[i], "template=", 9) == 0)
            template_id = argv[i] + 9;
    }
    if (rf_db_begin(db, errstr, sizeof(errstr)) != RF_OK)
        return relctl_fail("%s", errstr);
    err = rf_service_lock(db, service, env, template_id, ctl->operator_name, &created, errstr,
                          sizeof(errstr));
    if (err == RF_ERR_NOTFOUND) {
        rf_db_rollback(db);
        return relctl_usage("new service '%s' in env '%s' needs template=ID", service, env);
    }
    if (err != RF_OK)
        goto fail;
    if (created)
        printf("created service %s in env %s\n", service, env);
    for (int i = 0; i < argc; i++) {
        char *key = strdup(argv[i]);
        char *value = strchr(key, '=');
        rf_service_value_t v;
        rf_service_change_t change;
        int result = RELCTL_OK;

        *value++ = '\0';
        if (rf_service_check(key, value, -1, &v, errstr, sizeof(errstr)) != RF_OK) {
            rf_db_rollback(db);
            relctl_usage("%s", errstr);
            free(key);
            return RELCTL_USAGE;
        }
        err = rf_service_set(db, service, env, ctl->operator_name, &v, &change, errstr,
                             sizeof(errstr));
        if (err != RF_OK) {
            rf_db_rollback(db);
            if (change.write_failed)
                result = relctl_fail("cannot set '%s' to '%s': %s", key, v.text, errstr);
            else
                result = relctl_fail("%s", errstr);
        } else if (change.changed) {
            printf("%s: %s -> %s\n", key, change.old_value ? change.old_value : "(unset)",
                   change.new_value ? change.new_value : "(unset)");
            changed++;
        }
        rf_service_change_release(&change);
        free(key);
        if (result != RELCTL_OK)
            return result;
    }
    if (rf_db_commit(db, errstr, sizeof(errstr)) != RF_OK)
        return relctl_fail("%s", errstr);
    if (!changed)
        printf("nothing changed\n");
    return RELCTL_OK;
fail:
    rf_db_rollback(db);
    return relctl_fail("%s", errstr);
}

static int service_query(relctl_t *ctl, const char *sql, const char *service, const char *env,
                         json_t **out)
{
    rf_db_t *db = relctl_db(ctl);
    const char *p[2] = {service, env};
    PGresult *res = NULL;
    char errstr[1024];

    if (!db)
        return RELCTL_FAIL;
    if (rf_db_exec(db, sql, 2, p, &res, errstr, sizeof(errstr)) != RF_OK)
        return relctl_fail("%s", errstr);
    if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0)) {
        PQclear(res);
        return relctl_fail("no service '%s' in env '%s'", service, env);
    }
    *out = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    PQclear(res);
    return RELCTL_OK;
}

int relctl_cmd_service(relctl_t *ctl, int argc, char **argv)
{
    const char *sub, *service, *env = NULL;
    int argi = 3, result;
    json_t *out = NULL;

    if (argc < 3)
        return relctl_usage("usage: relctl service set|show|history SERVICE --env ENV ...");
    sub = argv[1];
    service = argv[2];
    relctl_env_arg(argc, argv, &argi, &env, &ctl->json);
    if (!env)
        return relctl_usage("service %s needs --env", sub);
    if (strcmp(sub, "set") == 0)
        return service_set(ctl, service, env, argc - argi, argv + argi);
    if (argi != argc)
        return relctl_usage("unexpected argument '%s'", argv[argi]);
    if (relctl_require(ctl, "viewer", service, env) != RELCTL_OK)
        return RELCTL_FAIL;
    if (strcmp(sub, "show") == 0) {
        result = service_query(
            ctl,
            "SELECT " RF_SERVICE_JSON_SQL " FROM services WHERE service = $1 AND env = $2",
            service, env, &out);
        if (result != RELCTL_OK)
            return result;
        if (ctl->json) {
            relctl_print_json(out);
        } else {
            const char *k;
            json_t *v;
            json_object_foreach(out, k, v) {
                char *text = json_is_string(v) ? NULL : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                printf("%-12s %s\n", k, text ? text : json_string_value(v));
                free(text);
            }
            json_decref(out);
        }
        return RELCTL_OK;
    }
    if (strcmp(sub, "history") == 0) {
        size_t i;
        json_t *h;
        result = service_query(
            ctl,
            "SELECT coalesce(jsonb_agg(jsonb_build_object('at', relfleet_iso(changed_at), 'by',"
            " changed_by, 'key', key, 'old', old_value, 'new', new_value) ORDER BY id), '[]')"
            " FROM service_history WHERE service = $1 AND env = $2",
            service, env, &out);
        if (result != RELCTL_OK)
            return result;
        if (ctl->json) {
            relctl_print_json(out);
            return RELCTL_OK;
        }
        json_array_foreach(out, i, h) printf(
            "%s  %-10s %-12s %s -> %s\n", json_string_value(json_object_get(h, "at")),
            json_string_value(json_object_get(h, "by")),
            json_string_value(json_object_get(h, "key")),
            json_string_value(json_object_get(h, "old")) ? json_string_value(json_object_get(h, "old")) : "(unset)",
            json_string_value(json_object_get(h, "new")) ? json_string_value(json_object_get(h, "new")) : "(unset)");
        json_decref(out);
        return RELCTL_OK;
    }
    return relctl_usage("unknown service verb '%s'", sub);
}

static int read_file(const char *path, rf_buf_t *buf)
{
    char chunk[8192];
    size_t n;
    FILE *f = fopen(path, "rb");

    if (!f)
        return -1;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (rf_buf_add(buf, chunk, n) != 0) {
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    return 0;
}

/* Loads one template file; prints what happened; returns 0, or 1 for a broken file. */
static size_t template_fetch_write(char *buf, size_t size, size_t n, void *userdata)
{
    return rf_buf_add(userdata, buf, size * n) == 0 ? size * n : 0;
}

/* Downloads a template (http or https, at most 1 MiB) into body; 0 or -1 with errstr. */
static int template_fetch(const char *url, rf_buf_t *body, char *errstr, size_t errstr_size)
{
    CURL *curl = curl_easy_init();
    char curl_err[CURL_ERROR_SIZE] = "";
    long status = 0;
    CURLcode rc;

    if (!curl) {
        snprintf(errstr, errstr_size, "cannot create a curl handle");
        return -1;
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, template_fetch_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, body);
    rc = curl_easy_perform(curl);
    if (rc == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    if (rc != CURLE_OK) {
        snprintf(errstr, errstr_size, "cannot download '%s': %s", url,
                 rc == CURLE_WRITE_ERROR ? "larger than 1 MiB"
                                         : (*curl_err ? curl_err : curl_easy_strerror(rc)));
        return -1;
    }
    if (status != 200) {
        snprintf(errstr, errstr_size, "cannot download '%s': HTTP status %ld", url, status);
        return -1;
    }
    return 0;
}

/* One template: from dir/name (id = name without .yaml), or with url from there (id =
 * name). Prints what happened; returns 0, or 1 for a broken one. */
static int template_sync_file(relctl_t *ctl, rf_db_t *db, const char *dir, const char *name,
                              const char *url, const json_t *known)
{
    char path[4096], id[256], version[65], errstr[1024];
    const char *dot = strrchr(name, '.');
    const char *what = url ? "url" : "file";
    rf_buf_t body;
    json_t *names = NULL;
    PGresult *res = NULL;
    int result = 1;
    size_t i;
    json_t *n;

    if (url) {
        snprintf(path, sizeof(path), "%s", url);
        snprintf(id, sizeof(id), "%s", name);
    } else {
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        snprintf(id, sizeof(id), "%.*s", (int)(dot - name), name);
    }
    rf_buf_init(&body, 1 << 20);
    if (url && template_fetch(url, &body, errstr, sizeof(errstr)) != 0) {
        printf("broken    %s: %s\n", id, errstr);
        goto out;
    }
    if (!url && read_file(path, &body) != 0) {
        printf("broken    %s: cannot read '%s' (or larger than 1 MiB)\n", id, path);
        goto out;
    }
    if (rf_render_placeholders(id, rf_buf_str(&body), body.len, &names, errstr,
                               sizeof(errstr)) != RF_OK) {
        printf("broken    %s: %s (%s %s)\n", id, errstr, what, path);
        goto out;
    }
    json_array_foreach(names, i, n) {
        const char *pn = json_string_value(n);
        if (!rf_render_is_standard_value(pn) && !json_object_get(known, pn)) {
            printf("broken    %s: placeholder '%s' is not a known value (%s %s)\n", id, pn,
                   what, path);
            goto out;
        }
    }
    rf_hash_sha256_hex(body.data, body.len, version);
    {
        const char *p[4] = {id, version, path, rf_buf_str(&body)};
        if (rf_db_exec(db, "SELECT version FROM template_heads WHERE id = $1", 1, p, &res, errstr,
                       sizeof(errstr)) != RF_OK) {
            printf("error     %s: %s\n", id, errstr);
            goto out;
        }
        if (PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), version) == 0) {
            printf("unchanged %s %.12s\n", id, version);
            result = 0;
            goto verify;
        }
        printf("%-9s %s %.12s\n", PQntuples(res) == 1 ? "changed" : "new", id, version);
        if (rf_db_exec(db,
                       "WITH t AS (INSERT INTO templates (id, version, source, body)"
                       " VALUES ($1, $2, $3, $4) ON CONFLICT (id, version) DO UPDATE SET"
                       " synced_at = now() RETURNING id)"
                       " INSERT INTO template_heads (id, version) SELECT $1, $2 FROM t"
                       " ON CONFLICT (id) DO UPDATE SET version = $2, updated_at = now()",
                       4, p, NULL, errstr, sizeof(errstr)) != RF_OK) {
            printf("error     %s: %s\n", id, errstr);
            goto out;
        }
    }
    result = 0;
verify:
    /* Stored; now a dry render for each service that uses it, against its cluster's schema:
     * what would be rejected at render is reported now (docs/design.md). The exit status
     * stays 0 (the template is stored and may serve other services); `template check` is
     * the gate that fails. */
    {
        json_t *checks = json_array();
        if (relctl_template_verify(ctl, db, id, rf_buf_str(&body), body.len, NULL, NULL, 0, 0,
                                   checks) != 0) {
            size_t k;
            json_t *chk;
            json_array_foreach(checks, k, chk) {
                const json_t *errors = json_object_get(chk, "errors");
                const json_t *e;
                size_t j;
                char line[1400];
                if (json_is_true(json_object_get(chk, "valid")) ||
                    !json_is_string(json_object_get(chk, "service")))
                    continue;
                printf("invalid   %s for %s in %s (%zu error%s):\n", id,
                       json_string_value(json_object_get(chk, "service")),
                       json_string_value(json_object_get(chk, "env")), json_array_size(errors),
                       json_array_size(errors) == 1 ? "" : "s");
                json_array_foreach(errors, j, e) {
                    if (json_object_get(e, "object"))
                        rf_kschema_error_text(e, line, sizeof(line));
                    else
                        snprintf(line, sizeof(line), "%s",
                                 json_string_value(json_object_get(e, "message")));
                    printf("          %s\n", line);
                }
            }
        }
        json_decref(checks);
    }
out:
    PQclear(res);
    json_decref(names);
    rf_buf_release(&body);
    return result;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int relctl_cmd_template(relctl_t *ctl, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "check") == 0)
        return relctl_template_check(ctl, argc - 1, argv + 1);

    rf_db_t *db;
    DIR *d;
    struct dirent *e;
    char *names[4096];
    const char *urls[4096];
    size_t count = 0;
    int url_form;
    int broken = 0;
    json_t *known = NULL;
    PGresult *res = NULL;
    char errstr[1024];

    if (argc == 2 && strcmp(argv[1], "list") == 0) {
        db = relctl_db(ctl);
        if (!db)
            return RELCTL_FAIL;
        if (rf_db_exec(db,
                       "SELECT h.id, h.version, relfleet_iso(h.updated_at), t.source FROM"
                       " template_heads h JOIN templates t USING (id, version) ORDER BY h.id",
                       0, NULL, &res, errstr, sizeof(errstr)) != RF_OK)
            return relctl_fail("%s", errstr);
        for (int i = 0; i < PQntuples(res); i++)
            printf("%-20s %.12s  %s  %s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                   PQgetvalue(res, i, 2), PQgetvalue(res, i, 3));
        PQclear(res);
        return RELCTL_OK;
    }
    /* template sync DIR, or template sync ID=URL [ID=URL ...] */
    url_form = argc >= 3 && strchr(argv[2], '=') != NULL;
    if (argc < 3 || strcmp(argv[1], "sync") != 0 || (!url_form && argc != 3) ||
        argc - 2 > (int)(sizeof(names) / sizeof(names[0])))
        return relctl_usage("usage: relctl template sync DIR | relctl template sync ID=URL ..."
                            " | relctl template list | relctl template check FILE"
                            " [--service S] [--env E]");
    for (int a = 2; url_form && a < argc; a++) {
        const char *eq = strchr(argv[a], '=');
        if (!eq || eq == argv[a] || (strncmp(eq + 1, "http://", 7) != 0 &&
                                     strncmp(eq + 1, "https://", 8) != 0))
            return relctl_usage("expected ID=URL (http or https), got '%s'", argv[a]);
    }
    db = relctl_db(ctl);
    if (!db)
        return RELCTL_FAIL;
    if (relctl_require(ctl, "admin", "*", "*") != RELCTL_OK)
        return RELCTL_FAIL;
    if (url_form) {
        for (int a = 2; a < argc; a++) {
            names[count] = strndup(argv[a], (size_t)(strchr(argv[a], '=') - argv[a]));
            urls[count++] = strchr(argv[a], '=') + 1;
        }
    } else {
        d = opendir(argv[2]);
        if (!d)
            return relctl_fail("cannot open template folder '%s': %s", argv[2], strerror(errno));
        while ((e = readdir(d)) != NULL && count < sizeof(names) / sizeof(names[0])) {
            const char *dot = strrchr(e->d_name, '.');
            if (e->d_name[0] == '.' || !dot ||
                (strcmp(dot, ".yaml") != 0 && strcmp(dot, ".yml") != 0))
                continue;
            names[count++] = strdup(e->d_name);
        }
        closedir(d);
        qsort(names, count, sizeof(names[0]), name_cmp);
    }
    /* Values a template may use beyond the standard ones: the services' own keys. */
    if (rf_db_exec(db,
                   "SELECT coalesce(jsonb_object_agg(k, true), '{}') FROM (SELECT DISTINCT"
                   " jsonb_object_keys(extra) AS k FROM services) x",
                   0, NULL, &res, errstr, sizeof(errstr)) == RF_OK)
        known = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    PQclear(res);
    for (size_t i = 0; i < count; i++) {
        broken += template_sync_file(ctl, db, argv[2], names[i], url_form ? urls[i] : NULL,
                                     known);
        free(names[i]);
    }
    json_decref(known);
    if (count == 0)
        return relctl_fail("no *.yaml or *.yml templates in '%s'", argv[2]);
    return broken ? RELCTL_FAIL : RELCTL_OK;
}

#define IMAGE_REGISTRY_TIMEOUT_MS 30000

/* Adds to list the tags that the service's registries hold (service values `registry`,
 * the API's URL, and `registry_secret`, naming the secret `user:password`): a recorded
 * tag found there gets "registry", a tag only there is added with it. */
static int image_registry_merge(relctl_t *ctl, rf_db_t *db, const char *service, json_t *list)
{
    const char *p[1] = {service};
    PGresult *res = NULL;
    char errstr[1024], repo[512];
    int result = RELCTL_OK;

    if (rf_db_exec(db,
                   "SELECT DISTINCT extra ->> 'registry', extra ->> 'registry_secret',"
                   " coalesce(image_repo, service) FROM services WHERE service = $1"
                   " AND extra ? 'registry' ORDER BY 1",
                   1, p, &res, errstr, sizeof(errstr)) != RF_OK)
        return relctl_fail("%s", errstr);
    for (int r = 0; r < PQntuples(res); r++) {
        const char *url = PQgetvalue(res, r, 0);
        char *cred = PQgetisnull(res, r, 1) ? NULL
                                            : rf_config_secret(&ctl->conf, PQgetvalue(res, r, 1));
        char *pass = cred ? strchr(cred, ':') : NULL;
        json_t *tags = NULL, *t, *im;
        size_t i, j;

        if (pass)
            *pass++ = '\0';
        if (!PQgetisnull(res, r, 1) && !pass) {
            result = relctl_fail("registry '%s': secret '%s' is missing or not user:password",
                                 url, PQgetvalue(res, r, 1));
            free(cred);
            continue;
        }
        rf_registry_repository(PQgetvalue(res, r, 2), repo, sizeof(repo));
        if (rf_registry_tags(url, repo, cred, pass, IMAGE_REGISTRY_TIMEOUT_MS, &tags, errstr,
                             sizeof(errstr)) != RF_OK) {
            result = relctl_fail("cannot list the tags of '%s': %s", repo, errstr);
            free(cred);
            continue;
        }
        free(cred);
        json_array_foreach(tags, i, t) {
            json_t *found = NULL;
            json_array_foreach(list, j, im) {
                if (json_equal(json_object_get(im, "tag"), t))
                    found = im;
            }
            if (!found) {
                found = json_pack("{s:O, s:n, s:n, s:n}", "tag", t, "digest", "added_at",
                                  "added_by");
                json_array_append_new(list, found);
            }
            json_object_set_new(found, "registry", json_string(url));
        }
        json_decref(tags);
    }
    PQclear(res);
    return result;
}

int relctl_cmd_image(relctl_t *ctl, int argc, char **argv)
{
    rf_db_t *db;
    char errstr[1024];
    const char *digest = NULL;
    int json = 0;

    if (argc >= 4 && strcmp(argv[1], "add") == 0) {
        for (int i = 4; i < argc; i++) {
            if (strcmp(argv[i], "--digest") == 0 && i + 1 < argc)
                digest = argv[++i];
            else
                return relctl_usage("image add: unexpected argument '%s'", argv[i]);
        }
        db = relctl_db(ctl);
        if (!db)
            return RELCTL_FAIL;
        if (relctl_require(ctl, "releaser", argv[2], NULL) != RELCTL_OK)
            return RELCTL_FAIL;
        if (rf_service_image_add(db, argv[2], argv[3], digest, ctl->operator_name, errstr,
                                 sizeof(errstr)) != RF_OK)
            return relctl_fail("cannot add image %s:%s: %s", argv[2], argv[3], errstr);
        printf("added %s:%s\n", argv[2], argv[3]);
        return RELCTL_OK;
    }
    if (argc >= 3 && strcmp(argv[1], "list") == 0) {
        int argi = 3;
        const char *unused_env = NULL;
        relctl_env_arg(argc, argv, &argi, &unused_env, &json);
        if (argi != argc)
            return relctl_usage("image list: unexpected argument '%s'", argv[argi]);
        db = relctl_db(ctl);
        if (!db)
            return RELCTL_FAIL;
        if (relctl_require(ctl, "viewer", argv[2], NULL) != RELCTL_OK)
            return RELCTL_FAIL;
        {
            json_t *list = NULL;
            size_t i;
            json_t *im;
            int result;
            if (rf_service_images(db, argv[2], &list, errstr, sizeof(errstr)) != RF_OK)
                return relctl_fail("%s", errstr);
            result = image_registry_merge(ctl, db, argv[2], list);
            if (json || ctl->json) {
                relctl_print_json(list);
                return result;
            }
            json_array_foreach(list, i, im) {
                const char *at = json_string_value(json_object_get(im, "added_at"));
                const char *by = json_string_value(json_object_get(im, "added_by"));
                const char *digest = json_string_value(json_object_get(im, "digest"));
                const char *reg = json_string_value(json_object_get(im, "registry"));
                printf("%-20s %-24s %s %s%s%s\n", json_string_value(json_object_get(im, "tag")),
                       at ? at : "-", by ? by : "-", digest ? digest : "",
                       reg ? (digest ? " in " : "in ") : "", reg ? reg : "");
            }
            json_decref(list);
            return result;
        }
    }
    return relctl_usage("usage: relctl image add SERVICE TAG [--digest D] | image list SERVICE");
}

int relctl_cmd_db(relctl_t *ctl, int argc, char **argv)
{
    rf_db_t *db;
    char errstr[1024];
    int applied = 0, version = 0;

    if (argc != 2 || (strcmp(argv[1], "migrate") != 0 && strcmp(argv[1], "status") != 0))
        return relctl_usage("usage: relctl db migrate | relctl db status");
    db = relctl_db(ctl);
    if (!db)
        return RELCTL_FAIL;
    if (strcmp(argv[1], "migrate") == 0) {
        if (rf_db_migrate(db, &applied, errstr, sizeof(errstr)) != RF_OK)
            return relctl_fail("%s", errstr);
        printf("applied %d migration%s\n", applied, applied == 1 ? "" : "s");
        if (relctl_bootstrap_admin(ctl) != RELCTL_OK)
            return RELCTL_FAIL;
    }
    if (rf_db_schema_version(db, &version, errstr, sizeof(errstr)) != RF_OK)
        return relctl_fail("%s", errstr);
    printf("schema version %d\n", version);
    return RELCTL_OK;
}
