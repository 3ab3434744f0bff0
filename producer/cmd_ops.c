/* relctl operations: rollback, redo, users and roles; who runs relctl and how it signs. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relctl.h"
#include "rf_auth.h"
#include "rf_request.h"

/* ---------------------------------------------------------------------------------------
 * Identity, roles, signing. */

int relctl_whoami(relctl_t *ctl, const char **user)
{
    char errstr[1024];
    rf_db_t *db;

    *user = NULL;
    if (!ctl->conf.token || !*ctl->conf.token)
        return RELCTL_OK;
    if (!ctl->user) {
        db = relctl_db(ctl);
        if (!db)
            return RELCTL_FAIL;
        if (rf_auth_token_user(db, ctl->conf.token, &ctl->user, errstr, sizeof(errstr)) != RF_OK)
            return relctl_fail("%s", errstr);
        ctl->operator_name = ctl->user;
    }
    *user = ctl->user;
    return RELCTL_OK;
}

int relctl_require(relctl_t *ctl, const char *role, const char *service, const char *env)
{
    const char *user = NULL;
    char errstr[1024];
    int has = 0;

    if (relctl_whoami(ctl, &user) != RELCTL_OK)
        return RELCTL_FAIL;
    if (!user) {
        if (strcmp(ctl->conf.auth_required, "on") == 0)
            return relctl_fail("this needs the %s role: set the API token (RELFLEET_TOKEN)",
                               role);
        return RELCTL_OK;
    }
    if (rf_auth_has_role(ctl->db, user, rf_auth_role_parse(role), service, env, &has, errstr,
                         sizeof(errstr)) != RF_OK)
        return relctl_fail("%s", errstr);
    if (has)
        return RELCTL_OK;
    if (strcmp(service, "*") == 0 && env && strcmp(env, "*") == 0)
        return relctl_fail("permission denied: user '%s' is not %s of every service and env",
                           user, role);
    if (!env)
        return relctl_fail("permission denied: user '%s' has no %s role for service '%s'", user,
                           role, service);
    return relctl_fail("permission denied: user '%s' has no %s role for service '%s' in env '%s'",
                       user, role, service, env);
}

int relctl_sign(relctl_t *ctl, json_t *msg)
{
    const char *key_id = ctl->conf.signing_key_id;
    const char *user = NULL;
    const char *p[1];
    PGresult *res = NULL;
    char secret[96], errstr[1024];
    char *key = NULL;
    struct timespec now;
    int result = RELCTL_FAIL;

    if (!key_id || !*key_id) {
        if (relctl_whoami(ctl, &user) != RELCTL_OK)
            return RELCTL_FAIL;
        if (!user)
            return RELCTL_OK; /* nobody to sign as */
        key_id = user;
        snprintf(secret, sizeof(secret), "signing_key.%s", key_id);
        key = rf_config_secret(&ctl->conf, secret);
        if (!key)
            return RELCTL_OK; /* no key of the user here: the worker decides */
    } else {
        snprintf(secret, sizeof(secret), "signing_key.%s", key_id);
        key = rf_config_secret(&ctl->conf, secret);
        if (!key)
            return relctl_fail("signing key '%s' (setting signing_key_id) is not in the secrets"
                               " (secret '%s')",
                               key_id, secret);
    }
    if (!relctl_db(ctl))
        goto out;
    p[0] = key_id;
    if (rf_db_exec(ctl->db, "SELECT user_name, upstream FROM signing_keys WHERE key_id = $1", 1,
                   p, &res, errstr, sizeof(errstr)) != RF_OK) {
        relctl_fail("%s", errstr);
        goto out;
    }
    if (PQntuples(res) != 1) {
        relctl_fail("signing key '%s' is not registered (relctl user key USER %s)", key_id,
                    key_id);
        goto out;
    }
    /* A user's key signs for its user only; an upstream key for whom it names. */
    if (strcmp(PQgetvalue(res, 0, 1), "t") != 0)
        json_object_set_new(msg, "operator", json_string(PQgetvalue(res, 0, 0)));
    clock_gettime(CLOCK_REALTIME, &now);
    if (rf_auth_sign(msg, key_id, key, (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000,
                     errstr, sizeof(errstr)) != RF_OK) {
        relctl_fail("%s", errstr);
        goto out;
    }
    result = RELCTL_OK;
out:
    PQclear(res);
    free(key);
    return result;
}

int relctl_bootstrap_admin(relctl_t *ctl)
{
    const char *name = ctl->conf.bootstrap_admin;
    char token_hash[65], key_hash[65] = "", secret[96], errstr[1024];
    const char *p[2] = {name, token_hash};
    PGresult *res = NULL;
    rf_db_t *db = relctl_db(ctl);
    char *key;
    int none;

    if (!db)
        return RELCTL_FAIL;
    if (!ctl->conf.token || !*ctl->conf.token || !name || !*name)
        return RELCTL_OK;
    if (rf_db_begin(db, errstr, sizeof(errstr)) != RF_OK)
        return relctl_fail("%s", errstr);
    if (rf_db_exec(db, "LOCK TABLE users IN EXCLUSIVE MODE", 0, NULL, NULL, errstr,
                   sizeof(errstr)) != RF_OK ||
        rf_db_exec(db, "SELECT NOT EXISTS (SELECT 1 FROM users)", 0, NULL, &res, errstr,
                   sizeof(errstr)) != RF_OK)
        goto fail;
    none = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    res = NULL;
    if (!none) {
        rf_db_rollback(db);
        return RELCTL_OK;
    }
    rf_auth_token_hash(ctl->conf.token, token_hash);
    if (rf_db_exec(db, "INSERT INTO users (name, created_by) VALUES ($1, 'bootstrap')", 1, p, NULL,
                   errstr, sizeof(errstr)) != RF_OK ||
        rf_db_exec(db,
                   "INSERT INTO api_tokens (token_sha256, user_name, label, created_by)"
                   " VALUES ($2, $1, 'bootstrap', 'bootstrap')",
                   2, p, NULL, errstr, sizeof(errstr)) != RF_OK ||
        rf_db_exec(db,
                   "INSERT INTO role_grants (user_name, role, service_pattern, env_pattern,"
                   " created_by) VALUES ($1, 'admin', '*', '*', 'bootstrap')",
                   1, p, NULL, errstr, sizeof(errstr)) != RF_OK)
        goto fail;
    snprintf(secret, sizeof(secret), "signing_key.%s", name);
    key = rf_config_secret(&ctl->conf, secret);
    if (key) {
        rf_auth_token_hash(key, key_hash);
        free(key);
        const char *kp[2] = {name, key_hash};
        if (rf_db_exec(db,
                       "INSERT INTO signing_keys (key_id, user_name, key_sha256, created_by)"
                       " VALUES ($1, $1, $2, 'bootstrap')",
                       2, kp, NULL, errstr, sizeof(errstr)) != RF_OK)
            goto fail;
    }
    if (rf_db_commit(db, errstr, sizeof(errstr)) != RF_OK)
        return relctl_fail("%s", errstr);
    printf("bootstrap admin '%s' created (the token setting%s)\n", name,
           key_hash[0] ? ", signing key of the same name" : "");
    return RELCTL_OK;
fail:
    PQclear(res);
    rf_db_rollback(db);
    return relctl_fail("cannot create the bootstrap admin: %s", errstr);
}

/* ---------------------------------------------------------------------------------------
 * rollback, redo */

typedef struct ops_args {
    const char *service, *env, *desc, *id;
    int wait;
} ops_args_t;

static int ops_parse(relctl_t *ctl, int argc, char **argv, ops_args_t *a, int allow_id)
{
    static const struct option opts[] = {
        {"service", required_argument, NULL, 's'}, {"env", required_argument, NULL, 'e'},
        {"message", required_argument, NULL, 'm'}, {"wait", no_argument, NULL, 'w'},
        {"output", required_argument, NULL, 'o'},  {NULL, 0, NULL, 0}};
    int c;

    memset(a, 0, sizeof(*a));
    optind = 0;
    while ((c = getopt_long(argc, argv, "s:e:m:wo:", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            a->service = optarg;
            break;
        case 'e':
            a->env = optarg;
            break;
        case 'm':
            a->desc = optarg;
            break;
        case 'w':
            a->wait = 1;
            break;
        case 'o':
            ctl->json = strcmp(optarg, "json") == 0;
            break;
        default:
            return RELCTL_USAGE;
        }
    }
    if (allow_id && optind == argc - 1 && !a->service && !a->env) {
        a->id = argv[optind];
        return RELCTL_OK;
    }
    if (optind != argc || !a->service || !a->env)
        return relctl_usage(allow_id ? "%s needs a release id, or --service and --env"
                                     : "%s needs --service and --env",
                            argv[0]);
    return RELCTL_OK;
}

int relctl_cmd_rollback(relctl_t *ctl, int argc, char **argv)
{
    rf_request_origin_t origin;
    ops_args_t a;
    json_t *msg = NULL;
    char errstr[1024];
    rf_db_t *db;
    rf_err_t err;
    int result;

    result = ops_parse(ctl, argc, argv, &a, 1);
    if (result != RELCTL_OK)
        return result;
    db = relctl_db(ctl);
    if (!db)
        return RELCTL_FAIL;
    if (a.id)
        err = rf_request_find_release(db, a.id, &origin, errstr, sizeof(errstr));
    else
        err = rf_request_find_previous(db, a.service, a.env, &origin, errstr, sizeof(errstr));
    if (err == RF_OK)
        err = rf_request_rollback(&origin, ctl->operator_name, a.desc, &msg, errstr,
                                  sizeof(errstr));
    result = err == RF_OK ? relctl_request(ctl, msg, a.wait) : relctl_fail("%s", errstr);
    rf_request_origin_release(&origin);
    return result;
}

int relctl_cmd_redo(relctl_t *ctl, int argc, char **argv)
{
    rf_request_origin_t origin;
    ops_args_t a;
    char errstr[1024];
    rf_db_t *db;
    int result;

    result = ops_parse(ctl, argc, argv, &a, 0);
    if (result != RELCTL_OK)
        return result;
    db = relctl_db(ctl);
    if (!db)
        return RELCTL_FAIL;
    if (rf_request_find_latest(db, a.service, a.env, &origin, errstr, sizeof(errstr)) != RF_OK)
        return relctl_fail("%s", errstr);
    result = relctl_request(ctl, rf_request_redo(&origin, ctl->operator_name, a.desc), a.wait);
    rf_request_origin_release(&origin);
    return result;
}

/* ---------------------------------------------------------------------------------------
 * user */

static int user_exec(relctl_t *ctl, const char *sql, int n, const char *const *p, int must_hit,
                     const char *what)
{
    PGresult *res = NULL;
    char errstr[1024];
    int hit;

    if (rf_db_exec(ctl->db, sql, n, p, &res, errstr, sizeof(errstr)) != RF_OK)
        return relctl_fail("cannot %s: %s", what, errstr);
    hit = PQntuples(res) > 0 || atoi(PQcmdTuples(res)) > 0;
    PQclear(res);
    if (must_hit && !hit)
        return relctl_fail("cannot %s: no such user", what);
    return RELCTL_OK;
}

static int user_list(relctl_t *ctl)
{
    PGresult *res = NULL;
    char errstr[1024];
    json_t *list;
    size_t i;
    json_t *u;

    if (rf_db_exec(ctl->db,
                   "SELECT coalesce(jsonb_agg(jsonb_build_object('name', u.name, 'disabled',"
                   " u.disabled, 'created_at', relfleet_iso(u.created_at), 'created_by',"
                   " u.created_by, 'roles', (SELECT coalesce(jsonb_agg(jsonb_build_object("
                   "'role', g.role, 'service', g.service_pattern, 'env', g.env_pattern) ORDER BY"
                   " g.role, g.service_pattern, g.env_pattern), '[]') FROM role_grants g WHERE"
                   " g.user_name = u.name), 'tokens', (SELECT count(*) FROM api_tokens t WHERE"
                   " t.user_name = u.name), 'keys', (SELECT coalesce(jsonb_agg(jsonb_build_object("
                   "'key_id', k.key_id, 'upstream', k.upstream) ORDER BY k.key_id), '[]') FROM"
                   " signing_keys k WHERE k.user_name = u.name)) ORDER BY u.name), '[]')"
                   " FROM users u",
                   0, NULL, &res, errstr, sizeof(errstr)) != RF_OK)
        return relctl_fail("%s", errstr);
    list = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    PQclear(res);
    if (ctl->json) {
        relctl_print_json(list);
        return RELCTL_OK;
    }
    json_array_foreach(list, i, u) {
        size_t j;
        json_t *g;
        printf("%-20s%s tokens %lld", json_string_value(json_object_get(u, "name")),
               json_is_true(json_object_get(u, "disabled")) ? " (disabled)" : "",
               (long long)json_integer_value(json_object_get(u, "tokens")));
        json_array_foreach(json_object_get(u, "keys"), j, g)
            printf(" key %s%s", json_string_value(json_object_get(g, "key_id")),
                   json_is_true(json_object_get(g, "upstream")) ? " (upstream)" : "");
        json_array_foreach(json_object_get(u, "roles"), j, g)
            printf(" %s:%s/%s", json_string_value(json_object_get(g, "role")),
                   json_string_value(json_object_get(g, "service")),
                   json_string_value(json_object_get(g, "env")));
        printf("\n");
    }
    json_decref(list);
    return RELCTL_OK;
}

/* A new random token, printed once; only its SHA-256 is kept. */
static int user_token(relctl_t *ctl, const char *name, const char *label)
{
    unsigned char raw[24];
    char token[64], hash[65];
    const char *p[4] = {hash, name, label, ctl->operator_name};
    FILE *f = fopen("/dev/urandom", "rb");
    size_t n = f ? fread(raw, 1, sizeof(raw), f) : 0;
    int result;

    if (f)
        fclose(f);
    if (n != sizeof(raw))
        return relctl_fail("cannot read /dev/urandom");
    memcpy(token, "rft_", 4);
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(token + 4 + 2 * i, 3, "%02x", raw[i]);
    rf_auth_token_hash(token, hash);
    result = user_exec(ctl,
                       "INSERT INTO api_tokens (token_sha256, user_name, label, created_by)"
                       " SELECT $1, name, $3, $4 FROM users WHERE name = $2 RETURNING 1",
                       4, p, 1, "create a token");
    if (result != RELCTL_OK)
        return result;
    fprintf(stderr, "relctl: the token of '%s' is shown this once; only its hash is kept\n",
            name);
    printf("%s\n", token);
    return RELCTL_OK;
}

/* Registers key_id, held in the secret signing_key.<key_id>, as the user's. */
static int user_key(relctl_t *ctl, const char *name, const char *key_id, int upstream)
{
    char secret[96], hash[65];
    const char *p[5] = {key_id, name, upstream ? "true" : "false", hash, ctl->operator_name};
    char *key;

    snprintf(secret, sizeof(secret), "signing_key.%s", key_id);
    key = rf_config_secret(&ctl->conf, secret);
    if (!key)
        return relctl_fail("no secret '%s' to register (put `%s=<random key>` in the secrets"
                           " file of the signer and of the workers)",
                           secret, secret);
    if (strlen(key) < 32) {
        free(key);
        return relctl_fail("secret '%s' is shorter than 32 characters", secret);
    }
    rf_auth_token_hash(key, hash);
    free(key);
    if (user_exec(ctl,
                  "INSERT INTO signing_keys (key_id, user_name, upstream, key_sha256, created_by)"
                  " SELECT $1, name, $3::boolean, $4, $5 FROM users WHERE name = $2"
                  " ON CONFLICT (key_id) DO UPDATE SET user_name = EXCLUDED.user_name,"
                  " upstream = EXCLUDED.upstream, key_sha256 = EXCLUDED.key_sha256 RETURNING 1",
                  5, p, 1, "register the signing key") != RELCTL_OK)
        return RELCTL_FAIL;
    printf("signing key %s of %s%s\n", key_id, name, upstream ? " (upstream)" : "");
    return RELCTL_OK;
}

int relctl_cmd_user(relctl_t *ctl, int argc, char **argv)
{
    static const char usage[] =
        "usage: relctl user add NAME | list | disable NAME | enable NAME\n"
        "       relctl user grant|revoke NAME ROLE --service PATTERN --env PATTERN\n"
        "       relctl user token NAME [--label L] | user key NAME KEY_ID [--upstream]";
    const char *sub = argc > 1 ? argv[1] : "";
    const char *service = NULL, *env = NULL, *label = "", *pos[3] = {NULL, NULL, NULL};
    int npos = 0, upstream = 0;

    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--service") == 0 && i + 1 < argc)
            service = argv[++i];
        else if (strcmp(argv[i], "--env") == 0 && i + 1 < argc)
            env = argv[++i];
        else if (strcmp(argv[i], "--label") == 0 && i + 1 < argc)
            label = argv[++i];
        else if (strcmp(argv[i], "--output") == 0 && i + 1 < argc)
            ctl->json = strcmp(argv[++i], "json") == 0;
        else if (strcmp(argv[i], "--upstream") == 0)
            upstream = 1;
        else if (argv[i][0] != '-' && npos < 3)
            pos[npos++] = argv[i];
        else
            return relctl_usage("user %s: unexpected argument '%s'\n%s", sub, argv[i], usage);
    }
    if (!relctl_db(ctl))
        return RELCTL_FAIL;
    if (strcmp(sub, "list") == 0 && npos == 0) {
        if (relctl_require(ctl, "viewer", "*", "*") != RELCTL_OK)
            return RELCTL_FAIL;
        return user_list(ctl);
    }
    if (npos == 0)
        return relctl_usage("%s", usage);
    if (relctl_require(ctl, "admin", "*", "*") != RELCTL_OK)
        return RELCTL_FAIL;
    if (strcmp(sub, "add") == 0 && npos == 1) {
        const char *p[2] = {pos[0], ctl->operator_name};
        if (user_exec(ctl, "INSERT INTO users (name, created_by) VALUES ($1, $2)", 2, p, 0,
                      "add the user") != RELCTL_OK)
            return RELCTL_FAIL;
        printf("added user %s\n", pos[0]);
        return RELCTL_OK;
    }
    if ((strcmp(sub, "disable") == 0 || strcmp(sub, "enable") == 0) && npos == 1) {
        const char *p[2] = {pos[0], strcmp(sub, "disable") == 0 ? "true" : "false"};
        if (user_exec(ctl, "UPDATE users SET disabled = $2::boolean WHERE name = $1", 2, p, 1,
                      sub) != RELCTL_OK)
            return RELCTL_FAIL;
        printf("%sd user %s\n", sub, pos[0]);
        return RELCTL_OK;
    }
    if ((strcmp(sub, "grant") == 0 || strcmp(sub, "revoke") == 0) && npos == 2) {
        const char *p[5] = {pos[0], pos[1], service, env, ctl->operator_name};
        if (!service || !env)
            return relctl_usage("user %s needs --service PATTERN and --env PATTERN", sub);
        if (rf_auth_role_parse(pos[1]) == RF_ROLE_NONE)
            return relctl_usage("unknown role '%s' (viewer, releaser, admin, approver)", pos[1]);
        if (strcmp(sub, "grant") == 0) {
            if (user_exec(ctl,
                          "INSERT INTO role_grants (user_name, role, service_pattern, env_pattern,"
                          " created_by) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                          5, p, 0, "grant the role") != RELCTL_OK)
                return RELCTL_FAIL;
        } else if (user_exec(ctl,
                             "DELETE FROM role_grants WHERE user_name = $1 AND role = $2 AND"
                             " service_pattern = $3 AND env_pattern = $4",
                             4, p, 1, "revoke the role (no such grant)") != RELCTL_OK) {
            return RELCTL_FAIL;
        }
        printf("%s %s %s on service %s env %s\n",
               strcmp(sub, "grant") == 0 ? "granted" : "revoked", pos[0], pos[1], service, env);
        return RELCTL_OK;
    }
    if (strcmp(sub, "token") == 0 && npos == 1)
        return user_token(ctl, pos[0], label);
    if (strcmp(sub, "key") == 0 && npos == 2)
        return user_key(ctl, pos[0], pos[1], upstream);
    return relctl_usage("%s", usage);
}
