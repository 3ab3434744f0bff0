/* Unit tests of the Kubernetes client against an in-process fake API server (libmicrohttpd). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>

#include "rf_kube.h"

#define FIXTURES RELFLEET_SOURCE_DIR "/tests/fixtures/kubeconfig"
#define FAKE_MAX_REQ 64
#define FAKE_MAX_PIECES 8

/* ---- the fake API server ---- */

typedef struct fake_req {
    char method[16];
    char path[512];
    char query[1024]; /* decoded "k=v&k=v" */
    char content_type[128];
    char auth[256];
    char *body;
    int peer_certs; /* TLS client certificates presented */
} fake_req_t;

typedef struct fake_resp {
    int status;
    char *body;                          /* malloc'd, whole answer; or */
    const char *stream[FAKE_MAX_PIECES]; /* pieces of a chunked answer, one chunk each */
    char retry_after[32];
    const char *content_type;
} fake_resp_t;

typedef struct fake fake_t;
typedef void (*fake_handler_t)(fake_t *f, const fake_req_t *req, int n, fake_resp_t *resp);

struct fake {
    struct MHD_Daemon *daemon;
    char url[64];
    pthread_mutex_t lock;
    fake_req_t reqs[FAKE_MAX_REQ];
    int nreq;
    fake_handler_t handler;
    void *data;
};

typedef struct upload {
    char *data;
    size_t len;
} upload_t;

typedef struct stream_ctx {
    const char *pieces[FAKE_MAX_PIECES];
    int i;
    size_t off;
} stream_ctx_t;

static char *xstrdup(const char *s)
{
    char *p = strdup(s);

    assert_non_null(p);
    return p;
}

static char *xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xprintf(const char *fmt, ...)
{
    va_list ap;
    char *out;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    out = malloc((size_t)n + 1);
    assert_non_null(out);
    va_start(ap, fmt);
    vsnprintf(out, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return out;
}

static enum MHD_Result fake_collect_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                        const char *value)
{
    fake_req_t *r = cls;
    size_t len = strlen(r->query);

    (void)kind;
    snprintf(r->query + len, sizeof(r->query) - len, "%s%s=%s", len ? "&" : "", key,
             value ? value : "");
    return MHD_YES;
}

static ssize_t fake_stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    stream_ctx_t *s = cls;
    size_t left;
    size_t n;

    (void)pos;
    while (s->i < FAKE_MAX_PIECES && s->pieces[s->i] && s->off >= strlen(s->pieces[s->i])) {
        s->i++;
        s->off = 0;
    }
    if (s->i >= FAKE_MAX_PIECES || !s->pieces[s->i])
        return MHD_CONTENT_READER_END_OF_STREAM;
    left = strlen(s->pieces[s->i]) - s->off;
    n = left < max ? left : max;
    memcpy(buf, s->pieces[s->i] + s->off, n);
    s->off += n;
    return (ssize_t)n;
}

/* Number of client certificates of a TLS connection (gnutls is found at run time, through
 * libmicrohttpd, so that the test links only what every unit test links). */
static int fake_peer_certs(struct MHD_Connection *conn)
{
    typedef const gnutls_datum_t *(*get_peers_fn)(gnutls_session_t, unsigned int *);
    const union MHD_ConnectionInfo *ci;
    get_peers_fn get_peers;
    unsigned int n = 0;

    ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (!ci || !ci->tls_session)
        return 0;
    *(void **)&get_peers = dlsym(RTLD_DEFAULT, "gnutls_certificate_get_peers");
    if (!get_peers)
        return -1;
    if (!get_peers((gnutls_session_t)ci->tls_session, &n))
        return 0;
    return (int)n;
}

static enum MHD_Result fake_handle(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version, const char *upload_data,
                                   size_t *upload_data_size, void **con_cls)
{
    fake_t *f = cls;
    upload_t *up = *con_cls;
    fake_req_t *r;
    fake_resp_t resp;
    struct MHD_Response *response;
    stream_ctx_t *sctx;
    const char *v;
    enum MHD_Result ret;
    int n;
    int i;

    (void)version;
    if (!up) {
        up = calloc(1, sizeof(*up));
        *con_cls = up;
        return MHD_YES;
    }
    if (*upload_data_size) {
        up->data = realloc(up->data, up->len + *upload_data_size + 1);
        memcpy(up->data + up->len, upload_data, *upload_data_size);
        up->len += *upload_data_size;
        up->data[up->len] = '\0';
        *upload_data_size = 0;
        return MHD_YES;
    }
    memset(&resp, 0, sizeof(resp));
    resp.status = 200;
    pthread_mutex_lock(&f->lock);
    n = f->nreq;
    r = &f->reqs[n < FAKE_MAX_REQ ? n : FAKE_MAX_REQ - 1];
    if (n < FAKE_MAX_REQ)
        f->nreq++;
    free(r->body);
    memset(r, 0, sizeof(*r));
    snprintf(r->method, sizeof(r->method), "%s", method);
    snprintf(r->path, sizeof(r->path), "%s", url);
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, fake_collect_arg, r);
    v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
    snprintf(r->content_type, sizeof(r->content_type), "%s", v ? v : "");
    v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    snprintf(r->auth, sizeof(r->auth), "%s", v ? v : "");
    r->body = up->data ? up->data : xstrdup("");
    up->data = NULL;
    r->peer_certs = fake_peer_certs(conn);
    f->handler(f, r, n, &resp);
    pthread_mutex_unlock(&f->lock);

    if (resp.stream[0]) {
        sctx = calloc(1, sizeof(*sctx));
        for (i = 0; i < FAKE_MAX_PIECES; i++)
            sctx->pieces[i] = resp.stream[i];
        response = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, fake_stream_reader,
                                                     sctx, free);
    } else {
        if (!resp.body)
            resp.body = xstrdup("");
        response =
            MHD_create_response_from_buffer(strlen(resp.body), resp.body, MHD_RESPMEM_MUST_FREE);
    }
    MHD_add_response_header(response, "Content-Type",
                            resp.content_type ? resp.content_type : "application/json");
    if (resp.retry_after[0])
        MHD_add_response_header(response, "Retry-After", resp.retry_after);
    ret = MHD_queue_response(conn, (unsigned int)resp.status, response);
    MHD_destroy_response(response);
    return ret;
}

static void fake_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                           enum MHD_RequestTerminationCode toe)
{
    upload_t *up = *con_cls;

    (void)cls;
    (void)conn;
    (void)toe;
    if (up) {
        free(up->data);
        free(up);
        *con_cls = NULL;
    }
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *data;
    long n;

    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    data = malloc((size_t)n + 1);
    assert_int_equal(fread(data, 1, (size_t)n, f), (size_t)n);
    data[n] = '\0';
    fclose(f);
    return data;
}

static fake_t *fake_start(fake_handler_t handler, void *data, int tls)
{
    fake_t *f = calloc(1, sizeof(*f));
    const union MHD_DaemonInfo *info;
    char *cert = NULL;
    char *key = NULL;
    char *ca = NULL;

    assert_non_null(f);
    pthread_mutex_init(&f->lock, NULL);
    f->handler = handler;
    f->data = data;
    if (tls) {
        cert = slurp(FIXTURES "/pki/server.crt");
        key = slurp(FIXTURES "/pki/server.key");
        ca = slurp(FIXTURES "/pki/ca.crt");
        f->daemon =
            MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_TLS, 0, NULL, NULL,
                             fake_handle, f, MHD_OPTION_HTTPS_MEM_CERT, cert,
                             MHD_OPTION_HTTPS_MEM_KEY, key, MHD_OPTION_HTTPS_MEM_TRUST, ca,
                             MHD_OPTION_NOTIFY_COMPLETED, fake_completed, NULL, MHD_OPTION_END);
    } else {
        f->daemon =
            MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, fake_handle, f,
                             MHD_OPTION_NOTIFY_COMPLETED, fake_completed, NULL, MHD_OPTION_END);
    }
    free(cert);
    free(key);
    free(ca);
    assert_non_null(f->daemon);
    info = MHD_get_daemon_info(f->daemon, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    snprintf(f->url, sizeof(f->url), "%s://127.0.0.1:%u", tls ? "https" : "http",
             (unsigned int)info->port);
    return f;
}

static void fake_stop(fake_t *f)
{
    int i;

    MHD_stop_daemon(f->daemon);
    for (i = 0; i < FAKE_MAX_REQ; i++)
        free(f->reqs[i].body);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

static int fake_count(fake_t *f)
{
    int n;

    pthread_mutex_lock(&f->lock);
    n = f->nreq;
    pthread_mutex_unlock(&f->lock);
    return n;
}

/* Nonzero when the request's query holds exactly the parameter "k=v". */
static int query_has(const fake_req_t *r, const char *kv)
{
    size_t n = strlen(kv);
    const char *p = r->query;

    while (p && *p) {
        if (strncmp(p, kv, n) == 0 && (p[n] == '&' || p[n] == '\0'))
            return 1;
        p = strchr(p, '&');
        if (p)
            p++;
    }
    return 0;
}

static char *status_body(int code, const char *reason, const char *message)
{
    return xprintf("{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":"
                   "\"Failure\",\"message\":\"%s\",\"reason\":\"%s\",\"code\":%d}",
                   message, reason, code);
}

/* A client of the fake server, with a bearer token and a fast retry budget. */
static rf_kube_t *client_for(const char *server)
{
    rf_kubeconfig_t cfg;
    char err[256];
    rf_kube_t *k;

    memset(&cfg, 0, sizeof(cfg));
    cfg.server = (char *)server;
    cfg.namespace = (char *)"team-a";
    cfg.token = (char *)"t0ken";
    k = rf_kube_new(&cfg, err, sizeof(err));
    if (!k)
        fail_msg("%s", err);
    rf_kube_set_retry(k, 4, 10, 2000);
    return k;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- requests ---- */

static void apply_handler(fake_t *f, const fake_req_t *req, int n, fake_resp_t *resp)
{
    (void)f;
    (void)n;
    resp->body = xprintf("{\"kind\":\"Deployment\",\"metadata\":{\"name\":\"web\","
                         "\"resourceVersion\":\"42\"},\"echo\":%s}",
                         req->body[0] ? req->body : "null");
}

static void test_apply_request(void **state)
{
    fake_t *f = fake_start(apply_handler, NULL, 0);
    rf_kube_t *k = client_for(f->url);
    json_t *dep = json_pack("{s:s, s:s, s:{s:s, s:s}, s:{s:i}}", "apiVersion", "apps/v1", "kind",
                            "Deployment", "metadata", "name", "web", "namespace", "shop", "spec",
                            "replicas", 3);
    json_t *ns = json_pack("{s:s, s:s, s:{s:s}}", "apiVersion", "v1", "kind", "Namespace",
                           "metadata", "name", "shop");
    json_t *svc = json_pack("{s:s, s:s, s:{s:s}}", "apiVersion", "v1", "kind", "Service",
                            "metadata", "name", "web");
    json_t *odd = json_pack("{s:s, s:s, s:{s:s}}", "apiVersion", "example.com/v1", "kind", "Widget",
                            "metadata", "name", "w");
    json_t *out = NULL;
    json_t *echoed;
    char err[512];
    rf_err_t rc;

    (void)state;
    rc = rf_kube_apply(k, dep, NULL, &out, err, sizeof(err));
    if (rc != RF_OK)
        fail_msg("%s", err);
    assert_int_equal(fake_count(f), 1);
    assert_string_equal(f->reqs[0].method, "PATCH");
    assert_string_equal(f->reqs[0].path, "/apis/apps/v1/namespaces/shop/deployments/web");
    assert_string_equal(f->reqs[0].content_type, "application/apply-patch+yaml");
    assert_true(query_has(&f->reqs[0], "fieldManager=relfleet"));
    assert_true(query_has(&f->reqs[0], "force=true"));
    assert_string_equal(f->reqs[0].auth, "Bearer t0ken");
    echoed = json_loads(f->reqs[0].body, 0, NULL);
    assert_true(json_equal(echoed, dep)); /* the manifest itself, as JSON */
    json_decref(echoed);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(out, "metadata"), "resourceVersion")),
        "42");
    json_decref(out);

    assert_int_equal(rf_kube_apply(k, ns, "ci", NULL, err, sizeof(err)), RF_OK);
    assert_string_equal(f->reqs[1].path, "/api/v1/namespaces/shop");
    assert_true(query_has(&f->reqs[1], "fieldManager=ci"));

    /* No metadata.namespace: the context's namespace. */
    assert_int_equal(rf_kube_apply(k, svc, NULL, NULL, err, sizeof(err)), RF_OK);
    assert_string_equal(f->reqs[2].path, "/api/v1/namespaces/team-a/services/web");

    /* An unknown kind fails before anything is sent. */
    assert_int_equal(rf_kube_apply(k, odd, NULL, NULL, err, sizeof(err)), RF_ERR_PERM);
    assert_non_null(strstr(err, "unknown kind 'Widget' of apiVersion 'example.com/v1'"));
    assert_int_equal(fake_count(f), 3);

    json_decref(dep);
    json_decref(ns);
    json_decref(svc);
    json_decref(odd);
    rf_kube_destroy(k);
    fake_stop(f);
}

/* One object on the fake, with the API server's rules for an apply: a resourceVersion in
 * the body is a precondition (409 when it differs), each write bumps the version. */
typedef struct fenced_obj {
    int exists;
    int rv;
    char fence[24]; /* its relfleet.io/fence annotation */
} fenced_obj_t;

static char *fenced_body(const fenced_obj_t *o)
{
    return xprintf("{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":"
                   "\"web\",\"namespace\":\"shop\",\"resourceVersion\":\"%d\","
                   "\"annotations\":{\"relfleet.io/fence\":\"%s\"}}}",
                   o->rv, o->fence);
}

static void fenced_handler(fake_t *f, const fake_req_t *req, int n, fake_resp_t *resp)
{
    fenced_obj_t *o = f->data;
    json_t *body, *meta;
    const char *want, *fence;

    (void)n;
    if (strcmp(req->method, "GET") == 0) {
        if (!o->exists) {
            resp->status = 404;
            resp->body = status_body(404, "NotFound", "services \\\"web\\\" not found");
            return;
        }
        resp->body = fenced_body(o);
        return;
    }
    body = json_loads(req->body, 0, NULL);
    meta = json_object_get(body, "metadata");
    want = json_string_value(json_object_get(meta, "resourceVersion"));
    if (o->exists && want && atoi(want) != o->rv) {
        resp->status = 409;
        resp->body = status_body(409, "Conflict", "the object has been modified");
        json_decref(body);
        return;
    }
    fence = json_string_value(json_object_get(json_object_get(meta, "annotations"),
                                              "relfleet.io/fence"));
    snprintf(o->fence, sizeof(o->fence), "%s", fence ? fence : "");
    o->exists = 1;
    o->rv++;
    resp->body = fenced_body(o);
    json_decref(body);
}

/* Someone else writes the object: fence (NULL: keeps the annotation), a new version. */
static void fenced_write(fake_t *f, fenced_obj_t *o, const char *fence)
{
    pthread_mutex_lock(&f->lock);
    if (fence)
        snprintf(o->fence, sizeof(o->fence), "%s", fence);
    o->exists = 1;
    o->rv++;
    pthread_mutex_unlock(&f->lock);
}

static json_t *fenced_manifest(const char *fence)
{
    return json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s}}}", "apiVersion", "v1", "kind", "Service",
                     "metadata", "name", "web", "namespace", "shop", "annotations",
                     "relfleet.io/fence", fence);
}

/* What the n-th request was: "GET", "PATCH" or "PATCH@<resourceVersion>". */
static void fenced_expect(fake_t *f, int n, const char *what)
{
    const fake_req_t *r = &f->reqs[n];
    char got[64];
    json_t *body = json_loads(r->body, 0, NULL);
    const char *rv = json_string_value(
        json_object_get(json_object_get(body, "metadata"), "resourceVersion"));

    snprintf(got, sizeof(got), "%s%s%s", r->method, rv ? "@" : "", rv ? rv : "");
    json_decref(body);
    assert_string_equal(got, what);
}

/* Answers GET with 404 and PATCH with a whole object, pretty-printed, whose spec and
 * status hold braces and quotes inside strings. */
static void slim_handler(fake_t *f, const fake_req_t *req, int n, fake_resp_t *resp)
{
    (void)f;
    (void)n;
    if (strcmp(req->method, "GET") == 0) {
        resp->status = 404;
        resp->body = status_body(404, "NotFound", "services \\\"web\\\" not found");
        return;
    }
    resp->body = xprintf(
        "{\n  \"kind\" : \"Service\",\n  \"spec\": {\"note\": \"} ] { [ \\\" \\\\\", \"ports\": "
        "[{\"port\": 80}]},\n  \"apiVersion\": \"v1\",\n  \"metadata\": {\"managedFields\": "
        "[{\"manager\": \"relfleet\", \"fieldsV1\": {\"f:spec\": {}}}], \"name\": \"web\", "
        "\"namespace\": \"shop\", \"uid\": \"u-1\", \"labels\": {\"app\": \"web\"}, "
        "\"generation\": 3, \"resourceVersion\": \"42\", "
        "\"annotations\": {\"relfleet.io/fence\": \"5\", \"x\": \"{\\\"a\\\": 1}\"}},\n"
        "  \"status\": {\"loadBalancer\": {}}\n}\n");
}

/* The answer of a fenced apply is parsed only as far as apiVersion, kind and metadata's
 * name, namespace, generation, resourceVersion and annotations; what is kept is as the
 * server wrote it. */
static void test_apply_fenced_answer_is_slim(void **state)
{
    fake_t *f = fake_start(slim_handler, NULL, 0);
    rf_kube_t *k = client_for(f->url);
    json_t *m5 = fenced_manifest("5"), *out = NULL, *meta;
    char err[512];
    rf_err_t rc;

    (void)state;
    rc = rf_kube_apply_fenced(k, m5, NULL, "relfleet.io/fence", 5, &out, err, sizeof(err));
    if (rc != RF_OK)
        fail_msg("%s", err);
    meta = json_object_get(out, "metadata");
    assert_string_equal(json_string_value(json_object_get(out, "apiVersion")), "v1");
    assert_string_equal(json_string_value(json_object_get(out, "kind")), "Service");
    assert_string_equal(json_string_value(json_object_get(meta, "name")), "web");
    assert_string_equal(json_string_value(json_object_get(meta, "resourceVersion")), "42");
    assert_int_equal(json_integer_value(json_object_get(meta, "generation")), 3);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(meta, "annotations"), "x")),
                        "{\"a\": 1}");
    assert_null(json_object_get(out, "spec"));
    assert_null(json_object_get(out, "status"));
    assert_null(json_object_get(meta, "managedFields"));
    assert_string_equal(json_string_value(json_object_get(meta, "namespace")), "shop");
    assert_null(json_object_get(meta, "labels"));
    assert_null(json_object_get(meta, "uid"));
    assert_int_equal(json_object_size(meta), 5);
    assert_int_equal(json_object_size(out), 3);
    json_decref(out);
    /* rf_kube_apply still gives the whole answer */
    assert_int_equal(rf_kube_apply(k, m5, NULL, &out, err, sizeof(err)), RF_OK);
    assert_non_null(json_object_get(out, "spec"));
    assert_non_null(json_object_get(json_object_get(out, "metadata"), "managedFields"));
    json_decref(out);
    json_decref(m5);
    rf_kube_destroy(k);
    fake_stop(f);
}

/* Answers GET with 404 and PATCH with f->data's text. */
static void text_handler(fake_t *f, const fake_req_t *req, int n, fake_resp_t *resp)
{
    (void)n;
    if (strcmp(req->method, "GET") == 0) {
        resp->status = 404;
        resp->body = status_body(404, "NotFound", "services \\\"web\\\" not found");
        return;
    }
    resp->body = xstrdup(f->data);
}

/* An answer that is not JSON is refused as such by the slim parse too: a comma before a
 * '}' of the object or its metadata, more after it, an empty value. (What the slim copy
 * leaves out, spec and status, is only delimited, not checked.) */
static void test_apply_fenced_broken_answer(void **state)
{
    static const char *const answers[] = {
        "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\"},}",
        "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\",}}",
        "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\"}} {}",
        "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\",\"uid\":}}",
    };
    char err[512];

    (void)state;
    for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++) {
        fake_t *f = fake_start(text_handler, (void *)answers[i], 0);
        rf_kube_t *k = client_for(f->url);
        json_t *m5 = fenced_manifest("5"), *out = NULL;
        rf_err_t rc = rf_kube_apply_fenced(k, m5, NULL, "relfleet.io/fence", 5, &out, err,
                                           sizeof(err));
        if (rc == RF_OK)
            fail_msg("took the answer %s", answers[i]);
        assert_non_null(strstr(err, "not json"));
        assert_null(out);
        json_decref(m5);
        rf_kube_destroy(k);
        fake_stop(f);
    }
}

/* rf_kube_apply_fenced_rest: the body is the manifest's members, then the other members'
 * text as given (one JSON object, no key twice); the fence works as without them. */
static void test_apply_fenced_rest_body(void **state)
{
    fenced_obj_t o = {0, 10, ""};
    fake_t *f = fake_start(fenced_handler, &o, 0);
    rf_kube_t *k = client_for(f->url);
    json_t *m5 = fenced_manifest("5"), *m4 = fenced_manifest("4"), *out = NULL, *sent, *want;
    static const char rest[] = "\"spec\" : {\"ports\":[{\"port\":80}],\"note\":\"} \\\"{\"},"
                               "\"data\":[1,2.5,null]";
    json_error_t jerr;
    char err[512];
    rf_err_t rc;

    (void)state;
    rc = rf_kube_apply_fenced_rest(k, m5, rest, strlen(rest), NULL, "relfleet.io/fence", 5, &out,
                                   err, sizeof(err));
    if (rc != RF_OK)
        fail_msg("%s", err);
    json_decref(out);
    assert_int_equal(fake_count(f), 2);
    fenced_expect(f, 1, "PATCH");
    sent = json_loads(f->reqs[1].body, JSON_REJECT_DUPLICATES, &jerr);
    if (!sent)
        fail_msg("the body is not JSON: %s: %s", jerr.text, f->reqs[1].body);
    want = json_deep_copy(m5);
    json_object_set_new(want, "spec",
                        json_pack("{s:[{s:i}], s:s}", "ports", "port", 80, "note", "} \"{"));
    json_object_set_new(want, "data", json_pack("[i, f, n]", 1, 2.5));
    assert_true(json_equal(sent, want));
    json_decref(sent);
    json_decref(want);
    assert_string_equal(o.fence, "5");
    /* an older fence writes nothing, rest or not */
    rc = rf_kube_apply_fenced_rest(k, m4, rest, strlen(rest), NULL, "relfleet.io/fence", 4, &out,
                                   err, sizeof(err));
    assert_int_equal(rc, RF_ERR_FENCED);
    assert_null(out);
    assert_string_equal(o.fence, "5");
    /* no rest: the manifest alone, as rf_kube_apply_fenced */
    rc = rf_kube_apply_fenced_rest(k, m5, NULL, 0, NULL, "relfleet.io/fence", 5, &out, err,
                                   sizeof(err));
    assert_int_equal(rc, RF_OK);
    json_decref(out);
    sent = json_loads(f->reqs[fake_count(f) - 1].body, JSON_REJECT_DUPLICATES, &jerr);
    assert_non_null(sent);
    json_object_del(json_object_get(sent, "metadata"), "resourceVersion");
    assert_true(json_equal(sent, m5));
    json_decref(sent);
    json_decref(m5);
    json_decref(m4);
    rf_kube_destroy(k);
    fake_stop(f);
}

static void test_apply_fenced(void **state)
{
    fenced_obj_t o = {0, 10, ""};
    fake_t *f = fake_start(fenced_handler, &o, 0);
    rf_kube_t *k = client_for(f->url);
    json_t *m5 = fenced_manifest("5"), *m6 = fenced_manifest("6"), *m7 = fenced_manifest("7");
    json_t *out = NULL;
    char err[512];
    rf_err_t rc;
    int n;

    (void)state;
    /* Unknown object: read (404), then created without a precondition. */
    rc = rf_kube_apply_fenced(k, m5, NULL, "relfleet.io/fence", 5, &out, err, sizeof(err));
    if (rc != RF_OK)
        fail_msg("%s", err);
    json_decref(out);
    assert_int_equal(fake_count(f), 2);
    fenced_expect(f, 0, "GET");
    fenced_expect(f, 1, "PATCH");
    assert_null(json_object_get(json_object_get(m5, "metadata"), "resourceVersion"));

    /* Known from our own last answer (version 11): no GET, the version as precondition. */
    rc = rf_kube_apply_fenced(k, m6, NULL, "relfleet.io/fence", 6, &out, err, sizeof(err));
    if (rc != RF_OK)
        fail_msg("%s", err);
    json_decref(out);
    assert_int_equal(fake_count(f), 3);
    fenced_expect(f, 2, "PATCH@11");
    assert_string_equal(o.fence, "6");

    /* A newer fence wrote it since: the stale version conflicts, the read shows fence 7,
     * and the older holder writes nothing. */
    fenced_write(f, &o, "7");
    rc = rf_kube_apply_fenced(k, m6, NULL, "relfleet.io/fence", 6, &out, err, sizeof(err));
    assert_int_equal(rc, RF_ERR_FENCED);
    assert_null(out);
    assert_non_null(strstr(err, "newer fence 7 (ours 6)"));
    assert_int_equal(fake_count(f), 5);
    fenced_expect(f, 3, "PATCH@12");
    fenced_expect(f, 4, "GET");
    assert_string_equal(o.fence, "7");

    /* That object conflicted: it is read before each apply from now on. */
    rc = rf_kube_apply_fenced(k, m7, NULL, "relfleet.io/fence", 7, &out, err, sizeof(err));
    if (rc != RF_OK)
        fail_msg("%s", err);
    json_decref(out);
    assert_int_equal(fake_count(f), 7);
    fenced_expect(f, 5, "GET");
    fenced_expect(f, 6, "PATCH@13");

    /* A write of another writer between our read and our apply (same fence kept): 409,
     * read again, apply with the new version. */
    n = fake_count(f);
    fenced_write(f, &o, NULL);
    rc = rf_kube_apply_fenced(k, m7, NULL, "relfleet.io/fence", 7, &out, err, sizeof(err));
    if (rc != RF_OK)
        fail_msg("%s", err);
    json_decref(out);
    assert_int_equal(fake_count(f), n + 2);
    fenced_expect(f, n, "GET");
    fenced_expect(f, n + 1, "PATCH@15");

    /* Our own answer says an object carries a newer fence than ours: fenced, nothing sent. */
    rf_kube_destroy(k);
    k = client_for(f->url);
    o.exists = 0;
    rc = rf_kube_apply_fenced(k, m7, NULL, "relfleet.io/fence", 7, &out, err, sizeof(err));
    if (rc != RF_OK)
        fail_msg("%s", err);
    json_decref(out);
    n = fake_count(f);
    rc = rf_kube_apply_fenced(k, m5, NULL, "relfleet.io/fence", 5, &out, err, sizeof(err));
    assert_int_equal(rc, RF_ERR_FENCED);
    assert_int_equal(fake_count(f), n);
    assert_int_equal(rf_kube_requests(k), 2);

    json_decref(m5);
    json_decref(m6);
    json_decref(m7);
    rf_kube_destroy(k);
    fake_stop(f);
}

/* Objects by path; a Deployment's controller writes its status after each apply (its
 * resourceVersion moves once more after the answer). */
typedef struct kinds_fake {
    char paths[8][512];
    int rv[8];
    int n;
} kinds_fake_t;

static void kinds_handler(fake_t *f, const fake_req_t *req, int n, fake_resp_t *resp)
{
    kinds_fake_t *o = f->data;
    int deploy = strstr(req->path, "/deployments/") != NULL;
    const char *name = strrchr(req->path, '/') + 1;
    const char *want;
    json_t *body;
    int i;

    (void)n;
    for (i = 0; i < o->n && strcmp(o->paths[i], req->path) != 0; i++)
        ;
    if (strcmp(req->method, "GET") != 0) {
        body = json_loads(req->body, 0, NULL);
        want = json_string_value(
            json_object_get(json_object_get(body, "metadata"), "resourceVersion"));
        if (i < o->n && want && atoi(want) != o->rv[i]) {
            resp->status = 409;
            resp->body = status_body(409, "Conflict", "the object has been modified");
            json_decref(body);
            return;
        }
        json_decref(body);
        if (i == o->n) {
            snprintf(o->paths[o->n], sizeof(o->paths[0]), "%s", req->path);
            o->rv[o->n++] = 0;
        }
        o->rv[i]++;
    } else if (i == o->n) {
        resp->status = 404;
        resp->body = status_body(404, "NotFound", "not found");
        return;
    }
    resp->body = xprintf("{\"apiVersion\":\"%s\",\"kind\":\"%s\",\"metadata\":{\"name\":"
                         "\"%s\",\"namespace\":\"shop\",\"resourceVersion\":\"%d\","
                         "\"annotations\":{\"relfleet.io/fence\":\"5\"}}}",
                         deploy ? "apps/v1" : "v1", deploy ? "Deployment" : "Service", name,
                         o->rv[i]);
    if (deploy && strcmp(req->method, "GET") != 0)
        o->rv[i]++; /* the controller's status write */
}

static json_t *kinds_manifest(const char *kind, const char *name)
{
    return json_pack("{s:s, s:s, s:{s:s, s:s}}", "apiVersion",
                     strcmp(kind, "Deployment") == 0 ? "apps/v1" : "v1", "kind", kind,
                     "metadata", "name", name, "namespace", "shop");
}

/* Applies one object; expects the requests it made (methods and preconditions). */
static void kinds_apply(rf_kube_t *k, fake_t *f, const char *kind, const char *name,
                        const char *const *expect)
{
    json_t *m = kinds_manifest(kind, name), *out = NULL;
    int n = fake_count(f), i;
    char err[512];

    if (rf_kube_apply_fenced(k, m, NULL, "relfleet.io/fence", 5, &out, err, sizeof(err)) != RF_OK)
        fail_msg("%s %s: %s", kind, name, err);
    for (i = 0; expect[i]; i++)
        fenced_expect(f, n + i, expect[i]);
    assert_int_equal(fake_count(f), n + i);
    json_decref(out);
    json_decref(m);
}

#define KINDS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* A kind whose objects conflict as a rule (most applies from a remembered answer met a
 * 409, at least two) is read before each apply; a kind that does not keeps applying from
 * the last answer. */
static void test_apply_fenced_learns_kinds_written_by_others(void **state)
{
    kinds_fake_t o = {{{0}}, {0}, 0};
    fake_t *f = fake_start(kinds_handler, &o, 0);
    rf_kube_t *k = client_for(f->url);

    (void)state;
    kinds_apply(k, f, "Deployment", "a", KINDS("GET", "PATCH"));
    kinds_apply(k, f, "Deployment", "b", KINDS("GET", "PATCH"));
    kinds_apply(k, f, "Deployment", "c", KINDS("GET", "PATCH"));
    kinds_apply(k, f, "Service", "s", KINDS("GET", "PATCH"));
    /* The status writes moved a and b since our answers: a conflict each. */
    kinds_apply(k, f, "Deployment", "a", KINDS("PATCH@1", "GET", "PATCH@2"));
    kinds_apply(k, f, "Deployment", "b", KINDS("PATCH@1", "GET", "PATCH@2"));
    /* Two of two conflicted: c, never conflicted itself, is read first. */
    kinds_apply(k, f, "Deployment", "c", KINDS("GET", "PATCH@2"));
    /* Services still from the last answer. */
    kinds_apply(k, f, "Service", "s", KINDS("PATCH@1"));
    kinds_apply(k, f, "Service", "s", KINDS("PATCH@2"));
    rf_kube_destroy(k);
    fake_stop(f);
}

static void test_object_paths(void **state)
{
    static const struct {
        const char *json;
        const char *want; /* path, or a piece of the error */
        rf_err_t rc;
    } cases[] = {
        {"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"c\"}}",
         "/api/v1/namespaces/dflt/configmaps/c", RF_OK},
        {"{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"s\","
         "\"namespace\":\"x\"}}",
         "/api/v1/namespaces/x/secrets/s", RF_OK},
        {"{\"apiVersion\":\"v1\",\"kind\":\"ServiceAccount\",\"metadata\":{\"name\":\"sa\"}}",
         "/api/v1/namespaces/dflt/serviceaccounts/sa", RF_OK},
        {"{\"apiVersion\":\"networking.k8s.io/v1\",\"kind\":\"Ingress\",\"metadata\":{\"name\":"
         "\"i\"}}",
         "/apis/networking.k8s.io/v1/namespaces/dflt/ingresses/i", RF_OK},
        {"{\"apiVersion\":\"autoscaling/v2\",\"kind\":\"HorizontalPodAutoscaler\",\"metadata\":"
         "{\"name\":\"h\"}}",
         "/apis/autoscaling/v2/namespaces/dflt/horizontalpodautoscalers/h", RF_OK},
        {"{\"apiVersion\":\"policy/v1\",\"kind\":\"PodDisruptionBudget\",\"metadata\":{\"name\":"
         "\"p\"}}",
         "/apis/policy/v1/namespaces/dflt/poddisruptionbudgets/p", RF_OK},
        {"{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"n\","
         "\"namespace\":\"ignored\"}}",
         "/api/v1/namespaces/n", RF_OK},
        {"{\"apiVersion\":\"extensions/v1beta1\",\"kind\":\"Ingress\",\"metadata\":{\"name\":"
         "\"i\"}}",
         "unknown kind 'Ingress' of apiVersion 'extensions/v1beta1'", RF_ERR_PERM},
        {"{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"../etc\"}}",
         "bad or missing metadata.name", RF_ERR_PERM},
        {"{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{}}",
         "bad or missing metadata.name", RF_ERR_PERM},
        {"{\"kind\":\"Service\"}", "no apiVersion or kind", RF_ERR_PERM},
    };
    char path[256];
    char err[256];
    json_t *m;
    size_t i;
    rf_err_t rc;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        m = json_loads(cases[i].json, 0, NULL);
        assert_non_null(m);
        err[0] = '\0';
        rc = rf_kube_object_path(m, "dflt", path, sizeof(path), err, sizeof(err));
        if (rc != cases[i].rc)
            fail_msg("case %zu: rc %d (%s)", i, rc, err);
        if (rc == RF_OK)
            assert_string_equal(path, cases[i].want);
        else if (!strstr(err, cases[i].want))
            fail_msg("case %zu: '%s' lacks '%s'", i, err, cases[i].want);
        json_decref(m);
    }
}

static void status_handler(fake_t *f, const fake_req_t *req, int n, fake_resp_t *resp)
{
    (void)f;
    (void)n;
    if (strstr(req->path, "/invalid")) {
        resp->status = 422;
        resp->body = status_body(422, "Invalid",
                                 "Deployment.apps \\\"invalid\\\" is invalid: spec.replicas: "
                                 "Invalid value: -1: must be greater than or equal to 0");
    } else if (strstr(req->path, "/conflict")) {
        resp->status = 409;
        resp->body = status_body(409, "Conflict",
                                 "Apply failed with 1 conflict: conflict with \\\"kubectl\\\"");
    } else if (strstr(req->path, "/forbidden")) {
        resp->status = 403;
        resp->body = status_body(403, "Forbidden", "deployments.apps is forbidden: no");
    } else if (strstr(req->path, "/missing")) {
        resp->status = 404;
        resp->body = status_body(404, "NotFound", "deployments.apps \\\"missing\\\" not found");
    } else if (strstr(req->path, "/html")) {
        resp->status = 400;
        resp->body = xstrdup("<html>bad gateway thing</html>");
        resp->content_type = "text/html";
    }
}

static void test_status_errors(void **state)
{
    static const struct {
        const char *name;
        rf_err_t rc;
        const char *want;
    } cases[] = {
        {"invalid", RF_ERR_PERM,
         "PATCH '/apis/apps/v1/namespaces/shop/deployments/invalid?fieldManager=relfleet&force="
         "true': 422 Invalid: Deployment.apps \"invalid\" is invalid: spec.replicas"},
        {"conflict", RF_ERR_PERM, "409 Conflict: Apply failed with 1 conflict"},
        {"forbidden", RF_ERR_PERM, "403 Forbidden: deployments.apps is forbidden"},
        {"missing", RF_ERR_NOTFOUND, "404 NotFound: deployments.apps \"missing\" not found"},
        {"html", RF_ERR_PERM, "400: <html>bad gateway thing</html>"},
    };
    fake_t *f = fake_start(status_handler, NULL, 0);
    rf_kube_t *k = client_for(f->url);
    char err[512];
    json_t *dep;
    size_t i;
    rf_err_t rc;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        dep = json_pack("{s:s, s:s, s:{s:s, s:s}}", "apiVersion", "apps/v1", "kind", "Deployment",
                        "metadata", "name", cases[i].name, "namespace", "shop");
        err[0] = '\0';
        rc = rf_kube_apply(k, dep, NULL, NULL, err, sizeof(err));
        if (rc != cases[i].rc)
            fail_msg("%s: rc %d: %s", cases[i].name, rc, err);
        if (!strstr(err, cases[i].want))
            fail_msg("%s: '%s' lacks '%s'", cases[i].name, err, cases[i].want);
        json_decref(dep);
    }
    /* Permanent answers are not retried. */
    assert_int_equal(fake_count(f), (int)(sizeof(cases) / sizeof(cases[0])));
    rf_kube_destroy(k);
    fake_stop(f);
}

static void flaky_handler(fake_t *f, const fake_req_t *req, int n, fake_resp_t *resp)
{
    (void)f;
    if (strstr(req->path, "/always-down")) {
        resp->status = 500;
        resp->body = status_body(500, "InternalError", "etcdserver: request timed out");
    } else if (strstr(req->path, "/throttled")) {
        resp->status = 429;
        resp->body = status_body(429, "TooManyRequests", "please slow down");
        snprintf(resp->retry_after, sizeof(resp->retry_after), "120");
    } else if (n < 2) {
        resp->status = 503;
        resp->body = status_body(503, "ServiceUnavailable", "apiserver is shutting down");
    } else if (n == 2) {
        resp->status = 429;
        resp->body = status_body(429, "TooManyRequests", "please slow down");
        snprintf(resp->retry_after, sizeof(resp->retry_after), "1");
    } else {
        resp->body = xstrdup("{\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\"}}");
    }
}

static void test_retries(void **state)
{
    fake_t *f = fake_start(flaky_handler, NULL, 0);
    rf_kube_t *k = client_for(f->url);
    json_t *out = NULL;
    char err[512];
    int64_t t0;
    int64_t took;
    rf_err_t rc;

    (void)state;
    /* 503, 503, 429 with Retry-After: 1, then 200. */
    t0 = now_ms();
    rc = rf_kube_get(k, "/api/v1/namespaces/a/pods/p", &out, err, sizeof(err));
    took = now_ms() - t0;
    if (rc != RF_OK)
        fail_msg("%s", err);
    assert_int_equal(fake_count(f), 4);
    assert_true(took >= 950); /* the Retry-After second was honoured */
    assert_true(took < 5000);
    assert_string_equal(json_string_value(json_object_get(out, "kind")), "Pod");
    json_decref(out);

    /* 5xx until the budget is spent. */
    rc = rf_kube_get(k, "/api/v1/namespaces/a/pods/always-down", &out, err, sizeof(err));
    assert_int_equal(rc, RF_ERR_RETRY);
    assert_null(out);
    assert_non_null(strstr(err, "GET '/api/v1/namespaces/a/pods/always-down': 500 "
                                "InternalError: etcdserver: request timed out (after 4 tries)"));
    assert_int_equal(fake_count(f), 8);

    /* A Retry-After beyond the budget's longest wait: give back at once. */
    t0 = now_ms();
    rc = rf_kube_get(k, "/api/v1/namespaces/a/pods/throttled", &out, err, sizeof(err));
    assert_int_equal(rc, RF_ERR_RETRY);
    assert_non_null(strstr(err, "429 TooManyRequests: please slow down"));
    assert_non_null(strstr(err, "retry after 120 s"));
    assert_int_equal(fake_count(f), 9);
    assert_true(now_ms() - t0 < 1000);

    rf_kube_destroy(k);
    fake_stop(f);
}

static void test_connection_refused(void **state)
{
    rf_kube_t *k;
    json_t *out = NULL;
    char err[512];
    fake_t *f = fake_start(apply_handler, NULL, 0);
    char url[64];

    (void)state;
    /* A port that was just free: stop the server and keep its address. */
    snprintf(url, sizeof(url), "%s", f->url);
    fake_stop(f);
    k = client_for(url);
    rf_kube_set_retry(k, 3, 1, 5);
    assert_int_equal(rf_kube_get(k, "/api/v1/namespaces", &out, err, sizeof(err)), RF_ERR_RETRY);
    assert_non_null(strstr(err, "GET '/api/v1/namespaces': "));
    assert_non_null(strstr(err, "(after 3 tries)"));
    rf_kube_destroy(k);
}

static void misc_handler(fake_t *f, const fake_req_t *req, int n, fake_resp_t *resp)
{
    (void)f;
    (void)n;
    if (strstr(req->path, "/log")) {
        resp->body = xstrdup("line 1\nline 2\n");
        resp->content_type = "text/plain";
    } else if (strcmp(req->path, "/api/v1/pods") == 0 && !strstr(req->query, "continue=")) {
        resp->body = xstrdup("{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":"
                             "{\"resourceVersion\":\"10\",\"continue\":\"page2\"},"
                             "\"items\":[{\"metadata\":{\"name\":\"a\"}}]}");
    } else if (strcmp(req->path, "/api/v1/pods") == 0) {
        resp->body = xstrdup("{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":"
                             "{\"resourceVersion\":\"10\"},"
                             "\"items\":[{\"metadata\":{\"name\":\"b\"}}]}");
    } else {
        resp->body = xstrdup("{\"kind\":\"Status\",\"status\":\"Success\"}");
    }
}

static void test_list_logs_patch_delete(void **state)
{
    fake_t *f = fake_start(misc_handler, NULL, 0);
    rf_kube_t *k = client_for(f->url);
    json_t *out = NULL;
    json_t *patch = json_pack("{s:{s:i}}", "spec", "replicas", 0);
    char *text = NULL;
    char err[512];

    (void)state;
    assert_int_equal(
        rf_kube_list(k, "/api/v1/pods?labelSelector=app%3Dweb", &out, err, sizeof(err)), RF_OK);
    assert_int_equal(fake_count(f), 2);
    assert_true(query_has(&f->reqs[0], "labelSelector=app=web"));
    assert_true(query_has(&f->reqs[0], "limit=500"));
    assert_true(query_has(&f->reqs[1], "continue=page2"));
    assert_true(query_has(&f->reqs[1], "labelSelector=app=web"));
    assert_int_equal(json_array_size(json_object_get(out, "items")), 2);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(out, "items"), 1), "kind")),
                        "Pod");
    assert_null(json_object_get(json_object_get(out, "metadata"), "continue"));
    json_decref(out);

    assert_int_equal(rf_kube_pod_logs(k, "shop", "web-1", "app", 50, &text, err, sizeof(err)),
                     RF_OK);
    assert_string_equal(text, "line 1\nline 2\n");
    free(text);
    assert_string_equal(f->reqs[2].path, "/api/v1/namespaces/shop/pods/web-1/log");
    assert_true(query_has(&f->reqs[2], "tailLines=50"));
    assert_true(query_has(&f->reqs[2], "container=app"));

    assert_int_equal(rf_kube_merge_patch(k, "/apis/apps/v1/namespaces/shop/deployments/web", patch,
                                         NULL, err, sizeof(err)),
                     RF_OK);
    assert_string_equal(f->reqs[3].method, "PATCH");
    assert_string_equal(f->reqs[3].content_type, "application/merge-patch+json");
    assert_string_equal(f->reqs[3].body, "{\"spec\":{\"replicas\":0}}");

    assert_int_equal(
        rf_kube_delete(k, "/api/v1/namespaces/shop/services/web", NULL, err, sizeof(err)), RF_OK);
    assert_string_equal(f->reqs[4].method, "DELETE");
    assert_true(query_has(&f->reqs[4], "propagationPolicy=Background"));

    json_decref(patch);
    rf_kube_destroy(k);
    fake_stop(f);
}

static void token_handler(fake_t *f, const fake_req_t *req, int n, fake_resp_t *resp)
{
    (void)f;
    (void)req;
    (void)n;
    resp->body = xstrdup("{}");
}

/* A rotated token file is picked up by the next request. */
static void test_token_file_rotation(void **state)
{
    fake_t *f = fake_start(token_handler, NULL, 0);
    char dir[] = "/tmp/rf-kube-token-XXXXXX";
    char path[128];
    char cmd[160];
    rf_kubeconfig_t cfg;
    rf_kube_t *k;
    json_t *out = NULL;
    char err[256];
    FILE *tf;
    struct timespec times[2];

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/token", dir);
    tf = fopen(path, "w");
    fputs("first\n", tf);
    fclose(tf);
    memset(&cfg, 0, sizeof(cfg));
    cfg.server = f->url;
    cfg.token = (char *)"first";
    cfg.token_file = path;
    k = rf_kube_new(&cfg, err, sizeof(err));
    assert_non_null(k);
    assert_int_equal(rf_kube_get(k, "/api", &out, err, sizeof(err)), RF_OK);
    json_decref(out);
    assert_string_equal(f->reqs[0].auth, "Bearer first");
    tf = fopen(path, "w");
    fputs("second\n", tf);
    fclose(tf);
    /* A distinct mtime even on coarse file systems. */
    clock_gettime(CLOCK_REALTIME, &times[0]);
    times[0].tv_sec += 5;
    times[1] = times[0];
    assert_int_equal(utimensat(AT_FDCWD, path, times, 0), 0);
    assert_int_equal(rf_kube_get(k, "/api", &out, err, sizeof(err)), RF_OK);
    json_decref(out);
    assert_string_equal(f->reqs[1].auth, "Bearer second");
    rf_kube_destroy(k);
    fake_stop(f);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* ---- TLS ---- */

static char *write_kubeconfig(const char *dir, const char *server, const char *cluster_extra,
                              const char *user)
{
    char *path = xprintf("%s/config", dir);
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fprintf(f,
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
            "clusters:\n- name: k\n  cluster:\n    server: %s\n%s"
            "users:\n- name: u\n  user:\n%s"
            "contexts:\n- name: c\n  context:\n    cluster: k\n    user: u\n",
            server, cluster_extra, user);
    fclose(f);
    return path;
}

static void test_tls(void **state)
{
    fake_t *f;
    char dir[] = "/tmp/rf-kube-tls-XXXXXX";
    char *cfg_path;
    char *extra;
    char *user;
    char cmd[160];
    rf_kubeconfig_t *cfg;
    rf_kube_t *k;
    json_t *out = NULL;
    char err[512];
    rf_err_t rc;

    (void)state;
    if (!MHD_is_feature_supported(MHD_FEATURE_TLS))
        skip();
    f = fake_start(token_handler, NULL, 1);
    assert_non_null(mkdtemp(dir));

    /* CA as a file, client certificate and key as files: verified both ways. */
    extra = xprintf("    certificate-authority: %s/pki/ca.crt\n", FIXTURES);
    user = xprintf("    client-certificate: %s/pki/client.crt\n    client-key: %s/pki/client.key\n",
                   FIXTURES, FIXTURES);
    cfg_path = write_kubeconfig(dir, f->url, extra, user);
    cfg = rf_kubeconfig_load(cfg_path, NULL, err, sizeof(err));
    if (!cfg)
        fail_msg("%s", err);
    k = rf_kube_new(cfg, err, sizeof(err));
    rf_kubeconfig_destroy(cfg);
    rc = rf_kube_get(k, "/version", &out, err, sizeof(err));
    if (rc != RF_OK)
        fail_msg("%s", err);
    json_decref(out);
    assert_true(f->reqs[0].peer_certs >= 1); /* OpenSSL may add the CA to the chain */
    assert_string_equal(f->reqs[0].auth, "");
    rf_kube_destroy(k);
    free(extra);
    free(user);
    free(cfg_path);

    /* Another CA: the server is refused, permanently. */
    extra = xprintf("    certificate-authority: %s/pki/other-ca.crt\n", FIXTURES);
    cfg_path = write_kubeconfig(dir, f->url, extra, "    token: abc\n");
    cfg = rf_kubeconfig_load(cfg_path, NULL, err, sizeof(err));
    assert_non_null(cfg);
    k = rf_kube_new(cfg, err, sizeof(err));
    rf_kubeconfig_destroy(cfg);
    rc = rf_kube_get(k, "/version", &out, err, sizeof(err));
    assert_int_equal(rc, RF_ERR_PERM);
    assert_non_null(strstr(err, "GET '/version': "));
    assert_non_null(strstr(err, "certificate"));
    assert_int_equal(fake_count(f), 1);
    rf_kube_destroy(k);
    free(extra);
    free(cfg_path);

    /* Explicitly insecure, with a token. */
    cfg_path =
        write_kubeconfig(dir, f->url, "    insecure-skip-tls-verify: true\n", "    token: abc\n");
    cfg = rf_kubeconfig_load(cfg_path, NULL, err, sizeof(err));
    assert_non_null(cfg);
    k = rf_kube_new(cfg, err, sizeof(err));
    rf_kubeconfig_destroy(cfg);
    rc = rf_kube_get(k, "/version", &out, err, sizeof(err));
    if (rc != RF_OK)
        fail_msg("%s", err);
    json_decref(out);
    assert_string_equal(f->reqs[1].auth, "Bearer abc");
    assert_int_equal(f->reqs[1].peer_certs, 0);
    rf_kube_destroy(k);
    free(cfg_path);

    fake_stop(f);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* ---- watches ---- */

typedef struct seen {
    int n;
    rf_watch_type_t type[64];
    char name[64][32];
    char rv[64][16];
    int code[64];
    int destroy_after_synced;
    int destroyed;
} seen_t;

static void record_cb(rf_kube_watch_t *w, const rf_watch_event_t *ev, void *opaque)
{
    seen_t *s = opaque;
    json_t *meta = json_object_get(ev->object, "metadata");
    const char *name = json_string_value(json_object_get(meta, "name"));
    const char *rv = json_string_value(json_object_get(meta, "resourceVersion"));

    if (s->n >= 64)
        return;
    s->type[s->n] = ev->type;
    snprintf(s->name[s->n], sizeof(s->name[0]), "%s", name ? name : "");
    snprintf(s->rv[s->n], sizeof(s->rv[0]), "%s", rv ? rv : "");
    s->code[s->n] = ev->code;
    s->n++;
    if (ev->type == RF_WATCH_SYNCED && s->destroy_after_synced) {
        rf_kube_watch_destroy(w);
        s->destroyed = 1;
    }
}

#define ITEM(name, rv) "{\"metadata\":{\"name\":\"" name "\",\"resourceVersion\":\"" rv "\"}}"
#define WEV(type, name, rv)                                                                        \
    "{\"type\":\"" type "\",\"object\":{\"kind\":\"Deployment\",\"metadata\":{\"name\":\"" name    \
    "\",\"resourceVersion\":\"" rv "\"}}}\n"

static void watch_handler(fake_t *f, const fake_req_t *req, int n, fake_resp_t *resp)
{
    (void)f;
    (void)req;
    switch (n) {
    case 0: /* list */
        resp->body = xstrdup("{\"kind\":\"DeploymentList\",\"apiVersion\":\"apps/v1\","
                             "\"metadata\":{\"resourceVersion\":\"100\"},\"items\":[" ITEM(
                                 "a", "90") "," ITEM("b", "95") "]}");
        break;
    case 1: /* watch from 100: an event split in two chunks, then two in one chunk */
        resp->stream[0] = "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Deployment\",\"meta";
        resp->stream[1] = "data\":{\"name\":\"c\",\"resourceVersion\":\"101\"}}}\n";
        resp->stream[2] = WEV("MODIFIED", "a", "102") WEV("BOOKMARK", "", "103");
        break;
    case 2: /* watch from 103: too old */
        resp->stream[0] = "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":"
                          "\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"too old "
                          "resource version: 103 (150)\",\"reason\":\"Expired\",\"code\":410}}\n";
        break;
    case 3: /* relist */
        resp->body =
            xstrdup("{\"kind\":\"DeploymentList\",\"apiVersion\":\"apps/v1\","
                    "\"metadata\":{\"resourceVersion\":\"200\"},\"items\":[" ITEM("a", "160") "]}");
        break;
    default: /* quiet watches */
        resp->stream[0] = "\n";
        break;
    }
}

static void test_watch_reconnect_and_relist(void **state)
{
    static const struct {
        rf_watch_type_t type;
        const char *name;
    } want[] = {
        {RF_WATCH_SYNC, "a"},   {RF_WATCH_SYNC, "b"},     {RF_WATCH_SYNCED, ""},
        {RF_WATCH_ADDED, "c"},  {RF_WATCH_MODIFIED, "a"}, {RF_WATCH_BOOKMARK, ""},
        {RF_WATCH_EXPIRED, ""}, {RF_WATCH_SYNC, "a"},     {RF_WATCH_SYNCED, ""},
    };
    fake_t *f = fake_start(watch_handler, NULL, 0);
    rf_kube_t *k = client_for(f->url);
    rf_kube_multi_t *m = rf_kube_multi_new();
    seen_t seen;
    rf_kube_watch_t *w;
    char err[256];
    int64_t deadline = now_ms() + 10000;
    size_t i;

    (void)state;
    memset(&seen, 0, sizeof(seen));
    w = rf_kube_watch_new(m, k, "/apis/apps/v1/deployments?labelSelector=relfleet%2Fservice",
                          record_cb, &seen, err, sizeof(err));
    assert_non_null(w);
    rf_kube_watch_set_timeout(w, 60);
    while (seen.n < 9 && now_ms() < deadline)
        rf_kube_multi_poll(m, 200);
    for (i = 0; i < sizeof(want) / sizeof(want[0]) && i < (size_t)seen.n; i++) {
        if (seen.type[i] != want[i].type || strcmp(seen.name[i], want[i].name) != 0)
            fail_msg("event %zu: %s '%s', want %s '%s'", i, rf_watch_type_name(seen.type[i]),
                     seen.name[i], rf_watch_type_name(want[i].type), want[i].name);
    }
    assert_int_equal(seen.n, 9);
    assert_string_equal(seen.rv[0], "90");
    assert_string_equal(seen.rv[5], "103");
    assert_int_equal(seen.code[6], 410);
    assert_string_equal(rf_kube_watch_resource_version(w), "200");

    pthread_mutex_lock(&f->lock);
    assert_true(f->nreq >= 4);
    /* list */
    assert_string_equal(f->reqs[0].path, "/apis/apps/v1/deployments");
    assert_true(query_has(&f->reqs[0], "labelSelector=relfleet/service"));
    assert_true(query_has(&f->reqs[0], "limit=500"));
    assert_null(strstr(f->reqs[0].query, "watch"));
    /* watch from the list's resourceVersion */
    assert_true(query_has(&f->reqs[1], "watch=1"));
    assert_true(query_has(&f->reqs[1], "resourceVersion=100"));
    assert_true(query_has(&f->reqs[1], "allowWatchBookmarks=true"));
    assert_true(query_has(&f->reqs[1], "timeoutSeconds=60"));
    assert_true(query_has(&f->reqs[1], "labelSelector=relfleet/service"));
    assert_string_equal(f->reqs[1].auth, "Bearer t0ken");
    /* the stream ended: reconnect from the last resourceVersion seen (the bookmark's) */
    assert_true(query_has(&f->reqs[2], "watch=1"));
    assert_true(query_has(&f->reqs[2], "resourceVersion=103"));
    /* 410: list again */
    assert_null(strstr(f->reqs[3].query, "watch"));
    assert_true(query_has(&f->reqs[3], "limit=500"));
    pthread_mutex_unlock(&f->lock);

    rf_kube_multi_destroy(m);
    rf_kube_destroy(k);
    fake_stop(f);
}

static void paged_handler(fake_t *f, const fake_req_t *req, int n, fake_resp_t *resp)
{
    (void)f;
    (void)req;
    switch (n) {
    case 0:
        resp->status = 500;
        resp->body = status_body(500, "InternalError", "etcdserver: leader changed");
        break;
    case 1:
        resp->body = xstrdup("{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":"
                             "{\"resourceVersion\":\"300\",\"continue\":\"tok/1\"},"
                             "\"items\":[" ITEM("p1", "1") "]}");
        break;
    case 2:
        resp->body = xstrdup("{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":"
                             "{\"resourceVersion\":\"300\"},\"items\":[" ITEM("p2", "2") "]}");
        break;
    default:
        resp->stream[0] = "\n";
        break;
    }
}

/* A failed list is reported and retried; pages are followed; a callback may destroy its own
 * watch. */
static void test_watch_list_error_and_pages(void **state)
{
    fake_t *f = fake_start(paged_handler, NULL, 0);
    rf_kube_t *k = client_for(f->url);
    rf_kube_multi_t *m = rf_kube_multi_new();
    seen_t seen;
    rf_kube_watch_t *w;
    char err[256];
    int64_t deadline = now_ms() + 10000;

    (void)state;
    memset(&seen, 0, sizeof(seen));
    seen.destroy_after_synced = 1;
    assert_null(rf_kube_watch_new(m, k, "/apis/apps/v1/deployments?watch=1", record_cb, &seen, err,
                                  sizeof(err)));
    assert_non_null(strstr(err, "not a collection path"));
    w = rf_kube_watch_new(m, k, "/api/v1/namespaces/shop/pods", record_cb, &seen, err, sizeof(err));
    assert_non_null(w);
    rf_kube_watch_set_page_size(w, 1);
    while (!seen.destroyed && now_ms() < deadline)
        rf_kube_multi_poll(m, 200);
    assert_int_equal(seen.destroyed, 1);
    assert_int_equal(seen.n, 4);
    assert_int_equal(seen.type[0], RF_WATCH_ERROR);
    assert_int_equal(seen.code[0], 500);
    assert_int_equal(seen.type[1], RF_WATCH_SYNC);
    assert_string_equal(seen.name[1], "p1");
    assert_int_equal(seen.type[2], RF_WATCH_SYNC);
    assert_string_equal(seen.name[2], "p2");
    assert_int_equal(seen.type[3], RF_WATCH_SYNCED);
    pthread_mutex_lock(&f->lock);
    assert_int_equal(f->nreq, 3);
    assert_true(query_has(&f->reqs[1], "limit=1"));
    assert_true(query_has(&f->reqs[2], "limit=1"));
    assert_true(query_has(&f->reqs[2], "continue=tok/1"));
    pthread_mutex_unlock(&f->lock);
    /* The watch is gone: polling sends nothing more. */
    rf_kube_multi_poll(m, 50);
    assert_int_equal(fake_count(f), 3);

    rf_kube_multi_destroy(m);
    rf_kube_destroy(k);
    fake_stop(f);
}

/* rf_kube_multi_poll_fd returns as soon as the extra descriptor is readable, with or
 * without watches, and waits out its timeout when it is not. */
static void test_multi_poll_returns_on_the_extra_fd(void **state)
{
    rf_kube_multi_t *m = rf_kube_multi_new();
    int fds[2];
    int64_t t0;

    (void)state;
    assert_int_equal(pipe(fds), 0);
    t0 = now_ms();
    assert_int_equal(rf_kube_multi_poll_fd(m, 60, fds[0]), 0);
    assert_true(now_ms() - t0 >= 55); /* nothing readable: the whole timeout */
    assert_int_equal(write(fds[1], "1", 1), 1);
    t0 = now_ms();
    assert_int_equal(rf_kube_multi_poll_fd(m, 30000, fds[0]), 0);
    assert_true(now_ms() - t0 < 15000); /* readable: at once, not after 30 s */
    close(fds[0]);
    close(fds[1]);
    rf_kube_multi_destroy(m);
}

static void mixed_handler(fake_t *f, const fake_req_t *req, int n, fake_resp_t *resp)
{
    (void)f;
    (void)n;
    if (query_has(req, "watch=1"))
        resp->stream[0] = WEV("MODIFIED", "d", "7");
    else if (strcmp(req->path, "/apis/apps/v1/deployments") == 0)
        resp->body = xstrdup("{\"kind\":\"DeploymentList\",\"apiVersion\":\"apps/v1\","
                             "\"metadata\":{\"resourceVersion\":\"5\"},\"items\":[]}");
    else
        resp->body = xstrdup("{\"kind\":\"APIVersions\"}");
}

typedef struct getter {
    rf_kube_t *k;
    int failures;
} getter_t;

static void *getter_main(void *arg)
{
    getter_t *g = arg;
    json_t *out;
    char err[256];
    int i;

    for (i = 0; i < 25; i++) {
        out = NULL;
        if (rf_kube_get(g->k, "/api", &out, err, sizeof(err)) != RF_OK)
            g->failures++;
        json_decref(out);
    }
    return NULL;
}

/* One client serves a running watch and requests from several threads at once: the share
 * handle's connection cache, DNS and TLS sessions are locked. */
static void test_watch_and_threads_share_client(void **state)
{
    fake_t *f = fake_start(mixed_handler, NULL, 0);
    rf_kube_t *k = client_for(f->url);
    rf_kube_multi_t *m = rf_kube_multi_new();
    seen_t seen;
    pthread_t threads[4];
    getter_t getters[4];
    char err[256];
    int64_t deadline = now_ms() + 10000;
    int i;

    (void)state;
    memset(&seen, 0, sizeof(seen));
    assert_non_null(
        rf_kube_watch_new(m, k, "/apis/apps/v1/deployments", record_cb, &seen, err, sizeof(err)));
    for (i = 0; i < 4; i++) {
        getters[i].k = k;
        getters[i].failures = 0;
        assert_int_equal(pthread_create(&threads[i], NULL, getter_main, &getters[i]), 0);
    }
    while (seen.n < 4 && now_ms() < deadline)
        rf_kube_multi_poll(m, 100);
    for (i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(getters[i].failures, 0);
    }
    assert_true(seen.n >= 4);
    assert_int_equal(seen.type[0], RF_WATCH_SYNCED);
    assert_int_equal(seen.type[1], RF_WATCH_MODIFIED);
    assert_string_equal(seen.name[1], "d");
    rf_kube_multi_destroy(m);
    rf_kube_destroy(k);
    fake_stop(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apply_request),
        cmocka_unit_test(test_apply_fenced),
        cmocka_unit_test(test_apply_fenced_answer_is_slim),
        cmocka_unit_test(test_apply_fenced_rest_body),
        cmocka_unit_test(test_apply_fenced_broken_answer),
        cmocka_unit_test(test_apply_fenced_learns_kinds_written_by_others),
        cmocka_unit_test(test_object_paths),
        cmocka_unit_test(test_status_errors),
        cmocka_unit_test(test_retries),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_list_logs_patch_delete),
        cmocka_unit_test(test_token_file_rotation),
        cmocka_unit_test(test_tls),
        cmocka_unit_test(test_watch_reconnect_and_relist),
        cmocka_unit_test(test_watch_list_error_and_pages),
        cmocka_unit_test(test_multi_poll_returns_on_the_extra_fd),
        cmocka_unit_test(test_watch_and_threads_share_client),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
