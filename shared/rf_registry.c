/* Docker Registry HTTP API v2: tag listing with Basic or Bearer (token service) auth. */
#include "rf_registry.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rf_buf.h"

#define REGISTRY_MAX_ANSWER (8 << 20)
#define REGISTRY_MAX_PAGES 200

typedef struct registry_answer {
    rf_buf_t body;
    long status;
    char www_auth[1024];
    char link[2048];
} registry_answer_t;

void rf_registry_repository(const char *image_repo, char *out, size_t size)
{
    const char *slash = strchr(image_repo, '/');
    size_t first = slash ? (size_t)(slash - image_repo) : 0;

    if (slash && (memchr(image_repo, '.', first) || memchr(image_repo, ':', first) ||
                  (first == 9 && strncmp(image_repo, "localhost", 9) == 0)))
        image_repo = slash + 1;
    snprintf(out, size, "%s", image_repo);
}

/* Keeps the value of one header (trimmed) when its name matches. */
static void registry_keep_header(const char *line, size_t len, const char *name, char *out,
                                 size_t out_size)
{
    size_t n = strlen(name);

    if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return;
    line += n + 1;
    len -= n + 1;
    while (len > 0 && (*line == ' ' || *line == '\t')) {
        line++;
        len--;
    }
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n' || line[len - 1] == ' '))
        len--;
    snprintf(out, out_size, "%.*s", (int)len, line);
}

static size_t registry_header(char *buf, size_t size, size_t n, void *userdata)
{
    registry_answer_t *a = userdata;
    size_t len = size * n;

    if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
        a->www_auth[0] = '\0'; /* a new response (after a redirect or 100) */
        a->link[0] = '\0';
    }
    registry_keep_header(buf, len, "WWW-Authenticate", a->www_auth, sizeof(a->www_auth));
    registry_keep_header(buf, len, "Link", a->link, sizeof(a->link));
    return len;
}

static size_t registry_write(char *buf, size_t size, size_t n, void *userdata)
{
    registry_answer_t *a = userdata;

    return rf_buf_add(&a->body, buf, size * n) == 0 ? size * n : 0;
}

/* One GET; authorization is a whole header line or NULL, user/password Basic or NULL. */
static rf_err_t registry_get(const char *url, const char *authorization, const char *user,
                             const char *password, long timeout_ms, registry_answer_t *a,
                             char *errstr, size_t errstr_size)
{
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = NULL;
    char curl_err[CURL_ERROR_SIZE] = "";
    CURLcode rc;
    rf_err_t result = RF_OK;

    if (!curl)
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size, "cannot create a curl handle");
    rf_buf_reset(&a->body);
    a->www_auth[0] = a->link[0] = '\0';
    a->status = 0;
    headers = curl_slist_append(headers, "Accept: application/json");
    if (authorization)
        headers = curl_slist_append(headers, authorization);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, registry_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, a);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, registry_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, a);
    if (user && password) {
        curl_easy_setopt(curl, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(curl, CURLOPT_USERNAME, user);
        curl_easy_setopt(curl, CURLOPT_PASSWORD, password);
    }
    rc = curl_easy_perform(curl);
    if (rc != CURLE_OK)
        result = rf_errf(rc == CURLE_WRITE_ERROR ? RF_ERR_PERM : RF_ERR_RETRY, errstr,
                         errstr_size, "cannot read '%s': %s", url,
                         rc == CURLE_WRITE_ERROR ? "answer larger than 8 MiB"
                                                 : (*curl_err ? curl_err : curl_easy_strerror(rc)));
    else
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &a->status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return result;
}

/* The value of param in a challenge `Bearer realm="...",service="..."` into out. */
static int registry_challenge_param(const char *challenge, const char *param, char *out,
                                    size_t size)
{
    size_t n = strlen(param);
    const char *p = strchr(challenge, ' ');

    out[0] = '\0';
    while (p && *p) {
        const char *end;
        while (*p == ' ' || *p == ',')
            p++;
        if (strncasecmp(p, param, n) == 0 && p[n] == '=' && p[n + 1] == '"') {
            end = strchr(p + n + 2, '"');
            if (!end)
                return -1;
            snprintf(out, size, "%.*s", (int)(end - (p + n + 2)), p + n + 2);
            return 0;
        }
        /* Skip this pair: to the comma after its (possibly quoted) value. */
        end = strchr(p, '=');
        if (!end)
            return -1;
        p = end + 1;
        if (*p == '"') {
            p = strchr(p + 1, '"');
            if (!p)
                return -1;
            p++;
        }
        p = strchr(p, ',');
    }
    return -1;
}

/* Gets a bearer token from the realm the challenge names; fills authorization. */
static rf_err_t registry_token(const char *challenge, const char *repository, const char *user,
                               const char *password, long timeout_ms, registry_answer_t *a,
                               char *authorization, size_t auth_size, char *errstr,
                               size_t errstr_size)
{
    char realm[1024], service[256], scope[512];
    CURL *esc = curl_easy_init();
    char *service_q = NULL, *scope_q = NULL;
    rf_buf_t url = RF_BUF_INIT;
    json_t *doc = NULL;
    const char *token;
    rf_err_t result;

    if (registry_challenge_param(challenge, "realm", realm, sizeof(realm)) != 0 ||
        strncmp(realm, "http", 4) != 0) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                         "registry asks for a bearer token without a usable realm: '%s'",
                         challenge);
        goto out;
    }
    registry_challenge_param(challenge, "service", service, sizeof(service));
    if (registry_challenge_param(challenge, "scope", scope, sizeof(scope)) != 0)
        snprintf(scope, sizeof(scope), "repository:%s:pull", repository);
    service_q = curl_easy_escape(esc, service, 0);
    scope_q = curl_easy_escape(esc, scope, 0);
    rf_buf_addf(&url, "%s%sservice=%s&scope=%s", realm, strchr(realm, '?') ? "&" : "?",
                service_q ? service_q : "", scope_q ? scope_q : "");
    result = registry_get(rf_buf_str(&url), NULL, user, password, timeout_ms, a, errstr,
                          errstr_size);
    if (result != RF_OK)
        goto out;
    if (a->status != 200) {
        char why[600] = "";
        if (a->status == 401)
            snprintf(why, sizeof(why), " (%s)",
                     user ? "credentials refused" : "credentials required");
        else if (a->status == 403)
            snprintf(why, sizeof(why), " (scope '%s' denied)", scope);
        result = rf_errf(a->status >= 500 ? RF_ERR_RETRY : RF_ERR_PERM, errstr, errstr_size,
                         "token service '%s' answered %ld%s", realm, a->status, why);
        goto out;
    }
    doc = json_loadb(a->body.data ? a->body.data : "", a->body.len, 0, NULL);
    token = json_string_value(json_object_get(doc, "token"));
    if (!token)
        token = json_string_value(json_object_get(doc, "access_token"));
    if (!token || !*token || strpbrk(token, "\r\n")) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                         "token service '%s' answered no token", realm);
        goto out;
    }
    snprintf(authorization, auth_size, "Authorization: Bearer %s", token);
    if (strlen(token) + 23 >= auth_size)
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "token from '%s' is too long", realm);
out:
    json_decref(doc);
    curl_free(service_q);
    curl_free(scope_q);
    curl_easy_cleanup(esc);
    rf_buf_release(&url);
    return result;
}

/* The next page's URL from a Link header, absolute (into next), or "" when none. */
static void registry_next(const char *base_url, const char *link, char *next, size_t size)
{
    const char *lt = strchr(link, '<');
    const char *gt = lt ? strchr(lt, '>') : NULL;
    const char *scheme = strstr(base_url, "://");
    const char *path = scheme ? strchr(scheme + 3, '/') : NULL;
    int origin = path ? (int)(path - base_url) : (int)strlen(base_url);

    next[0] = '\0';
    if (!lt || !gt || !strstr(gt, "rel=\"next\""))
        return;
    if (lt[1] == '/')
        snprintf(next, size, "%.*s%.*s", origin, base_url, (int)(gt - lt - 1), lt + 1);
    else
        snprintf(next, size, "%.*s", (int)(gt - lt - 1), lt + 1);
}

rf_err_t rf_registry_tags(const char *base_url, const char *repository, const char *user,
                          const char *password, long timeout_ms, json_t **tags, char *errstr,
                          size_t errstr_size)
{
    registry_answer_t a;
    char url[4096], authorization[8192] = "";
    int basic = 0;
    rf_err_t result = RF_OK;
    size_t blen = strlen(base_url);

    *tags = json_array();
    memset(&a, 0, sizeof(a));
    rf_buf_init(&a.body, REGISTRY_MAX_ANSWER);
    while (blen > 0 && base_url[blen - 1] == '/')
        blen--;
    snprintf(url, sizeof(url), "%.*s/v2/%s/tags/list?n=1000", (int)blen, base_url, repository);
    for (int page = 0, tries = 0; page < REGISTRY_MAX_PAGES && url[0];) {
        json_t *doc, *list, *t;
        size_t i;

        result = registry_get(url, authorization[0] ? authorization : NULL,
                              basic ? user : NULL, basic ? password : NULL, timeout_ms, &a,
                              errstr, errstr_size);
        if (result != RF_OK)
            break;
        if (a.status == 401 && tries++ == 0) {
            /* Authenticate as the server asks, then ask again. */
            if (strncasecmp(a.www_auth, "Bearer ", 7) == 0) {
                char challenge[sizeof(a.www_auth)];
                snprintf(challenge, sizeof(challenge), "%s", a.www_auth);
                result = registry_token(challenge, repository, user, password, timeout_ms, &a,
                                        authorization, sizeof(authorization), errstr,
                                        errstr_size);
                if (result != RF_OK) {
                    /* Name the registry, not only its token service. */
                    char why[768];
                    snprintf(why, sizeof(why), "%s", errstr);
                    rf_errf(result, errstr, errstr_size, "registry '%.*s': %s", (int)blen,
                            base_url, why);
                    break;
                }
                continue;
            }
            if (strncasecmp(a.www_auth, "Basic", 5) == 0 && user && password) {
                basic = 1;
                continue;
            }
        }
        if (a.status == 401 && authorization[0]) {
            /* A token from its token service that the registry refuses: say why it says
             * (error="insufficient_scope" when the token lacks the pull access). */
            char why[128];
            if (registry_challenge_param(a.www_auth, "error", why, sizeof(why)) != 0)
                snprintf(why, sizeof(why), "token refused");
            result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                             "registry '%.*s' refused access to '%s' with the token of its"
                             " token service (%s)",
                             (int)blen, base_url, repository, why);
            break;
        }
        if (a.status == 401) {
            result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                             "registry '%.*s' refused access to '%s'%s", (int)blen, base_url,
                             repository, user ? " (credentials refused)" : " (no credentials)");
            break;
        }
        if (a.status == 404) {
            result = rf_errf(RF_ERR_NOTFOUND, errstr, errstr_size,
                             "registry '%.*s' has no repository '%s'", (int)blen, base_url,
                             repository);
            break;
        }
        if (a.status != 200) {
            result = rf_errf(a.status >= 500 ? RF_ERR_RETRY : RF_ERR_PERM, errstr, errstr_size,
                             "registry '%s' answered %ld", url, a.status);
            break;
        }
        doc = json_loadb(a.body.data ? a.body.data : "", a.body.len, 0, NULL);
        list = json_object_get(doc, "tags");
        if (!json_is_object(doc) || !(json_is_array(list) || json_is_null(list))) {
            json_decref(doc);
            result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                             "registry '%s' answered no tag list", url);
            break;
        }
        json_array_foreach(list, i, t) {
            if (json_is_string(t))
                json_array_append(*tags, t);
        }
        json_decref(doc);
        registry_next(base_url, a.link, url, sizeof(url));
        page++;
    }
    rf_buf_release(&a.body);
    if (result != RF_OK) {
        json_decref(*tags);
        *tags = NULL;
    }
    return result;
}
