/* Kubeconfig loading: YAML (libyaml) to a tree, then one context resolved and checked. */
#include "rf_kubeconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <yaml.h>

#include "rf_buf.h"
#include "rf_err.h"

#define KUBECONFIG_MAX_FILE ((size_t)4 << 20)
#define KUBECONFIG_MAX_DEPTH 32
#define IN_CLUSTER_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

/* Reads a whole file (at most max bytes) into out (free() it). Returns 0, or -1 with errno. */
static int kc_read_file(const char *path, size_t max, char **out, size_t *len_out)
{
    rf_buf_t buf = RF_BUF_INIT;
    char chunk[8192];
    FILE *f;
    size_t n;
    int result = -1;

    rf_buf_init(&buf, max);
    f = fopen(path, "rb");
    if (!f)
        goto cleanup;
    for (;;) {
        n = fread(chunk, 1, sizeof(chunk), f);
        if (n > 0 && rf_buf_add(&buf, chunk, n) != 0) {
            errno = EFBIG;
            goto cleanup;
        }
        if (n < sizeof(chunk))
            break;
    }
    if (ferror(f)) {
        errno = EIO;
        goto cleanup;
    }
    *len_out = buf.len;
    *out = rf_buf_detach(&buf);
    result = 0;

cleanup:
    if (f)
        fclose(f);
    rf_buf_release(&buf);
    return result;
}

/* A libyaml node as JSON: mappings to objects, sequences to arrays, plain true/false to
 * booleans, every other scalar to a string (kubeconfig has no numeric fields). */
static json_t *kc_yaml_to_json(yaml_document_t *doc, yaml_node_t *node, int depth)
{
    yaml_node_pair_t *pair;
    yaml_node_item_t *item;
    yaml_node_t *key;
    json_t *out = NULL;
    json_t *child;
    const char *s;

    if (!node || depth > KUBECONFIG_MAX_DEPTH)
        return NULL;
    switch (node->type) {
    case YAML_SCALAR_NODE:
        s = (const char *)node->data.scalar.value;
        if (node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
            (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")))
            return json_true();
        if (node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
            (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")))
            return json_false();
        if (node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
            (!strcmp(s, "null") || !strcmp(s, "~") || !strcmp(s, "")))
            return json_null();
        return json_stringn(s, node->data.scalar.length);
    case YAML_SEQUENCE_NODE:
        out = json_array();
        for (item = node->data.sequence.items.start; item < node->data.sequence.items.top; item++) {
            child = kc_yaml_to_json(doc, yaml_document_get_node(doc, *item), depth + 1);
            if (!child || json_array_append_new(out, child) != 0) {
                json_decref(out);
                return NULL;
            }
        }
        return out;
    case YAML_MAPPING_NODE:
        out = json_object();
        for (pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top; pair++) {
            key = yaml_document_get_node(doc, pair->key);
            if (!key || key->type != YAML_SCALAR_NODE) {
                json_decref(out);
                return NULL;
            }
            child = kc_yaml_to_json(doc, yaml_document_get_node(doc, pair->value), depth + 1);
            if (!child ||
                json_object_set_new(out, (const char *)key->data.scalar.value, child) != 0) {
                json_decref(out);
                return NULL;
            }
        }
        return out;
    case YAML_NO_NODE:
        break;
    }
    return NULL;
}

/* Parses YAML text into a JSON tree. Returns NULL with errstr. */
static json_t *kc_parse_yaml(const char *path, const char *text, size_t len, char *errstr,
                             size_t errstr_size)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    json_t *root = NULL;
    int have_doc = 0;

    if (!yaml_parser_initialize(&parser))
        abort();
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot parse kubeconfig '%s': %s at line %zu",
                path, parser.problem ? parser.problem : "bad yaml", parser.problem_mark.line + 1);
        goto cleanup;
    }
    have_doc = 1;
    root = kc_yaml_to_json(&doc, yaml_document_get_root_node(&doc), 0);
    if (!json_is_object(root)) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size,
                "cannot parse kubeconfig '%s': not a mapping of string keys", path);
        json_decref(root);
        root = NULL;
    }

cleanup:
    if (have_doc)
        yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return root;
}

/* The entry of list (clusters, users, contexts) called name, or NULL. */
static json_t *kc_find_named(json_t *root, const char *list, const char *name)
{
    json_t *entry;
    size_t i;

    json_array_foreach(json_object_get(root, list), i, entry)
    {
        if (json_is_string(json_object_get(entry, "name")) &&
            strcmp(json_string_value(json_object_get(entry, "name")), name) == 0)
            return entry;
    }
    return NULL;
}

static char *kc_strdup(const char *s)
{
    char *p = strdup(s);

    if (!p)
        abort();
    return p;
}

/* What a loader step needs to name in its errors. */
typedef struct kc_ctx {
    const char *path; /* the kubeconfig file */
    const char *dir;  /* its folder, for relative paths */
    char *errstr;
    size_t errstr_size;
} kc_ctx_t;

/* A string field of obj, or NULL when absent; -1 with errstr when present but not a string. */
static int kc_get_string(kc_ctx_t *c, json_t *obj, const char *field, const char *what,
                         const char *name, const char **out)
{
    json_t *v = json_object_get(obj, field);

    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v)) {
        rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size,
                "bad %s of %s '%.200s' in kubeconfig '%s': not a string", field, what, name,
                c->path);
        return -1;
    }
    *out = json_string_value(v);
    if (**out == '\0')
        *out = NULL;
    return 0;
}

/* path made absolute against the kubeconfig's folder (free() it). */
static char *kc_resolve_path(kc_ctx_t *c, const char *path)
{
    rf_buf_t buf = RF_BUF_INIT;

    if (path[0] == '/' || !c->dir)
        return kc_strdup(path);
    rf_buf_addf(&buf, "%s/%s", c->dir, path);
    return rf_buf_detach(&buf);
}

/* Decodes base64 (newlines allowed) into out (free() it). Returns 0 or -1. */
static int kc_base64_decode(const char *in, char **out, size_t *len_out)
{
    EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();
    size_t in_len = strlen(in);
    unsigned char *buf;
    int n = 0;
    int fin = 0;
    int result = -1;

    buf = malloc(in_len / 4 * 3 + 4);
    if (!ctx || !buf)
        abort();
    EVP_DecodeInit(ctx);
    if (EVP_DecodeUpdate(ctx, buf, &n, (const unsigned char *)in, (int)in_len) < 0)
        goto cleanup;
    if (EVP_DecodeFinal(ctx, buf + n, &fin) < 0)
        goto cleanup;
    buf[n + fin] = '\0';
    *len_out = (size_t)(n + fin);
    *out = (char *)buf;
    buf = NULL;
    result = 0;

cleanup:
    free(buf);
    EVP_ENCODE_CTX_free(ctx);
    return result;
}

/* Loads one PEM blob from the field "<base>-data" (base64) or "<base>" (a file). Leaves *out
 * NULL when neither is set. Returns 0, or -1 with errstr. */
static int kc_load_pem(kc_ctx_t *c, json_t *obj, const char *base, const char *what,
                       const char *name, char **out, size_t *len_out)
{
    char data_field[64];
    const char *data;
    const char *file;
    char *abs = NULL;
    const char *p;
    int result = -1;

    *out = NULL;
    *len_out = 0;
    snprintf(data_field, sizeof(data_field), "%s-data", base);
    if (kc_get_string(c, obj, data_field, what, name, &data) != 0 ||
        kc_get_string(c, obj, base, what, name, &file) != 0)
        goto cleanup;
    if (data) {
        if (kc_base64_decode(data, out, len_out) != 0) {
            rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size,
                    "bad %s of %s '%.200s' in kubeconfig '%s': not base64", data_field, what, name,
                    c->path);
            goto cleanup;
        }
    } else if (file) {
        abs = kc_resolve_path(c, file);
        if (kc_read_file(abs, KUBECONFIG_MAX_FILE, out, len_out) != 0) {
            rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size,
                    "cannot read %s '%.200s' of %s '%.200s' in kubeconfig '%s': %s", base, abs,
                    what, name, c->path, strerror(errno));
            goto cleanup;
        }
    } else {
        result = 0;
        goto cleanup;
    }
    p = *out;
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    if (strncmp(p, "-----BEGIN ", 11) != 0) {
        rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size,
                "bad %s of %s '%.200s' in kubeconfig '%s': not PEM", data ? data_field : base, what,
                name, c->path);
        goto cleanup;
    }
    result = 0;

cleanup:
    if (result != 0 && *out) {
        explicit_bzero(*out, *len_out);
        free(*out);
        *out = NULL;
        *len_out = 0;
    }
    free(abs);
    return result;
}

/* The token in a file, without surrounding whitespace (free() it), or NULL with errno. */
static char *kc_read_token(const char *path)
{
    char *text = NULL;
    size_t len = 0;
    size_t start = 0;

    if (kc_read_file(path, 64 << 10, &text, &len) != 0)
        return NULL;
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' ' ||
                       text[len - 1] == '\t'))
        len--;
    while (start < len && (text[start] == ' ' || text[start] == '\t'))
        start++;
    memmove(text, text + start, len - start);
    text[len - start] = '\0';
    return text;
}

/* Fills cfg from the cluster entry. */
static int kc_load_cluster(kc_ctx_t *c, json_t *root, rf_kubeconfig_t *cfg)
{
    json_t *entry = kc_find_named(root, "clusters", cfg->cluster);
    json_t *cluster = json_object_get(entry, "cluster");
    json_t *insecure;
    const char *server;
    const char *proxy;
    const char *sni;
    size_t len;

    if (!entry) {
        rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size,
                "kubeconfig '%s' has no cluster '%.200s' (named by context '%.200s')", c->path,
                cfg->cluster, cfg->context);
        return -1;
    }
    if (!json_is_object(cluster)) {
        rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size,
                "cluster '%.200s' in kubeconfig '%s' has no 'cluster' mapping", cfg->cluster,
                c->path);
        return -1;
    }
    if (kc_get_string(c, cluster, "server", "cluster", cfg->cluster, &server) != 0 ||
        kc_get_string(c, cluster, "proxy-url", "cluster", cfg->cluster, &proxy) != 0 ||
        kc_get_string(c, cluster, "tls-server-name", "cluster", cfg->cluster, &sni) != 0)
        return -1;
    if (!server) {
        rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size,
                "cluster '%.200s' in kubeconfig '%s' has no server", cfg->cluster, c->path);
        return -1;
    }
    if (strncmp(server, "https://", 8) != 0 && strncmp(server, "http://", 7) != 0) {
        rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size,
                "bad server '%.200s' of cluster '%.200s' in kubeconfig '%s': not an http(s) url",
                server, cfg->cluster, c->path);
        return -1;
    }
    if (sni) {
        rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size,
                "cluster '%.200s' in kubeconfig '%s' sets tls-server-name, which relfleet does not "
                "support",
                cfg->cluster, c->path);
        return -1;
    }
    cfg->server = kc_strdup(server);
    len = strlen(cfg->server);
    while (len > 0 && cfg->server[len - 1] == '/')
        cfg->server[--len] = '\0';
    if (proxy)
        cfg->proxy_url = kc_strdup(proxy);
    insecure = json_object_get(cluster, "insecure-skip-tls-verify");
    if (insecure && !json_is_boolean(insecure) && !json_is_null(insecure)) {
        rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size,
                "bad insecure-skip-tls-verify of cluster '%.200s' in kubeconfig '%s': not true or "
                "false",
                cfg->cluster, c->path);
        return -1;
    }
    cfg->insecure_skip_tls_verify = json_is_true(insecure);
    if (kc_load_pem(c, cluster, "certificate-authority", "cluster", cfg->cluster, &cfg->ca_pem,
                    &cfg->ca_pem_len) != 0)
        return -1;
    if (cfg->ca_pem && cfg->insecure_skip_tls_verify) {
        rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size,
                "cluster '%.200s' in kubeconfig '%s' sets both a certificate authority and "
                "insecure-skip-tls-verify",
                cfg->cluster, c->path);
        return -1;
    }
    return 0;
}

/* Fills cfg from the user entry. */
static int kc_load_user(kc_ctx_t *c, json_t *root, rf_kubeconfig_t *cfg)
{
    json_t *entry = kc_find_named(root, "users", cfg->user);
    json_t *user = json_object_get(entry, "user");
    const char *token;
    const char *token_file;
    const char *username;
    const char *password;

    if (!entry) {
        rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size,
                "kubeconfig '%s' has no user '%.200s' (named by context '%.200s')", c->path,
                cfg->user, cfg->context);
        return -1;
    }
    if (!user || json_is_null(user))
        return 0;
    if (!json_is_object(user)) {
        rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size,
                "bad user '%.200s' in kubeconfig '%s': 'user' is not a mapping", cfg->user,
                c->path);
        return -1;
    }
    if (json_object_get(user, "exec") || json_object_get(user, "auth-provider")) {
        rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size,
                "user '%.200s' in kubeconfig '%s' uses %s credentials, which relfleet does not "
                "support: use a token, a token file or a client certificate",
                cfg->user, c->path, json_object_get(user, "exec") ? "exec" : "auth-provider");
        return -1;
    }
    if (kc_get_string(c, user, "token", "user", cfg->user, &token) != 0 ||
        kc_get_string(c, user, "tokenFile", "user", cfg->user, &token_file) != 0 ||
        kc_get_string(c, user, "username", "user", cfg->user, &username) != 0 ||
        kc_get_string(c, user, "password", "user", cfg->user, &password) != 0)
        return -1;
    if (token) {
        cfg->token = kc_strdup(token);
    } else if (token_file) {
        cfg->token_file = kc_resolve_path(c, token_file);
        cfg->token = kc_read_token(cfg->token_file);
        if (!cfg->token) {
            rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size,
                    "cannot read tokenFile '%.200s' of user '%.200s' in kubeconfig '%s': %s",
                    cfg->token_file, cfg->user, c->path, strerror(errno));
            return -1;
        }
    }
    if (username || password) {
        if (!username || !password) {
            rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size,
                    "user '%.200s' in kubeconfig '%s' has a %s but no %s", cfg->user, c->path,
                    username ? "username" : "password", username ? "password" : "username");
            return -1;
        }
        cfg->username = kc_strdup(username);
        cfg->password = kc_strdup(password);
    }
    if (kc_load_pem(c, user, "client-certificate", "user", cfg->user, &cfg->cert_pem,
                    &cfg->cert_pem_len) != 0 ||
        kc_load_pem(c, user, "client-key", "user", cfg->user, &cfg->key_pem, &cfg->key_pem_len) !=
            0)
        return -1;
    if (!cfg->cert_pem != !cfg->key_pem) {
        rf_errf(RF_ERR_PERM, c->errstr, c->errstr_size,
                "user '%.200s' in kubeconfig '%s' has a %s but no %s", cfg->user, c->path,
                cfg->cert_pem ? "client certificate" : "client key",
                cfg->cert_pem ? "client key" : "client certificate");
        return -1;
    }
    return 0;
}

/* The default kubeconfig path (free() it), or NULL. */
static char *kc_default_path(void)
{
    rf_buf_t buf = RF_BUF_INIT;
    const char *env = getenv("KUBECONFIG");
    const char *home = getenv("HOME");
    size_t n;

    if (env && *env) {
        n = strcspn(env, ":");
        rf_buf_add(&buf, env, n);
        return rf_buf_detach(&buf);
    }
    if (!home || !*home)
        return NULL;
    rf_buf_addf(&buf, "%s/.kube/config", home);
    return rf_buf_detach(&buf);
}

rf_kubeconfig_t *rf_kubeconfig_load(const char *path, const char *context, char *errstr,
                                    size_t errstr_size)
{
    rf_kubeconfig_t *cfg = NULL;
    kc_ctx_t c = {NULL, NULL, errstr, errstr_size};
    char *own_path = NULL;
    char *dir = NULL;
    char *text = NULL;
    size_t len = 0;
    json_t *root = NULL;
    json_t *entry;
    json_t *ctx;
    const char *name;
    const char *s;
    char *slash;
    rf_kubeconfig_t *result = NULL;

    if (!path) {
        own_path = kc_default_path();
        if (!own_path) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size,
                    "cannot find a kubeconfig: neither KUBECONFIG nor HOME is set");
            goto cleanup;
        }
        path = own_path;
    }
    c.path = path;
    dir = kc_strdup(path);
    slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        strcpy(dir, ".");
    c.dir = dir;
    if (kc_read_file(path, KUBECONFIG_MAX_FILE, &text, &len) != 0) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot read kubeconfig '%s': %s", path,
                strerror(errno));
        goto cleanup;
    }
    root = kc_parse_yaml(path, text, len, errstr, errstr_size);
    if (!root)
        goto cleanup;

    cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        abort();
    cfg->path = kc_strdup(path);
    if (context) {
        name = context;
    } else {
        name = json_string_value(json_object_get(root, "current-context"));
        if (!name || !*name) {
            rf_errf(RF_ERR_PERM, errstr, errstr_size,
                    "kubeconfig '%s' has no current-context and no context was named", path);
            goto cleanup;
        }
    }
    cfg->context = kc_strdup(name);
    entry = kc_find_named(root, "contexts", name);
    if (!entry) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "kubeconfig '%s' has no context '%.200s'", path,
                name);
        goto cleanup;
    }
    ctx = json_object_get(entry, "context");
    if (!json_is_object(ctx)) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size,
                "context '%.200s' in kubeconfig '%s' has no 'context' mapping", name, path);
        goto cleanup;
    }
    if (kc_get_string(&c, ctx, "cluster", "context", name, &s) != 0)
        goto cleanup;
    if (!s) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size,
                "context '%.200s' in kubeconfig '%s' has no cluster", name, path);
        goto cleanup;
    }
    cfg->cluster = kc_strdup(s);
    if (kc_get_string(&c, ctx, "namespace", "context", name, &s) != 0)
        goto cleanup;
    cfg->namespace = kc_strdup(s ? s : "default");
    if (kc_get_string(&c, ctx, "user", "context", name, &s) != 0)
        goto cleanup;
    cfg->user = kc_strdup(s ? s : "");
    if (kc_load_cluster(&c, root, cfg) != 0)
        goto cleanup;
    if (*cfg->user && kc_load_user(&c, root, cfg) != 0)
        goto cleanup;
    result = cfg;
    cfg = NULL;

cleanup:
    rf_kubeconfig_destroy(cfg);
    json_decref(root);
    free(text);
    free(dir);
    free(own_path);
    return result;
}

rf_kubeconfig_t *rf_kubeconfig_in_cluster(const char *dir, char *errstr, size_t errstr_size)
{
    rf_kubeconfig_t *cfg = NULL;
    rf_kubeconfig_t *result = NULL;
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    rf_buf_t buf = RF_BUF_INIT;
    char *ns;

    if (!dir)
        dir = IN_CLUSTER_DIR;
    if (!host || !*host || !port || !*port) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size,
                "not running in a cluster: KUBERNETES_SERVICE_HOST and _PORT are not set");
        goto cleanup;
    }
    cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        abort();
    cfg->path = kc_strdup("in-cluster");
    cfg->context = kc_strdup("in-cluster");
    cfg->cluster = kc_strdup("in-cluster");
    cfg->user = kc_strdup("serviceaccount");
    if (strchr(host, ':'))
        rf_buf_addf(&buf, "https://[%s]:%s", host, port);
    else
        rf_buf_addf(&buf, "https://%s:%s", host, port);
    cfg->server = rf_buf_detach(&buf);
    rf_buf_addf(&buf, "%s/token", dir);
    cfg->token_file = rf_buf_detach(&buf);
    cfg->token = kc_read_token(cfg->token_file);
    if (!cfg->token) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot read service account token '%.200s': %s",
                cfg->token_file, strerror(errno));
        goto cleanup;
    }
    rf_buf_addf(&buf, "%s/ca.crt", dir);
    if (kc_read_file(rf_buf_str(&buf), KUBECONFIG_MAX_FILE, &cfg->ca_pem, &cfg->ca_pem_len) != 0) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot read service account ca '%.200s': %s",
                rf_buf_str(&buf), strerror(errno));
        goto cleanup;
    }
    rf_buf_reset(&buf);
    rf_buf_addf(&buf, "%s/namespace", dir);
    ns = kc_read_token(rf_buf_str(&buf));
    cfg->namespace = ns && *ns ? ns : kc_strdup("default");
    if (ns && !*ns)
        free(ns);
    result = cfg;
    cfg = NULL;

cleanup:
    rf_buf_release(&buf);
    rf_kubeconfig_destroy(cfg);
    return result;
}

static void kc_free_secret(char *s, size_t len)
{
    if (!s)
        return;
    explicit_bzero(s, len);
    free(s);
}

void rf_kubeconfig_destroy(rf_kubeconfig_t *cfg)
{
    if (!cfg)
        return;
    free(cfg->path);
    free(cfg->context);
    free(cfg->cluster);
    free(cfg->user);
    free(cfg->server);
    free(cfg->namespace);
    free(cfg->ca_pem);
    free(cfg->cert_pem);
    kc_free_secret(cfg->key_pem, cfg->key_pem_len);
    kc_free_secret(cfg->token, cfg->token ? strlen(cfg->token) : 0);
    free(cfg->token_file);
    free(cfg->username);
    kc_free_secret(cfg->password, cfg->password ? strlen(cfg->password) : 0);
    free(cfg->proxy_url);
    free(cfg);
}
