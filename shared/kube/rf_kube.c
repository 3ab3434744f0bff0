/* Kubernetes API client: one share handle per cluster, retried requests, list+watch informers. */
#include "rf_kube.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "rf_buf.h"
#include "rf_json.h"
#include "rf_jtext.h"
#include "rf_log.h"
#include "rf_metrics.h"

#define KUBE_MAX_RESPONSE ((size_t)256 << 20) /* a List of every Pod of a big cluster */
#define KUBE_MAX_ERROR_BODY ((size_t)64 << 10)
#define KUBE_LOG_LIMIT_BYTES (1 << 20)
#define KUBE_USER_AGENT "relfleet/0.1"
#define KUBE_PAGE_SIZE 500
#define WATCH_DEFAULT_TIMEOUT_S 300
#define WATCH_BACKOFF_BASE_MS 250
#define WATCH_BACKOFF_MAX_MS 30000
#define WATCH_MIN_HEALTHY_MS 1000 /* a watch that ends sooner without events is backed off */
#define KUBE_EASY_POOL 16            /* idle easy handles kept for reuse */
#define KUBE_FENCE_CACHE_MAX 4096    /* objects whose last apply answer is remembered */
#define KUBE_FENCED_MAX_CONFLICTS 8
#define KUBE_FENCE_KINDS_MAX 256     /* kinds whose conflicts are counted */

struct rf_kube {
    char *server;
    char *namespace;
    char *ca_pem;
    size_t ca_pem_len;
    char *cert_pem;
    size_t cert_pem_len;
    char *key_pem;
    size_t key_pem_len;
    char *username;
    char *password;
    char *proxy_url;
    int insecure;

    pthread_mutex_t token_lock; /* token, token_mtime, rng */
    char *token;
    char *token_file;
    struct timespec token_mtime;
    uint64_t rng;

    CURLSH *share;
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];

    int max_attempts;
    int base_ms;
    int max_ms;
    long connect_ms;
    long request_ms;

    /* Idle easy handles: a new one per request costs an internal multi handle, a
     * socketpair and their teardown. */
    pthread_mutex_t pool_lock;
    CURL *pool[KUBE_EASY_POOL];
    int npool;

    /* rf_kube_apply_fenced: path -> [resourceVersion, fence, stale] of the last answer;
     * "<apiVersion> <kind>" -> [applies from a remembered answer that went through, that
     * met a 409] (fence_kinds). */
    pthread_mutex_t fence_lock;
    json_t *fence_cache;
    json_t *fence_kinds;
    unsigned long requests;
    rf_metric_t *request_seconds; /* relfleet_kube_request_seconds{method} */
};

/* ---- small helpers ---- */

static int64_t kube_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void kube_sleep_ms(long ms)
{
    struct timespec ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static char *kube_strdup(const char *s)
{
    char *p;

    if (!s)
        return NULL;
    p = strdup(s);
    if (!p)
        abort();
    return p;
}

static char *kube_memdup(const char *s, size_t len)
{
    char *p;

    if (!s)
        return NULL;
    p = malloc(len + 1);
    if (!p)
        abort();
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

static void kube_free_secret(char *s, size_t len)
{
    if (!s)
        return;
    explicit_bzero(s, len);
    free(s);
}

/* xorshift64*: jitter only, not security. */
static uint64_t kube_rng_next(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t kube_rng_seed(const void *salt)
{
    struct timespec ts;
    uint64_t s;

    clock_gettime(CLOCK_REALTIME, &ts);
    s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid() ^
        (uint64_t)(uintptr_t)salt;
    return s ? s : 0x9E3779B97F4A7C15ULL;
}

/* Full jitter: uniform in [0, min(max_ms, base_ms * 2^attempt)). */
static long kube_backoff_ms(uint64_t *rng, int attempt, int base_ms, int max_ms)
{
    uint64_t cap = (uint64_t)(base_ms > 0 ? base_ms : 1);
    int i;

    for (i = 0; i < attempt && cap < (uint64_t)max_ms; i++)
        cap *= 2;
    if (cap > (uint64_t)max_ms)
        cap = (uint64_t)max_ms;
    if (cap == 0)
        return 0;
    return (long)(kube_rng_next(rng) % cap);
}

/* ---- client ---- */

static void kube_share_lock(CURL *handle, curl_lock_data data, curl_lock_access access,
                            void *userptr)
{
    rf_kube_t *k = userptr;

    (void)handle;
    (void)access;
    if ((int)data >= 0 && data < CURL_LOCK_DATA_LAST)
        pthread_mutex_lock(&k->share_locks[data]);
}

static void kube_share_unlock(CURL *handle, curl_lock_data data, void *userptr)
{
    rf_kube_t *k = userptr;

    (void)handle;
    if ((int)data >= 0 && data < CURL_LOCK_DATA_LAST)
        pthread_mutex_unlock(&k->share_locks[data]);
}

static pthread_once_t kube_curl_once = PTHREAD_ONCE_INIT;

static void kube_curl_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Fine below 25 ms: ops/bench figure 2 reads the round trips' p50 and p99. */
static const double kube_request_bounds[] = {0.00025, 0.0005, 0.001, 0.0015, 0.002, 0.003,
                                             0.004,   0.005,  0.006, 0.008,  0.010, 0.012,
                                             0.015,   0.020,  0.025, 0.050,  0.1,   0.25,
                                             1,       5,      30};

rf_kube_t *rf_kube_new(const rf_kubeconfig_t *cfg, char *errstr, size_t errstr_size)
{
    rf_kube_t *k;
    int i;

    if (!cfg || !cfg->server) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot create kubernetes client: no server");
        return NULL;
    }
    pthread_once(&kube_curl_once, kube_curl_init);
    k = calloc(1, sizeof(*k));
    if (!k)
        abort();
    k->server = kube_strdup(cfg->server);
    k->namespace = kube_strdup(cfg->namespace ? cfg->namespace : "default");
    k->ca_pem = kube_memdup(cfg->ca_pem, cfg->ca_pem_len);
    k->ca_pem_len = cfg->ca_pem_len;
    k->cert_pem = kube_memdup(cfg->cert_pem, cfg->cert_pem_len);
    k->cert_pem_len = cfg->cert_pem_len;
    k->key_pem = kube_memdup(cfg->key_pem, cfg->key_pem_len);
    k->key_pem_len = cfg->key_pem_len;
    k->username = kube_strdup(cfg->username);
    k->password = kube_strdup(cfg->password);
    k->proxy_url = kube_strdup(cfg->proxy_url);
    k->insecure = cfg->insecure_skip_tls_verify;
    k->token = kube_strdup(cfg->token);
    k->token_file = kube_strdup(cfg->token_file);
    pthread_mutex_init(&k->token_lock, NULL);
    pthread_mutex_init(&k->pool_lock, NULL);
    pthread_mutex_init(&k->fence_lock, NULL);
    k->fence_cache = json_object();
    k->fence_kinds = json_object();
    k->request_seconds = rf_metrics_histogram(
        "relfleet_kube_request_seconds",
        "API requests (not watches) and their time, retries included, by method",
        "method", kube_request_bounds, sizeof(kube_request_bounds) / sizeof(kube_request_bounds[0]));
    k->rng = kube_rng_seed(k);
    for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&k->share_locks[i], NULL);
    k->max_attempts = 5;
    k->base_ms = 200;
    k->max_ms = 5000;
    k->connect_ms = 10000;
    k->request_ms = 30000;

    k->share = curl_share_init();
    if (!k->share) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size,
                "cannot create kubernetes client for '%s': "
                "curl_share_init failed",
                cfg->server);
        rf_kube_destroy(k);
        return NULL;
    }
    curl_share_setopt(k->share, CURLSHOPT_LOCKFUNC, kube_share_lock);
    curl_share_setopt(k->share, CURLSHOPT_UNLOCKFUNC, kube_share_unlock);
    curl_share_setopt(k->share, CURLSHOPT_USERDATA, k);
    curl_share_setopt(k->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(k->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_share_setopt(k->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    return k;
}

void rf_kube_destroy(rf_kube_t *k)
{
    int i;

    if (!k)
        return;
    for (i = 0; i < k->npool; i++)
        curl_easy_cleanup(k->pool[i]);
    if (k->share && curl_share_cleanup(k->share) != CURLSHE_OK)
        rf_log_error("kubernetes client for '%s' destroyed while a watch still uses it", k->server);
    for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&k->share_locks[i]);
    pthread_mutex_destroy(&k->token_lock);
    pthread_mutex_destroy(&k->pool_lock);
    pthread_mutex_destroy(&k->fence_lock);
    json_decref(k->fence_cache);
    json_decref(k->fence_kinds);
    free(k->server);
    free(k->namespace);
    free(k->ca_pem);
    free(k->cert_pem);
    kube_free_secret(k->key_pem, k->key_pem_len);
    free(k->username);
    kube_free_secret(k->password, k->password ? strlen(k->password) : 0);
    free(k->proxy_url);
    kube_free_secret(k->token, k->token ? strlen(k->token) : 0);
    free(k->token_file);
    free(k);
}

void rf_kube_set_retry(rf_kube_t *k, int max_attempts, int base_ms, int max_ms)
{
    k->max_attempts = max_attempts >= 1 ? max_attempts : 1;
    k->base_ms = base_ms >= 0 ? base_ms : 0;
    k->max_ms = max_ms >= k->base_ms ? max_ms : k->base_ms;
}

void rf_kube_set_timeouts(rf_kube_t *k, long connect_ms, long request_ms)
{
    k->connect_ms = connect_ms > 0 ? connect_ms : 10000;
    k->request_ms = request_ms > 0 ? request_ms : 0;
}

const char *rf_kube_namespace(const rf_kube_t *k)
{
    return k->namespace;
}

/* The "Authorization: Bearer" header line for the current token (free() it), re-reading the
 * token file when it changed (projected service account tokens rotate), or NULL. */
static char *kube_auth_header(rf_kube_t *k)
{
    rf_buf_t line = RF_BUF_INIT;
    struct stat st;
    FILE *f;
    char tok[8192];
    size_t n;
    char *result = NULL;

    pthread_mutex_lock(&k->token_lock);
    if (k->token_file && stat(k->token_file, &st) == 0 &&
        (st.st_mtim.tv_sec != k->token_mtime.tv_sec ||
         st.st_mtim.tv_nsec != k->token_mtime.tv_nsec)) {
        f = fopen(k->token_file, "r");
        if (f) {
            n = fread(tok, 1, sizeof(tok) - 1, f);
            fclose(f);
            while (n > 0 && (tok[n - 1] == '\n' || tok[n - 1] == '\r' || tok[n - 1] == ' '))
                n--;
            tok[n] = '\0';
            if (n > 0) {
                kube_free_secret(k->token, strlen(k->token ? k->token : ""));
                k->token = kube_strdup(tok);
                k->token_mtime = st.st_mtim;
            }
            explicit_bzero(tok, sizeof(tok));
        }
    }
    if (k->token) {
        rf_buf_addf(&line, "Authorization: Bearer %s", k->token);
        result = rf_buf_detach(&line);
    }
    pthread_mutex_unlock(&k->token_lock);
    return result;
}

static size_t kube_write_buf(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    rf_buf_t *buf = userdata;

    if (rf_buf_add(buf, ptr, size * nmemb) != 0)
        return 0; /* over the cap: curl fails with CURLE_WRITE_ERROR */
    return size * nmemb;
}

/* Parses Retry-After (seconds or HTTP date) into milliseconds; -1 when absent or bad. */
static long kube_parse_retry_after(const char *value)
{
    char *end;
    long secs;
    time_t when;

    while (*value == ' ')
        value++;
    secs = strtol(value, &end, 10);
    if (end != value && (*end == '\0' || *end == '\r' || *end == '\n' || *end == ' '))
        return secs < 0 ? 0 : (secs > 86400 ? 86400000L : secs * 1000);
    when = curl_getdate(value, NULL);
    if (when < 0)
        return -1;
    when -= time(NULL);
    return when <= 0 ? 0 : (long)(when > 86400 ? 86400 : when) * 1000;
}

static size_t kube_header_cb(char *buffer, size_t size, size_t nitems, void *userdata)
{
    long *retry_after_ms = userdata;
    size_t n = size * nitems;
    char value[128];
    size_t vlen;

    if (n > 12 && strncasecmp(buffer, "Retry-After:", 12) == 0) {
        vlen = n - 12 < sizeof(value) - 1 ? n - 12 : sizeof(value) - 1;
        memcpy(value, buffer + 12, vlen);
        value[vlen] = '\0';
        *retry_after_ms = kube_parse_retry_after(value);
    } else if (n >= 5 && strncmp(buffer, "HTTP/", 5) == 0) {
        *retry_after_ms = -1; /* a new response (after a redirect or 100) */
    }
    return n;
}

/* Sets what every request of k carries: URL, share, TLS, credentials, timeouts. headers
 * receives the list to free after the transfer. */
static void kube_easy_setup(rf_kube_t *k, CURL *easy, const char *url, struct curl_slist **headers)
{
    struct curl_blob blob;
    char *auth;

    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_SHARE, k->share);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_USERAGENT, KUBE_USER_AGENT);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, k->connect_ms);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    /* Keep a connection per thread of the client in the shared cache: libcurl's default
     * (5) closed the extra ones after each request, a TLS handshake each time. */
    curl_easy_setopt(easy, CURLOPT_MAXCONNECTS, (long)KUBE_EASY_POOL);
    curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");
    if (k->ca_pem) {
        blob.data = k->ca_pem;
        blob.len = k->ca_pem_len;
        blob.flags = CURL_BLOB_COPY;
        curl_easy_setopt(easy, CURLOPT_CAINFO_BLOB, &blob);
    }
    if (k->insecure) {
        curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (k->cert_pem && k->key_pem) {
        blob.data = k->cert_pem;
        blob.len = k->cert_pem_len;
        blob.flags = CURL_BLOB_COPY;
        curl_easy_setopt(easy, CURLOPT_SSLCERT_BLOB, &blob);
        curl_easy_setopt(easy, CURLOPT_SSLCERTTYPE, "PEM");
        blob.data = k->key_pem;
        blob.len = k->key_pem_len;
        curl_easy_setopt(easy, CURLOPT_SSLKEY_BLOB, &blob);
        curl_easy_setopt(easy, CURLOPT_SSLKEYTYPE, "PEM");
    }
    if (k->proxy_url)
        curl_easy_setopt(easy, CURLOPT_PROXY, k->proxy_url);
    if (k->username && k->password) {
        curl_easy_setopt(easy, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(easy, CURLOPT_USERNAME, k->username);
        curl_easy_setopt(easy, CURLOPT_PASSWORD, k->password);
    }
    *headers = curl_slist_append(*headers, "Accept: application/json");
    *headers = curl_slist_append(*headers, "Expect:");
    auth = kube_auth_header(k);
    if (auth) {
        *headers = curl_slist_append(*headers, auth);
        kube_free_secret(auth, strlen(auth));
    }
}

/* Nonzero for curl failures that another try may cure. */
static int kube_curl_retriable(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_AGAIN:
        return 1;
    default:
        return 0;
    }
}

/* Classifies an HTTP status. */
static rf_err_t kube_status_err(long status)
{
    if (status >= 200 && status < 300)
        return RF_OK;
    if (status == 404)
        return RF_ERR_NOTFOUND;
    if (status == 429 || status >= 500)
        return RF_ERR_RETRY;
    return RF_ERR_PERM;
}

/* Describes a failed answer: "<code> <reason>: <message>" from a Status, else the code and
 * the start of the body. */
static void kube_describe_answer(long status, const char *body, size_t len, rf_buf_t *out)
{
    json_t *root = json_loadb(body, len, 0, NULL);
    const char *reason = json_string_value(json_object_get(root, "reason"));
    const char *message = json_string_value(json_object_get(root, "message"));
    size_t show;
    size_t i;

    if (message && *message) {
        rf_buf_addf(out, "%ld %s: %s", status, reason && *reason ? reason : "Failure", message);
    } else {
        rf_buf_addf(out, "%ld", status);
        if (reason && *reason)
            rf_buf_addf(out, " %s", reason);
        show = len < 200 ? len : 200;
        if (!root && show > 0) {
            rf_buf_adds(out, ": ");
            for (i = 0; i < show; i++)
                rf_buf_addc(out, (body[i] >= 0x20 && body[i] < 0x7f) ? body[i] : ' ');
        }
    }
    json_decref(root);
}

/* One request. */
typedef struct kube_req {
    const char *method;
    const char *path;         /* with its query */
    const char *content_type; /* of body, or NULL */
    const char *body;
    size_t body_len;
} kube_req_t;

/* An easy handle for one request: an idle one of the pool (reset), else a new one. */
static CURL *kube_easy_take(rf_kube_t *k)
{
    CURL *easy = NULL;

    pthread_mutex_lock(&k->pool_lock);
    if (k->npool > 0)
        easy = k->pool[--k->npool];
    k->requests++;
    pthread_mutex_unlock(&k->pool_lock);
    if (easy)
        return easy;
    easy = curl_easy_init();
    if (!easy)
        abort();
    return easy;
}

/* Gives an easy handle back after its request (its connection stays in the share). */
static void kube_easy_give(rf_kube_t *k, CURL *easy)
{
    if (!easy)
        return;
    curl_easy_reset(easy);
    pthread_mutex_lock(&k->pool_lock);
    if (k->npool < KUBE_EASY_POOL) {
        k->pool[k->npool++] = easy;
        easy = NULL;
    }
    pthread_mutex_unlock(&k->pool_lock);
    curl_easy_cleanup(easy);
}

unsigned long rf_kube_requests(rf_kube_t *k)
{
    unsigned long n;

    pthread_mutex_lock(&k->pool_lock);
    n = k->requests;
    pthread_mutex_unlock(&k->pool_lock);
    return n;
}

/* Runs req with retries. On RF_OK, body holds the answer. */
static rf_err_t kube_request(rf_kube_t *k, const kube_req_t *req, rf_buf_t *body, char *errstr,
                             size_t errstr_size)
{
    rf_buf_t url = RF_BUF_INIT;
    rf_buf_t why = RF_BUF_INIT;
    rf_buf_t ctype = RF_BUF_INIT;
    char curl_err[CURL_ERROR_SIZE];
    struct curl_slist *headers = NULL;
    CURL *easy = NULL;
    CURLcode rc;
    long status = 0;
    long retry_after_ms = -1;
    long wait_ms;
    int attempt;
    int tries = 0;
    rf_err_t result = RF_ERR_PERM;
    struct timespec t0, t1;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    rf_buf_addf(&url, "%s%s", k->server, req->path);
    if (req->content_type)
        rf_buf_addf(&ctype, "Content-Type: %s", req->content_type);
    for (attempt = 0; attempt < k->max_attempts; attempt++) {
        rf_buf_release(body);
        rf_buf_init(body, KUBE_MAX_RESPONSE);
        rf_buf_reset(&why);
        curl_slist_free_all(headers);
        headers = NULL;
        kube_easy_give(k, easy);
        easy = kube_easy_take(k);
        kube_easy_setup(k, easy, rf_buf_str(&url), &headers);
        if (req->content_type)
            headers = curl_slist_append(headers, rf_buf_str(&ctype));
        curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req->method);
        if (req->body) {
            curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
            curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body);
        }
        curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, k->request_ms);
        curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, kube_write_buf);
        curl_easy_setopt(easy, CURLOPT_WRITEDATA, body);
        curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, kube_header_cb);
        curl_easy_setopt(easy, CURLOPT_HEADERDATA, &retry_after_ms);
        curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, curl_err);
        curl_err[0] = '\0';
        retry_after_ms = -1;
        status = 0;

        rc = curl_easy_perform(easy);
        tries++;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        if (rc == CURLE_WRITE_ERROR) {
            rf_buf_addf(&why, "answer larger than %zu bytes", (size_t)KUBE_MAX_RESPONSE);
            result = RF_ERR_PERM;
        } else if (rc != CURLE_OK) {
            rf_buf_addf(&why, "%s", curl_err[0] ? curl_err : curl_easy_strerror(rc));
            result = kube_curl_retriable(rc) ? RF_ERR_RETRY : RF_ERR_PERM;
        } else {
            result = kube_status_err(status);
            if (result != RF_OK)
                kube_describe_answer(status, rf_buf_str(body), body->len, &why);
        }
        if (result != RF_ERR_RETRY)
            break;
        if (attempt + 1 >= k->max_attempts)
            break;
        if (retry_after_ms >= 0 && (status == 429 || status >= 500)) {
            if (retry_after_ms > k->max_ms) {
                rf_buf_addf(&why, " (the server asks to retry after %ld s)", retry_after_ms / 1000);
                break;
            }
            wait_ms = retry_after_ms;
        } else {
            pthread_mutex_lock(&k->token_lock);
            wait_ms = kube_backoff_ms(&k->rng, attempt, k->base_ms, k->max_ms);
            pthread_mutex_unlock(&k->token_lock);
        }
        rf_log_debug("kube %s %s: %s; retry in %ld ms", req->method, req->path, rf_buf_str(&why),
                     wait_ms);
        kube_sleep_ms(wait_ms);
    }
    if (result != RF_OK) {
        if (result == RF_ERR_RETRY && tries > 1)
            rf_buf_addf(&why, " (after %d tries)", tries);
        rf_errf(result, errstr, errstr_size, "%s '%s': %s", req->method, req->path,
                rf_buf_str(&why));
    }
    curl_slist_free_all(headers);
    kube_easy_give(k, easy);
    rf_buf_release(&url);
    rf_buf_release(&why);
    rf_buf_release(&ctype);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    rf_metrics_observe(k->request_seconds, RF_LABELS(req->method),
                       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    return result;
}

/* The text of an object's members apiVersion, kind and metadata, the last with only
 * name, namespace, generation, resourceVersion and annotations (depth 1: the members of
 * metadata), copied from an answer's JSON text into out without parsing the rest: a
 * Deployment's spec, status and managedFields were half of the apply worker's
 * instructions, its labels, uid and timestamps a third of what was left to parse (issue
 * 20). -1 when the text is not an object as expected (the caller parses it whole
 * instead). */
static int kube_json_slim(const char *s, size_t len, rf_buf_t *out, int depth)
{
    size_t i = rf_jtext_ws(s, len, 0), ks, ke, vs, ve;
    int first = 1, r;

    if (i >= len || s[i] != '{')
        return -1;
    i++;
    rf_buf_addc(out, '{');
    while ((r = rf_jtext_next_member(s, len, &i, &ks, &ke, &vs, &ve)) == 1) {
        const char *key = s + ks + 1;
        size_t klen = ke - ks - 2;
        int keep;
#define KUBE_KEY_IS(name) (klen == sizeof(name) - 1 && memcmp(key, name, klen) == 0)
        keep = depth == 0
                   ? KUBE_KEY_IS("apiVersion") || KUBE_KEY_IS("kind") || KUBE_KEY_IS("metadata")
                   : KUBE_KEY_IS("name") || KUBE_KEY_IS("namespace") ||
                         KUBE_KEY_IS("generation") || KUBE_KEY_IS("resourceVersion") ||
                         KUBE_KEY_IS("annotations");
        if (keep) {
            if (!first)
                rf_buf_addc(out, ',');
            first = 0;
            rf_buf_add(out, s + ks, ke - ks);
            rf_buf_addc(out, ':');
            if (depth == 0 && KUBE_KEY_IS("metadata")) {
                if (kube_json_slim(s + vs, ve - vs, out, 1) != 0)
                    return -1;
            } else {
                rf_buf_add(out, s + vs, ve - vs);
            }
        }
#undef KUBE_KEY_IS
    }
    /* a comma before a '}' or anything after the object: parsed whole (jansson refuses it) */
    if (r < 0 || rf_jtext_ws(s, len, i + 1) != len)
        return -1;
    rf_buf_addc(out, '}');
    return 0;
}

/* Runs req and decodes a JSON answer into *out (when out is not NULL); slim: only the
 * answer's apiVersion, kind and metadata without managedFields (kube_json_slim). */
static rf_err_t kube_request_json_as(rf_kube_t *k, const kube_req_t *req, int slim, json_t **out,
                                     char *errstr, size_t errstr_size)
{
    rf_buf_t body = RF_BUF_INIT, small = RF_BUF_INIT;
    json_error_t jerr;
    json_t *root = NULL;
    rf_err_t result;

    if (out)
        *out = NULL;
    if (req->path[0] != '/') {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "%s '%s': path must start with '/'",
                         req->method, req->path);
        goto cleanup;
    }
    result = kube_request(k, req, &body, errstr, errstr_size);
    if (result != RF_OK || !out)
        goto cleanup;
    if (slim && kube_json_slim(rf_buf_str(&body), body.len, &small, 0) == 0)
        root = rf_json_loadb(rf_buf_str(&small), small.len, 0, &jerr);
    if (!root)
        root = rf_json_loadb(rf_buf_str(&body), body.len, 0, &jerr);
    if (!root) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "%s '%s': answer is not json: %s",
                         req->method, req->path, jerr.text);
        goto cleanup;
    }
    *out = root;

cleanup:
    rf_buf_release(&body);
    rf_buf_release(&small);
    return result;
}

static rf_err_t kube_request_json(rf_kube_t *k, const kube_req_t *req, json_t **out, char *errstr,
                                  size_t errstr_size)
{
    return kube_request_json_as(k, req, 0, out, errstr, errstr_size);
}

rf_err_t rf_kube_get(rf_kube_t *k, const char *path, json_t **out, char *errstr, size_t errstr_size)
{
    kube_req_t req = {"GET", path, NULL, NULL, 0};

    return kube_request_json(k, &req, out, errstr, errstr_size);
}

/* path plus one more query parameter (free() it); value is escaped. */
static char *kube_path_with(const char *path, const char *param, const char *value)
{
    rf_buf_t buf = RF_BUF_INIT;
    char *esc = curl_easy_escape(NULL, value, 0);

    if (!esc)
        abort();
    rf_buf_addf(&buf, "%s%c%s=%s", path, strchr(path, '?') ? '&' : '?', param, esc);
    curl_free(esc);
    return rf_buf_detach(&buf);
}

/* Gives list items the kind and apiVersion the server leaves out of them. */
static void kube_fill_item_types(json_t *list, json_t *items)
{
    const char *kind = json_string_value(json_object_get(list, "kind"));
    const char *api = json_string_value(json_object_get(list, "apiVersion"));
    size_t klen = kind ? strlen(kind) : 0;
    json_t *item;
    size_t i;

    if (!kind || klen <= 4 || strcmp(kind + klen - 4, "List") != 0)
        return;
    json_array_foreach(items, i, item)
    {
        if (!json_is_object(item))
            continue;
        if (!json_object_get(item, "kind"))
            json_object_set_new(item, "kind", json_stringn(kind, klen - 4));
        if (api && !json_object_get(item, "apiVersion"))
            json_object_set_new(item, "apiVersion", json_string(api));
    }
}

rf_err_t rf_kube_list(rf_kube_t *k, const char *path, json_t **out, char *errstr,
                      size_t errstr_size)
{
    char limit[32];
    char *first = NULL;
    char *page_path = NULL;
    json_t *page = NULL;
    json_t *all = NULL;
    json_t *items;
    const char *cont;
    rf_err_t result;

    *out = NULL;
    snprintf(limit, sizeof(limit), "%d", KUBE_PAGE_SIZE);
    first = kube_path_with(path, "limit", limit);
    items = json_array();
    page_path = kube_strdup(first);
    for (;;) {
        result = rf_kube_get(k, page_path, &page, errstr, errstr_size);
        if (result != RF_OK)
            goto cleanup;
        if (!json_is_object(page) || !json_is_array(json_object_get(page, "items"))) {
            result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "GET '%s': answer is not a list",
                             page_path);
            goto cleanup;
        }
        kube_fill_item_types(page, json_object_get(page, "items"));
        json_array_extend(items, json_object_get(page, "items"));
        cont = json_string_value(json_object_get(json_object_get(page, "metadata"), "continue"));
        json_decref(all);
        all = page;
        page = NULL;
        if (!cont || !*cont)
            break;
        free(page_path);
        page_path = kube_path_with(first, "continue", cont);
    }
    json_object_set(all, "items", items);
    json_object_del(json_object_get(all, "metadata"), "continue");
    *out = all;
    all = NULL;

cleanup:
    json_decref(items);
    json_decref(page);
    json_decref(all);
    free(first);
    free(page_path);
    return result;
}

rf_err_t rf_kube_merge_patch(rf_kube_t *k, const char *path, const json_t *patch, json_t **out,
                             char *errstr, size_t errstr_size)
{
    char *body = json_dumps(patch, JSON_COMPACT);
    kube_req_t req = {"PATCH", path, "application/merge-patch+json", body, body ? strlen(body) : 0};
    rf_err_t result;

    if (!body)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "PATCH '%s': patch is not json", path);
    result = kube_request_json(k, &req, out, errstr, errstr_size);
    free(body);
    return result;
}

rf_err_t rf_kube_delete(rf_kube_t *k, const char *path, json_t **out, char *errstr,
                        size_t errstr_size)
{
    char *full = NULL;
    kube_req_t req = {"DELETE", path, NULL, NULL, 0};
    rf_err_t result;

    if (!strstr(path, "propagationPolicy=")) {
        full = kube_path_with(path, "propagationPolicy", "Background");
        req.path = full;
    }
    result = kube_request_json(k, &req, out, errstr, errstr_size);
    free(full);
    return result;
}

/* Nonzero when s is a DNS-1123 name (what every object name of the known kinds is). */
static int kube_valid_name(const char *s)
{
    size_t n = strlen(s);
    size_t i;

    if (n == 0 || n > 253)
        return 0;
    for (i = 0; i < n; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' ||
              s[i] == '.'))
            return 0;
    }
    return 1;
}

static const struct kube_kind {
    const char *api_version;
    const char *kind;
    const char *resource;
    int namespaced;
} kube_kinds[] = {
    {"v1", "Namespace", "namespaces", 0},
    {"v1", "Service", "services", 1},
    {"v1", "ConfigMap", "configmaps", 1},
    {"v1", "Secret", "secrets", 1},
    {"v1", "ServiceAccount", "serviceaccounts", 1},
    {"v1", "Pod", "pods", 1},
    {"apps/v1", "Deployment", "deployments", 1},
    {"apps/v1", "StatefulSet", "statefulsets", 1},
    {"apps/v1", "DaemonSet", "daemonsets", 1},
    {"apps/v1", "ReplicaSet", "replicasets", 1},
    {"networking.k8s.io/v1", "Ingress", "ingresses", 1},
    {"autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", 1},
    {"autoscaling/v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", 1},
    {"policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", 1},
};

rf_err_t rf_kube_object_path(const json_t *manifest, const char *default_namespace, char *path,
                             size_t path_size, char *errstr, size_t errstr_size)
{
    const char *api = json_string_value(json_object_get(manifest, "apiVersion"));
    const char *kind = json_string_value(json_object_get(manifest, "kind"));
    json_t *meta = json_object_get(manifest, "metadata");
    const char *name = json_string_value(json_object_get(meta, "name"));
    const char *ns = json_string_value(json_object_get(meta, "namespace"));
    const struct kube_kind *kk = NULL;
    size_t i;
    int n;

    if (!api || !kind)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "cannot place manifest: no apiVersion or kind");
    for (i = 0; i < sizeof(kube_kinds) / sizeof(kube_kinds[0]); i++) {
        if (strcmp(kube_kinds[i].kind, kind) == 0 && strcmp(kube_kinds[i].api_version, api) == 0)
            kk = &kube_kinds[i];
    }
    if (!kk)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "cannot place manifest: unknown kind '%s' of apiVersion '%s'", kind, api);
    if (!name || !kube_valid_name(name))
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "cannot place %s '%s': bad or missing metadata.name", kind,
                       name ? name : "");
    if (!ns || !*ns)
        ns = default_namespace;
    if (kk->namespaced && (!ns || !kube_valid_name(ns)))
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot place %s '%s': bad namespace '%s'",
                       kind, name, ns ? ns : "");
    if (!kk->namespaced)
        n = snprintf(path, path_size, "%s%s/%s/%s", strchr(api, '/') ? "/apis/" : "/api/", api,
                     kk->resource, name);
    else
        n = snprintf(path, path_size, "%s%s/namespaces/%s/%s/%s",
                     strchr(api, '/') ? "/apis/" : "/api/", api, ns, kk->resource, name);
    if (n < 0 || (size_t)n >= path_size)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot place %s '%s': path too long",
                       kind, name);
    return RF_OK;
}

/* The apply of manifest, with rest[0..rest_len) (JSON members) after its own members. */
static rf_err_t kube_apply(rf_kube_t *k, const json_t *manifest, const char *rest,
                           size_t rest_len, const char *field_manager, int slim,
                           json_t **result_out, char *errstr, size_t errstr_size)
{
    char path[1024];
    char *full = NULL;
    char *query = NULL;
    rf_buf_t body = RF_BUF_INIT;
    kube_req_t req = {"PATCH", NULL, "application/apply-patch+yaml", NULL, 0};
    rf_err_t result;

    if (result_out)
        *result_out = NULL;
    result = rf_kube_object_path(manifest, k->namespace, path, sizeof(path), errstr, errstr_size);
    if (result != RF_OK)
        goto cleanup;
    /* json_dumps(JSON_COMPACT)'s bytes, faster */
    if (!json_is_object(manifest) || rf_json_append(&body, manifest, 0) != 0) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "cannot apply '%s': bad json", path);
        goto cleanup;
    }
    if (rest_len > 0) { /* the text ends with the object's '}': rest goes before it */
        body.data[--body.len] = '\0';
        if (body.len > 1)
            rf_buf_addc(&body, ',');
        rf_buf_add(&body, rest, rest_len);
        rf_buf_addc(&body, '}');
    }
    query = kube_path_with(path, "fieldManager", field_manager ? field_manager : "relfleet");
    full = kube_path_with(query, "force", "true");
    req.path = full;
    req.body = rf_buf_str(&body);
    req.body_len = body.len;
    result = kube_request_json_as(k, &req, slim, result_out, errstr, errstr_size);

cleanup:
    free(full);
    free(query);
    rf_buf_release(&body);
    return result;
}

rf_err_t rf_kube_apply(rf_kube_t *k, const json_t *manifest, const char *field_manager,
                       json_t **result_out, char *errstr, size_t errstr_size)
{
    return kube_apply(k, manifest, NULL, 0, field_manager, 0, result_out, errstr, errstr_size);
}

/* The fence an object carries in its annotation key (-1 when none or not a number). */
static int64_t kube_object_fence(const json_t *obj, const char *key)
{
    const char *v = json_string_value(json_object_get(
        json_object_get(json_object_get(obj, "metadata"), "annotations"), key));
    char *end;
    long long n;

    if (!v || !*v)
        return -1;
    n = strtoll(v, &end, 10);
    return *end == '\0' && n >= 0 ? (int64_t)n : -1;
}

/* What the client remembers of path: 1 with *rv (free() it) and *fence when the cached
 * answer may be used, 0 when it must be read (unknown, or marked stale by a conflict). */
static int kube_fence_cache_get(rf_kube_t *k, const char *path, char **rv, int64_t *fence)
{
    json_t *e;
    int found = 0;

    pthread_mutex_lock(&k->fence_lock);
    e = json_object_get(k->fence_cache, path);
    if (e && !json_is_true(json_array_get(e, 2))) {
        *rv = kube_strdup(json_string_value(json_array_get(e, 0)));
        *fence = json_integer_value(json_array_get(e, 1));
        found = 1;
    }
    pthread_mutex_unlock(&k->fence_lock);
    return found;
}

/* Remembers the answer of an apply of path (rv NULL: forgets path). A path once marked
 * stale (someone else writes it) stays stale: it is read before each apply. */
static void kube_fence_cache_put(rf_kube_t *k, const char *path, const char *rv, int64_t fence,
                                 int stale)
{
    json_t *old;
    void *it;

    pthread_mutex_lock(&k->fence_lock);
    old = json_object_get(k->fence_cache, path);
    stale = stale || (old && json_is_true(json_array_get(old, 2)));
    json_object_del(k->fence_cache, path); /* re-inserted last: the oldest go first */
    if (rv && *rv) {
        while (json_object_size(k->fence_cache) >= KUBE_FENCE_CACHE_MAX) {
            it = json_object_iter(k->fence_cache);
            json_object_del(k->fence_cache, json_object_iter_key(it));
        }
        json_object_set_new(k->fence_cache, path,
                            json_pack("[s, I, b]", rv, (json_int_t)fence, stale));
    }
    pthread_mutex_unlock(&k->fence_lock);
}

/* 1 when the objects of a kind are written by others between our applies as a rule (a
 * Deployment's status by its controller moves its resourceVersion after each of ours):
 * most applies of the kind from a remembered answer met a 409, at least two. Its objects
 * are then read before each apply (GET, PATCH) rather than conflicting first (PATCH 409,
 * GET, PATCH), from the first apply of each object on. */
static int kube_fence_kind_stale(rf_kube_t *k, const char *kind)
{
    json_t *e;
    json_int_t ok, conflicts;

    pthread_mutex_lock(&k->fence_lock);
    e = json_object_get(k->fence_kinds, kind);
    ok = json_integer_value(json_array_get(e, 0));
    conflicts = json_integer_value(json_array_get(e, 1));
    pthread_mutex_unlock(&k->fence_lock);
    return conflicts >= 2 && conflicts > ok;
}

/* Counts an apply of the kind from a remembered answer: through, or met a 409. */
static void kube_fence_kind_count(rf_kube_t *k, const char *kind, int conflict)
{
    json_t *e;

    pthread_mutex_lock(&k->fence_lock);
    e = json_object_get(k->fence_kinds, kind);
    if (!e) {
        if (json_object_size(k->fence_kinds) >= KUBE_FENCE_KINDS_MAX)
            json_object_clear(k->fence_kinds);
        e = json_pack("[I, I]", (json_int_t)0, (json_int_t)0);
        json_object_set_new(k->fence_kinds, kind, e);
    }
    json_array_set_new(e, conflict ? 1 : 0,
                       json_integer(json_integer_value(json_array_get(e, conflict ? 1 : 0)) + 1));
    pthread_mutex_unlock(&k->fence_lock);
}

rf_err_t rf_kube_apply_fenced(rf_kube_t *k, json_t *manifest, const char *field_manager,
                              const char *fence_key, int64_t fence, json_t **result_out,
                              char *errstr, size_t errstr_size)
{
    return rf_kube_apply_fenced_rest(k, manifest, NULL, 0, field_manager, fence_key, fence,
                                     result_out, errstr, errstr_size);
}

rf_err_t rf_kube_apply_fenced_rest(rf_kube_t *k, json_t *manifest, const char *rest,
                                   size_t rest_len, const char *field_manager,
                                   const char *fence_key, int64_t fence, json_t **result_out,
                                   char *errstr, size_t errstr_size)
{
    json_t *meta = json_object_get(manifest, "metadata");
    char path[1024], kind[512];
    char *rv = NULL;
    int64_t live_fence = -1;
    int cached = 0, kind_stale;
    rf_err_t result;
    int attempt;

    *result_out = NULL;
    result = rf_kube_object_path(manifest, k->namespace, path, sizeof(path), errstr, errstr_size);
    if (result != RF_OK)
        return result;
    snprintf(kind, sizeof(kind), "%s %s", /* both there: the path has them */
             json_string_value(json_object_get(manifest, "apiVersion")) ?: "",
             json_string_value(json_object_get(manifest, "kind")) ?: "");
    kind_stale = kube_fence_kind_stale(k, kind);
    for (attempt = 0; attempt < KUBE_FENCED_MAX_CONFLICTS; attempt++) {
        json_t *live = NULL;

        free(rv);
        rv = NULL;
        cached = attempt == 0 && !kind_stale && kube_fence_cache_get(k, path, &rv, &live_fence);
        if (!cached) {
            kube_req_t get = {"GET", path, NULL, NULL, 0};
            /* only the fence and resourceVersion are looked at */
            result = kube_request_json_as(k, &get, 1, &live, errstr, errstr_size);
            if (result != RF_OK && result != RF_ERR_NOTFOUND)
                goto out;
            live_fence = kube_object_fence(live, fence_key);
            rv = kube_strdup(json_string_value(
                json_object_get(json_object_get(live, "metadata"), "resourceVersion")));
            json_decref(live);
        }
        if (live_fence > fence) {
            result = rf_errf(RF_ERR_FENCED, errstr, errstr_size,
                             "'%s' was written by newer fence %lld (ours %lld)", path,
                             (long long)live_fence, (long long)fence);
            goto out;
        }
        if (rv && *rv)
            json_object_set_new(meta, "resourceVersion", json_string(rv));
        else
            json_object_del(meta, "resourceVersion");
        result = kube_apply(k, manifest, rest, rest_len, field_manager, 1, result_out, errstr,
                            errstr_size);
        json_object_del(meta, "resourceVersion");
        if (result == RF_OK) {
            json_t *smeta = json_object_get(*result_out, "metadata");
            if (cached)
                kube_fence_kind_count(k, kind, 0);
            kube_fence_cache_put(k, path,
                                 json_string_value(json_object_get(smeta, "resourceVersion")),
                                 kube_object_fence(*result_out, fence_key), 0);
            goto out;
        }
        if (result == RF_ERR_PERM && strstr(errstr, ": 409 ")) {
            /* Written since our last answer (cached) or our read: read it and decide. */
            if (cached) {
                kube_fence_cache_put(k, path, rv, live_fence, 1);
                kube_fence_kind_count(k, kind, 1);
            }
            rf_log_debug("conflict on '%s', reading its fence again", path);
            continue;
        }
        kube_fence_cache_put(k, path, NULL, 0, 0);
        if (result == RF_ERR_NOTFOUND && attempt == 0)
            continue; /* e.g. deleted meanwhile with its namespace: one more look */
        goto out;
    }
    result = rf_errf(RF_ERR_RETRY, errstr, errstr_size, "'%s' kept changing while applying", path);

out:
    free(rv);
    return result;
}

rf_err_t rf_kube_pod_logs(rf_kube_t *k, const char *ns, const char *pod, const char *container,
                          int tail_lines, char **text_out, char *errstr, size_t errstr_size)
{
    rf_buf_t path = RF_BUF_INIT;
    rf_buf_t body = RF_BUF_INIT;
    kube_req_t req = {"GET", NULL, NULL, NULL, 0};
    char *esc;
    rf_err_t result;

    *text_out = NULL;
    if (!ns || !kube_valid_name(ns) || !pod || !kube_valid_name(pod) ||
        (container && !kube_valid_name(container))) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                         "cannot read logs of pod '%s/%s': bad name", ns ? ns : "", pod ? pod : "");
        goto cleanup;
    }
    rf_buf_addf(&path, "/api/v1/namespaces/%s/pods/%s/log?limitBytes=%d", ns, pod,
                KUBE_LOG_LIMIT_BYTES);
    if (tail_lines > 0)
        rf_buf_addf(&path, "&tailLines=%d", tail_lines);
    if (container) {
        esc = curl_easy_escape(NULL, container, 0);
        rf_buf_addf(&path, "&container=%s", esc);
        curl_free(esc);
    }
    req.path = rf_buf_str(&path);
    result = kube_request(k, &req, &body, errstr, errstr_size);
    if (result != RF_OK)
        goto cleanup;
    *text_out = rf_buf_detach(&body);

cleanup:
    rf_buf_release(&path);
    rf_buf_release(&body);
    return result;
}

/* ---- informers ---- */

typedef enum watch_state {
    WATCH_IDLE,    /* waiting for due_ms to start the next request */
    WATCH_LISTING, /* a list page is in flight */
    WATCH_STREAM,  /* a watch request is streaming */
} watch_state_t;

struct rf_kube_watch {
    rf_kube_multi_t *m;
    rf_kube_t *k;
    rf_kube_watch_t *next;
    rf_kube_watch_t *prev;
    char *path; /* as given */
    rf_kube_watch_cb cb;
    void *opaque;
    int timeout_s;
    int page_size;

    watch_state_t state;
    int relist; /* the next request is a list (from scratch or a continue) */
    char *cont; /* continue token of the list in progress */
    char *rv;   /* last resourceVersion seen */
    int64_t due_ms;
    int failures; /* consecutive failures, for the backoff */
    long retry_after_ms;
    int64_t started_ms;
    int events; /* events of the current watch request */

    CURL *easy;
    struct curl_slist *headers;
    rf_buf_t body; /* list answer, or the error answer of a watch */
    rf_watch_parser_t *parser;
    const char *const *drop; /* members left out of each object (rf_kube_watch_set_drop) */
    char curl_err[CURL_ERROR_SIZE];
    int destroyed; /* destroyed from inside its callback */
};

struct rf_kube_multi {
    CURLM *multi;
    rf_kube_watch_t *head;
    rf_kube_watch_t *dispatching;
    uint64_t rng;
};

rf_kube_multi_t *rf_kube_multi_new(void)
{
    rf_kube_multi_t *m;

    pthread_once(&kube_curl_once, kube_curl_init);
    m = calloc(1, sizeof(*m));
    if (!m)
        abort();
    m->multi = curl_multi_init();
    if (!m->multi)
        abort();
    m->rng = kube_rng_seed(m);
    return m;
}

void rf_kube_multi_destroy(rf_kube_multi_t *m)
{
    if (!m)
        return;
    while (m->head)
        rf_kube_watch_destroy(m->head);
    curl_multi_cleanup(m->multi);
    free(m);
}

static void watch_stop_transfer(rf_kube_watch_t *w)
{
    if (w->easy) {
        curl_multi_remove_handle(w->m->multi, w->easy);
        curl_easy_cleanup(w->easy);
        w->easy = NULL;
    }
    curl_slist_free_all(w->headers);
    w->headers = NULL;
    rf_buf_release(&w->body);
    rf_watch_parser_reset(w->parser);
}

rf_kube_watch_t *rf_kube_watch_new(rf_kube_multi_t *m, rf_kube_t *k, const char *path,
                                   rf_kube_watch_cb cb, void *opaque, char *errstr,
                                   size_t errstr_size)
{
    rf_kube_watch_t *w;

    if (!path || (strncmp(path, "/api/", 5) != 0 && strncmp(path, "/apis/", 6) != 0) ||
        strstr(path, "watch=") || strstr(path, "resourceVersion=")) {
        rf_errf(RF_ERR_PERM, errstr, errstr_size,
                "cannot watch '%s': not a collection path (/api/... or /apis/..., without "
                "watch or resourceVersion)",
                path ? path : "");
        return NULL;
    }
    w = calloc(1, sizeof(*w));
    if (!w)
        abort();
    w->m = m;
    w->k = k;
    w->path = kube_strdup(path);
    w->cb = cb;
    w->opaque = opaque;
    w->timeout_s = WATCH_DEFAULT_TIMEOUT_S;
    w->page_size = KUBE_PAGE_SIZE;
    w->state = WATCH_IDLE;
    w->relist = 1;
    w->rv = kube_strdup("");
    w->due_ms = kube_now_ms();
    w->retry_after_ms = -1;
    rf_buf_init(&w->body, 0);
    w->parser = rf_watch_parser_new(0);
    w->drop = rf_watch_drop_default;
    w->next = m->head;
    if (m->head)
        m->head->prev = w;
    m->head = w;
    return w;
}

void rf_kube_watch_destroy(rf_kube_watch_t *w)
{
    if (!w)
        return;
    if (w->m->dispatching == w) {
        w->destroyed = 1; /* freed once its callback returns */
        return;
    }
    watch_stop_transfer(w);
    if (w->prev)
        w->prev->next = w->next;
    else
        w->m->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    rf_watch_parser_destroy(w->parser);
    free(w->path);
    free(w->cont);
    free(w->rv);
    free(w);
}

void rf_kube_watch_set_timeout(rf_kube_watch_t *w, int seconds)
{
    w->timeout_s = seconds > 0 ? seconds : WATCH_DEFAULT_TIMEOUT_S;
}

void rf_kube_watch_set_drop(rf_kube_watch_t *w, const char *const *paths)
{
    w->drop = paths;
    rf_watch_parser_set_drop(w->parser, paths);
}

void rf_kube_watch_set_raw(rf_kube_watch_t *w, int raw)
{
    rf_watch_parser_set_raw(w->parser, raw);
}

void rf_kube_watch_set_page_size(rf_kube_watch_t *w, int limit)
{
    w->page_size = limit > 0 ? limit : KUBE_PAGE_SIZE;
}

const char *rf_kube_watch_resource_version(const rf_kube_watch_t *w)
{
    return w->rv;
}

const char *rf_kube_watch_path(const rf_kube_watch_t *w)
{
    return w->path;
}

/* Calls the callback; returns nonzero when the watch destroyed itself meanwhile. */
static int watch_emit(rf_kube_watch_t *w, const rf_watch_event_t *ev)
{
    rf_kube_multi_t *m = w->m;

    m->dispatching = w;
    w->cb(w, ev, w->opaque);
    m->dispatching = NULL;
    if (w->destroyed) {
        w->destroyed = 0;
        rf_kube_watch_destroy(w);
        return 1;
    }
    return 0;
}

/* Reports a failure as an ERROR event (object: a Status) and schedules the next try. */
static int watch_fail(rf_kube_watch_t *w, int code, const char *message, int relist)
{
    rf_watch_event_t ev;
    json_t *status;
    long wait_ms;
    int gone;

    status = json_pack("{s:s, s:s, s:s, s:s, s:i}", "kind", "Status", "apiVersion", "v1", "status",
                       "Failure", "message", message, "code", code);
    memset(&ev, 0, sizeof(ev));
    ev.type = RF_WATCH_ERROR;
    ev.object = status;
    ev.message = message;
    ev.code = code;
    rf_log_debug("kube watch %s: %s", w->path, message);
    watch_stop_transfer(w);
    w->state = WATCH_IDLE;
    if (relist)
        w->relist = 1;
    wait_ms = kube_backoff_ms(&w->m->rng, w->failures, WATCH_BACKOFF_BASE_MS, WATCH_BACKOFF_MAX_MS);
    if (w->retry_after_ms >= 0 && w->retry_after_ms > wait_ms)
        wait_ms =
            w->retry_after_ms < WATCH_BACKOFF_MAX_MS ? w->retry_after_ms : WATCH_BACKOFF_MAX_MS;
    w->failures++;
    w->due_ms = kube_now_ms() + wait_ms;
    gone = watch_emit(w, &ev);
    json_decref(status);
    return gone;
}

static size_t watch_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    rf_kube_watch_t *w = userdata;
    size_t n = size * nmemb;
    long status = 0;

    curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &status);
    if (w->state == WATCH_STREAM && status == 200) {
        rf_watch_parser_feed(w->parser, ptr, n);
        return n;
    }
    if (rf_buf_add(&w->body, ptr, n) != 0)
        return 0;
    return n;
}

/* Starts the request the watch is due for. Returns nonzero when the watch is gone. */
static int watch_start(rf_kube_watch_t *w)
{
    rf_buf_t url = RF_BUF_INIT;
    char *esc;
    char sep = strchr(w->path, '?') ? '&' : '?';

    rf_buf_addf(&url, "%s%s%c", w->k->server, w->path, sep);
    if (w->relist) {
        rf_buf_addf(&url, "limit=%d", w->page_size);
        if (w->cont) {
            esc = curl_easy_escape(NULL, w->cont, 0);
            rf_buf_addf(&url, "&continue=%s", esc);
            curl_free(esc);
        }
        w->state = WATCH_LISTING;
    } else {
        esc = curl_easy_escape(NULL, w->rv, 0);
        rf_buf_addf(&url, "watch=1&allowWatchBookmarks=true&timeoutSeconds=%d&resourceVersion=%s",
                    w->timeout_s, esc);
        curl_free(esc);
        w->state = WATCH_STREAM;
    }
    w->easy = curl_easy_init();
    if (!w->easy)
        abort();
    rf_buf_release(&w->body);
    rf_buf_init(&w->body, w->state == WATCH_LISTING ? KUBE_MAX_RESPONSE : KUBE_MAX_ERROR_BODY);
    rf_watch_parser_reset(w->parser);
    kube_easy_setup(w->k, w->easy, rf_buf_str(&url), &w->headers);
    curl_easy_setopt(w->easy, CURLOPT_HTTPHEADER, w->headers);
    curl_easy_setopt(w->easy, CURLOPT_PRIVATE, w);
    curl_easy_setopt(w->easy, CURLOPT_WRITEFUNCTION, watch_write_cb);
    curl_easy_setopt(w->easy, CURLOPT_WRITEDATA, w);
    curl_easy_setopt(w->easy, CURLOPT_HEADERFUNCTION, kube_header_cb);
    curl_easy_setopt(w->easy, CURLOPT_HEADERDATA, &w->retry_after_ms);
    curl_easy_setopt(w->easy, CURLOPT_ERRORBUFFER, w->curl_err);
    if (w->state == WATCH_STREAM)
        curl_easy_setopt(w->easy, CURLOPT_TIMEOUT_MS, (long)(w->timeout_s + 30) * 1000L);
    else
        curl_easy_setopt(w->easy, CURLOPT_TIMEOUT_MS, w->k->request_ms);
    w->curl_err[0] = '\0';
    w->retry_after_ms = -1;
    w->started_ms = kube_now_ms();
    w->events = 0;
    rf_buf_release(&url);
    if (curl_multi_add_handle(w->m->multi, w->easy) != CURLM_OK)
        return watch_fail(w, 0, "cannot add the request to the curl multi handle", 0);
    return 0;
}

/* Records the resourceVersion of an object or bookmark. */
static void watch_note_rv(rf_kube_watch_t *w, const rf_watch_event_t *ev)
{
    const char *rv = ev->object ? json_string_value(json_object_get(
                                      json_object_get(ev->object, "metadata"), "resourceVersion"))
                                : ev->rv;

    if (rv && *rv && strcmp(rv, w->rv) != 0) {
        free(w->rv);
        w->rv = kube_strdup(rv);
    }
}

/* Delivers the complete events the stream holds. Returns the number delivered, or -1 when
 * the watch is gone. */
static int watch_drain(rf_kube_watch_t *w)
{
    rf_watch_event_t ev;
    char err[256];
    int delivered = 0;
    int r;

    for (;;) {
        r = rf_watch_parser_next(w->parser, &ev, err, sizeof(err));
        if (r == 0)
            return delivered;
        if (r < 0) {
            memset(&ev, 0, sizeof(ev));
            ev.type = RF_WATCH_ERROR;
            ev.message = err;
            if (watch_emit(w, &ev))
                return -1;
            delivered++;
            continue;
        }
        delivered++;
        w->events++;
        if (ev.type == RF_WATCH_EXPIRED) {
            rf_log_debug("kube watch %s: resourceVersion '%s' expired, listing again", w->path,
                         w->rv);
            if (watch_emit(w, &ev))
                return -1;
            watch_stop_transfer(w);
            w->state = WATCH_IDLE;
            w->relist = 1;
            w->due_ms = kube_now_ms();
            return delivered;
        }
        if (ev.type == RF_WATCH_ERROR) {
            /* The server ends the watch after an ERROR event; client-go lists again. */
            char msg[512];
            snprintf(msg, sizeof(msg), "watch error %d: %s", ev.code, ev.message);
            if (watch_fail(w, ev.code, msg, 1))
                return -1;
            return delivered;
        }
        watch_note_rv(w, &ev);
        w->failures = 0;
        if (watch_emit(w, &ev))
            return -1;
    }
}

/* Delivers one list page. Returns the number delivered, or -1 when the watch is gone. */
static int watch_list_done(rf_kube_watch_t *w)
{
    rf_watch_event_t ev;
    json_error_t jerr;
    json_t *list = NULL;
    json_t *items;
    json_t *item;
    const char *cont;
    const char *rv;
    char msg[300];
    size_t i;
    int delivered = 0;
    rf_buf_t slim = RF_BUF_INIT;

    /* The items without the members nobody reads, like the events (rf_watch_slim_list). */
    if (rf_watch_slim_list(rf_buf_str(&w->body), w->body.len, w->drop, &slim) == 0)
        list = rf_json_loadb(rf_buf_str(&slim), slim.len, 0, &jerr);
    rf_buf_release(&slim);
    if (!list)
        list = rf_json_loadb(rf_buf_str(&w->body), w->body.len, 0, &jerr);
    items = json_object_get(list, "items");
    if (!json_is_array(items)) {
        snprintf(msg, sizeof(msg), "list '%s': answer is not a list: %s", w->path,
                 list ? "no items" : jerr.text);
        json_decref(list);
        return watch_fail(w, 0, msg, 1) ? -1 : 1;
    }
    kube_fill_item_types(list, items);
    watch_stop_transfer(w);
    w->state = WATCH_IDLE;
    w->due_ms = kube_now_ms();
    cont = json_string_value(json_object_get(json_object_get(list, "metadata"), "continue"));
    rv = json_string_value(json_object_get(json_object_get(list, "metadata"), "resourceVersion"));
    free(w->cont);
    w->cont = cont && *cont ? kube_strdup(cont) : NULL;
    if (rv) {
        free(w->rv);
        w->rv = kube_strdup(rv);
    }
    w->relist = w->cont != NULL;
    json_array_foreach(items, i, item)
    {
        memset(&ev, 0, sizeof(ev));
        ev.type = RF_WATCH_SYNC;
        ev.object = item;
        delivered++;
        if (watch_emit(w, &ev))
            goto gone;
    }
    if (!w->cont) {
        w->failures = 0;
        memset(&ev, 0, sizeof(ev));
        ev.type = RF_WATCH_SYNCED;
        delivered++;
        if (watch_emit(w, &ev))
            goto gone;
    }
    json_decref(list);
    rf_buf_release(&w->body);
#ifdef __GLIBC__
    /* A list of thousands of objects was parsed page by page; give the pages' memory back
     * (glibc keeps freed heap in the middle of its arenas otherwise). */
    if (!w->cont)
        malloc_trim(0);
#endif
    return delivered;

gone:
    json_decref(list);
    return -1;
}

/* Handles a finished transfer. Returns the number of events delivered, or -1 when the watch
 * is gone. */
static int watch_done(rf_kube_watch_t *w, CURLcode rc)
{
    rf_buf_t why = RF_BUF_INIT;
    long status = 0;
    int delivered = 0;
    int r;
    int healthy;

    curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK &&
        !(w->state == WATCH_STREAM && rc == CURLE_OPERATION_TIMEDOUT && status == 200)) {
        rf_buf_addf(&why, "%s '%s': %s", w->state == WATCH_LISTING ? "list" : "watch", w->path,
                    w->curl_err[0] ? w->curl_err : curl_easy_strerror(rc));
        r = watch_fail(w, 0, rf_buf_str(&why), 0);
        goto out;
    }
    if (status != 200) {
        if (status == 410) {
            /* An expired resourceVersion, or an expired continue token: start over. */
            free(w->cont);
            w->cont = NULL;
        }
        rf_buf_addf(&why, "%s '%s': ", w->state == WATCH_LISTING ? "list" : "watch", w->path);
        kube_describe_answer(status, rf_buf_str(&w->body), w->body.len, &why);
        r = watch_fail(w, (int)status, rf_buf_str(&why), status == 410);
        if (r == 0 && status == 410)
            w->due_ms = kube_now_ms(); /* relisting is the cure: no wait */
        goto out;
    }
    if (w->state == WATCH_LISTING) {
        r = watch_list_done(w);
        delivered = r;
        r = r < 0 ? 1 : 0;
        goto out;
    }
    /* The watch ended normally (timeoutSeconds, or the server closed it). */
    rf_watch_parser_end(w->parser);
    delivered = watch_drain(w);
    if (delivered < 0) {
        r = 1;
        goto out;
    }
    if (w->state != WATCH_STREAM) { /* drain scheduled a relist or a retry */
        r = 0;
        goto out;
    }
    healthy = w->events > 0 || kube_now_ms() - w->started_ms >= WATCH_MIN_HEALTHY_MS;
    watch_stop_transfer(w);
    w->state = WATCH_IDLE;
    w->relist = 0;
    if (healthy) {
        w->failures = 0;
        w->due_ms = kube_now_ms();
    } else {
        w->due_ms = kube_now_ms() + kube_backoff_ms(&w->m->rng, w->failures, WATCH_BACKOFF_BASE_MS,
                                                    WATCH_BACKOFF_MAX_MS);
        w->failures++;
    }
    r = 0;

out:
    rf_buf_release(&why);
    if (r)
        return -1;
    return delivered;
}

/* Starts every due watch; returns the milliseconds until the next one is due (-1: none). */
static long multi_start_due(rf_kube_multi_t *m)
{
    rf_kube_watch_t *w;
    rf_kube_watch_t *next;
    int64_t now = kube_now_ms();
    long soonest = -1;
    long left;

    for (w = m->head; w; w = next) {
        next = w->next;
        if (w->state != WATCH_IDLE)
            continue;
        if (w->due_ms <= now) {
            watch_start(w);
            continue;
        }
        left = (long)(w->due_ms - now);
        if (soonest < 0 || left < soonest)
            soonest = left;
    }
    return soonest;
}

int rf_kube_multi_poll(rf_kube_multi_t *m, int timeout_ms)
{
    return rf_kube_multi_poll_fd(m, timeout_ms, -1);
}

int rf_kube_multi_poll_fd(rf_kube_multi_t *m, int timeout_ms, int fd)
{
    struct curl_waitfd extra = {fd, CURL_WAIT_POLLIN, 0};
    rf_kube_watch_t *w;
    rf_kube_watch_t *next;
    CURLMsg *msg;
    char *priv;
    int running = 0;
    int queued;
    int delivered = 0;
    int n;
    long wait_ms;
    long due;
    int64_t deadline = kube_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);

    for (;;) {
        due = multi_start_due(m);
        curl_multi_perform(m->multi, &running);

        /* Events that arrived, then finished transfers (a failed stream keeps the events
         * that came before the failure). */
        for (w = m->head; w; w = next) {
            next = w->next;
            if (w->state != WATCH_STREAM)
                continue;
            n = watch_drain(w);
            if (n > 0)
                delivered += n;
        }
        for (;;) {
            msg = curl_multi_info_read(m->multi, &queued);
            if (!msg)
                break;
            if (msg->msg != CURLMSG_DONE)
                continue;
            priv = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
            w = (rf_kube_watch_t *)priv;
            if (!w)
                continue;
            n = watch_done(w, msg->data.result);
            if (n > 0)
                delivered += n;
        }
        if (delivered > 0 || extra.revents)
            break;
        wait_ms = (long)(deadline - kube_now_ms());
        if (wait_ms <= 0)
            break;
        due = multi_start_due(m);
        if (due >= 0 && due < wait_ms)
            wait_ms = due;
        curl_multi_poll(m->multi, fd >= 0 ? &extra : NULL, fd >= 0 ? 1 : 0, (int)wait_ms, NULL);
    }
    /* Send what became due meanwhile (reconnects) without waiting. */
    multi_start_due(m);
    curl_multi_perform(m->multi, &running);
    return delivered;
}
