/* Notification requests on libcurl: SMTP, DingTalk custom robots and signed webhooks. */
#include "rf_notify.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rf_buf.h"
#include "rf_cloudevents.h"
#include "rf_notify_format.h"
#include "rf_notify_sign.h"
#include "rf_release.h"

#define NOTIFY_ANSWER_MAX (16 * 1024)
#define NOTIFY_CONNECT_TIMEOUT_MS 5000L
#define NOTIFY_USER_AGENT "relfleet-notify/1"

struct rf_notify_send {
    rf_notify_channel_t channel;
    CURL *easy;
    struct curl_slist *headers;
    struct curl_slist *rcpt;
    rf_buf_t body;   /* what is sent: the email, or the POST body */
    size_t sent;     /* bytes of the email handed to curl */
    rf_buf_t answer; /* what came back (HTTP), capped */
    char curl_err[CURL_ERROR_SIZE];
};

static const char *const channel_names[] = {"email", "dingtalk", "webhook"};

const char *rf_notify_channel_name(rf_notify_channel_t c)
{
    return (unsigned)c < sizeof(channel_names) / sizeof(channel_names[0]) ? channel_names[c] : NULL;
}

int rf_notify_channel_parse(const char *s)
{
    for (size_t i = 0; s && i < sizeof(channel_names) / sizeof(channel_names[0]); i++)
        if (strcmp(channel_names[i], s) == 0)
            return (int)i;
    return -1;
}

/* Calls fn on each comma-separated item of list (trimmed of spaces); stops at nonzero. */
static int notify_each_item(const char *list, int (*fn)(const char *item, void *arg), void *arg)
{
    const char *p = list;
    char item[512];

    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        int rc;
        while (len > 0 && *p == ' ') {
            p++;
            len--;
        }
        while (len > 0 && p[len - 1] == ' ')
            len--;
        if (len >= sizeof(item))
            len = sizeof(item) - 1;
        memcpy(item, p, len);
        item[len] = '\0';
        rc = fn(item, arg);
        if (rc)
            return rc;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

static int notify_check_address(const char *item, void *arg)
{
    char addr[512];

    if (rf_notify_format_address(item, addr, sizeof(addr)) != 0 || strcmp(addr, item) != 0) {
        snprintf(arg, 256, "'%.200s' is not an email address", item);
        return 1;
    }
    return 0;
}

rf_err_t rf_notify_target_check(rf_notify_channel_t c, const char *target, char *errstr,
                                size_t errstr_size)
{
    char why[256];
    CURLU *u;
    CURLUcode uc;
    char *scheme = NULL, *host = NULL;
    rf_err_t result = RF_OK;

    if (!*target || strlen(target) > 2048)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "target must be 1 to 2048 bytes");
    for (const char *p = target; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f || (c != RF_NOTIFY_EMAIL && *p == ' '))
            return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                           "target '%.200s' holds a space or control character", target);
    if (c == RF_NOTIFY_EMAIL) {
        if (notify_each_item(target, notify_check_address, why))
            return rf_errf(RF_ERR_PERM, errstr, errstr_size, "email target: %s", why);
        return RF_OK;
    }
    u = curl_url();
    if (!u)
        abort();
    uc = curl_url_set(u, CURLUPART_URL, target, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_get(u, CURLUPART_HOST, &host, 0);
    if (uc != CURLUE_OK)
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "%s target '%.200s' is not a URL: %s",
                         rf_notify_channel_name(c), target, curl_url_strerror(uc));
    else if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size,
                         "%s target '%.200s' is not an http:// or https:// URL",
                         rf_notify_channel_name(c), target);
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return result;
}

static int notify_check_outcome(const char *item, void *arg)
{
    int s = rf_release_status_parse(item);

    if (s < 0 ||
        (!rf_release_status_terminal((rf_release_status_t)s) && s != RF_STATUS_AWAITING_APPROVAL)) {
        snprintf(arg, 256,
                 "'%.100s' is not an outcome (succeeded, failed, cancelled, superseded, rejected,"
                 " awaiting_approval)",
                 item);
        return 1;
    }
    return 0;
}

rf_err_t rf_notify_outcomes_check(const char *list, char *errstr, size_t errstr_size)
{
    char why[256];
    int seen[RF_STATUS__COUNT] = {0};
    const char *p = list;

    if (notify_each_item(list, notify_check_outcome, why))
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "%s", why);
    /* Each appears once. */
    while (*p) {
        size_t len = strcspn(p, ",");
        char item[32];
        int s;
        while (len > 0 && *p == ' ') {
            p++;
            len--;
        }
        snprintf(item, sizeof(item), "%.*s", (int)strcspn(p, ", "), p);
        s = rf_release_status_parse(item);
        if (s >= 0 && seen[s]++)
            return rf_errf(RF_ERR_PERM, errstr, errstr_size, "outcome '%s' is listed twice", item);
        p += len;
        if (*p == ',')
            p++;
    }
    return RF_OK;
}

void rf_notify_target_redact(const char *target, char *out, size_t size)
{
    size_t n = 0;
    int in_value = 0, in_query = 0;

    if (size == 0)
        return;
    for (const char *p = target; *p && n + 4 < size; p++) {
        if (*p == '?' || (in_query && *p == '&')) {
            in_query = 1;
            in_value = 0;
            out[n++] = *p;
        } else if (in_query && *p == '=' && !in_value) {
            in_value = 1;
            memcpy(out + n, "=***", 4);
            n += 4;
        } else if (!in_value) {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
}

long rf_notify_backoff_ms(int attempts, long base_ms, long max_ms, unsigned int rnd)
{
    long d = base_ms;

    for (int i = 1; i < attempts && d < max_ms; i++)
        d = d > max_ms / 2 ? max_ms : d * 2;
    if (d > max_ms)
        d = max_ms;
    return d / 2 + (long)(rnd % (unsigned long)(d / 2 + 1));
}

static size_t notify_on_answer(char *data, size_t size, size_t nmemb, void *arg)
{
    rf_notify_send_t *s = arg;

    rf_buf_add(&s->answer, data, size * nmemb); /* past the cap the rest is dropped */
    return size * nmemb;
}

static size_t notify_on_read(char *buf, size_t size, size_t nmemb, void *arg)
{
    rf_notify_send_t *s = arg;
    size_t left = s->body.len - s->sent;
    size_t n = size * nmemb < left ? size * nmemb : left;

    memcpy(buf, s->body.data + s->sent, n);
    s->sent += n;
    return n;
}

static int notify_add_rcpt(const char *item, void *arg)
{
    rf_notify_send_t *s = arg;
    char rcpt[520];

    snprintf(rcpt, sizeof(rcpt), "<%s>", item);
    s->rcpt = curl_slist_append(s->rcpt, rcpt);
    if (!s->rcpt)
        abort();
    return 0;
}

static rf_err_t notify_setup_email(rf_notify_send_t *s, const rf_notify_request_t *req,
                                   const json_t *result, char *errstr, size_t errstr_size)
{
    char from[512];
    long ssl = CURLUSESSL_TRY;

    if (!req->smtp_url || !*req->smtp_url)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "cannot send email: setting 'smtp_url' is not set");
    if (strncmp(req->smtp_url, "smtp://", 7) != 0 && strncmp(req->smtp_url, "smtps://", 8) != 0)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "cannot send email: smtp_url is not smtp:// or smtps://");
    if (rf_notify_format_address(req->smtp_from ? req->smtp_from : "", from, sizeof(from)) != 0)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "cannot send email: smtp_from '%.200s' holds no address",
                       req->smtp_from ? req->smtp_from : "");
    if (req->secret && (!req->smtp_user || !*req->smtp_user))
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "cannot log in to the smtp server: setting 'smtp_user' is not set");
    if (req->smtp_starttls && strcmp(req->smtp_starttls, "off") == 0)
        ssl = CURLUSESSL_NONE;
    else if (req->smtp_starttls && strcmp(req->smtp_starttls, "required") == 0)
        ssl = CURLUSESSL_ALL;
    notify_each_item(req->target, notify_add_rcpt, s);
    rf_notify_format_email(result, req->smtp_from, req->target,
                           req->message_id ? req->message_id : "", req->now_ms / 1000, &s->body);
    {
        char mail_from[520];
        snprintf(mail_from, sizeof(mail_from), "<%s>", from);
        curl_easy_setopt(s->easy, CURLOPT_MAIL_FROM, mail_from);
    }
    curl_easy_setopt(s->easy, CURLOPT_URL, req->smtp_url);
    curl_easy_setopt(s->easy, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(s->easy, CURLOPT_MAIL_RCPT, s->rcpt);
    curl_easy_setopt(s->easy, CURLOPT_USE_SSL, ssl);
    if (req->smtp_ca_file && *req->smtp_ca_file)
        curl_easy_setopt(s->easy, CURLOPT_CAINFO, req->smtp_ca_file);
    curl_easy_setopt(s->easy, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(s->easy, CURLOPT_READFUNCTION, notify_on_read);
    curl_easy_setopt(s->easy, CURLOPT_READDATA, s);
    curl_easy_setopt(s->easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t)s->body.len);
    if (req->secret && req->smtp_user) {
        curl_easy_setopt(s->easy, CURLOPT_USERNAME, req->smtp_user);
        curl_easy_setopt(s->easy, CURLOPT_PASSWORD, req->secret);
    }
    return RF_OK;
}

static void notify_add_header(rf_notify_send_t *s, const char *fmt, const char *value)
{
    char line[512];

    snprintf(line, sizeof(line), fmt, value);
    s->headers = curl_slist_append(s->headers, line);
    if (!s->headers)
        abort();
}

/* The CloudEvents HTTP binding in binary mode: ce-<attribute> headers beside the body, whose
 * Content-Type is the event's datacontenttype. */
static rf_err_t notify_add_cloudevent(rf_notify_send_t *s, const rf_notify_request_t *req,
                                      const json_t *result, char *errstr, size_t errstr_size)
{
    rf_cloudevent_t ev;
    const char *value;
    char line[400];

    if (rf_cloudevent_from_result(result, req->ce_source ? req->ce_source : "/relfleet", &ev,
                                  errstr, errstr_size) != RF_OK)
        return RF_ERR_PERM;
    for (int i = 0; i < RF_CLOUDEVENT_ATTRS; i++) {
        const char *name = rf_cloudevent_attr(&ev, i, &value);
        snprintf(line, sizeof(line), "ce-%s: %s", name, value);
        notify_add_header(s, "%s", line);
    }
    return RF_OK;
}

static rf_err_t notify_setup_http(rf_notify_send_t *s, const rf_notify_request_t *req,
                                  const json_t *result, char *errstr, size_t errstr_size)
{
    const char *event_id = json_string_value(json_object_get(result, "event_id"));
    rf_buf_t url = RF_BUF_INIT;
    char num[32];

    if (rf_notify_target_check(req->channel, req->target, errstr, errstr_size) != RF_OK)
        return RF_ERR_PERM;
    rf_buf_adds(&url, req->target);
    if (req->channel == RF_NOTIFY_DINGTALK) {
        char *text = rf_notify_format_dingtalk(result);
        if (!text) {
            rf_buf_release(&url);
            return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                           "cannot build the dingtalk message: invalid UTF-8 in the result");
        }
        rf_buf_adds(&s->body, text);
        free(text);
        if (req->secret) {
            char sign[RF_NOTIFY_DINGTALK_SIGN_SIZE];
            rf_notify_dingtalk_sign(req->secret, req->now_ms, sign);
            rf_buf_addf(&url, "%ctimestamp=%lld&sign=%s", strchr(req->target, '?') ? '&' : '?',
                        req->now_ms, sign);
        }
    } else {
        rf_buf_adds(&s->body, req->result_text);
        notify_add_header(s, "X-Relfleet-Event-Id: %s", event_id ? event_id : "");
        notify_add_header(s, "Idempotency-Key: %s", event_id ? event_id : "");
        snprintf(num, sizeof(num), "%lld", req->now_ms / 1000);
        notify_add_header(s, "X-Relfleet-Timestamp: %s", num);
        if (req->secret) {
            char sig[RF_NOTIFY_WEBHOOK_SIGN_SIZE];
            rf_notify_webhook_sign(req->secret, req->now_ms / 1000, s->body.data, s->body.len, sig);
            notify_add_header(s, "X-Relfleet-Signature: %s", sig);
        }
        if (req->cloudevents &&
            notify_add_cloudevent(s, req, result, errstr, errstr_size) != RF_OK) {
            rf_buf_release(&url);
            return RF_ERR_PERM;
        }
    }
    notify_add_header(s, "Content-Type: %s", "application/json; charset=utf-8");
    notify_add_header(s, "Expect:%s", "");
    curl_easy_setopt(s->easy, CURLOPT_URL, rf_buf_str(&url));
    rf_buf_release(&url);
    curl_easy_setopt(s->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->headers);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, s->body.data);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)s->body.len);
    curl_easy_setopt(s->easy, CURLOPT_USERAGENT, NOTIFY_USER_AGENT);
    curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, notify_on_answer);
    curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
    return RF_OK;
}

rf_notify_send_t *rf_notify_send_new(const rf_notify_request_t *req, char *errstr,
                                     size_t errstr_size)
{
    rf_notify_send_t *s = calloc(1, sizeof(*s));
    json_t *result = NULL;
    rf_err_t err;

    if (!s)
        abort();
    s->channel = req->channel;
    rf_buf_init(&s->body, 0);
    rf_buf_init(&s->answer, NOTIFY_ANSWER_MAX);
    s->easy = curl_easy_init();
    if (!s->easy)
        abort();
    result = json_loads(req->result_text ? req->result_text : "", 0, NULL);
    if (!json_is_object(result)) {
        err = rf_errf(RF_ERR_PERM, errstr, errstr_size, "the result to notify is not JSON");
        goto fail;
    }
    curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(s->easy, CURLOPT_ERRORBUFFER, s->curl_err);
    curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, req->timeout_ms);
    curl_easy_setopt(s->easy, CURLOPT_CONNECTTIMEOUT_MS,
                     req->timeout_ms < NOTIFY_CONNECT_TIMEOUT_MS ? req->timeout_ms
                                                                 : NOTIFY_CONNECT_TIMEOUT_MS);
    if (req->channel == RF_NOTIFY_EMAIL)
        err = notify_setup_email(s, req, result, errstr, errstr_size);
    else if (req->channel == RF_NOTIFY_DINGTALK || req->channel == RF_NOTIFY_WEBHOOK)
        err = notify_setup_http(s, req, result, errstr, errstr_size);
    else
        err = rf_errf(RF_ERR_PERM, errstr, errstr_size, "unknown channel %d", (int)req->channel);
    if (err != RF_OK)
        goto fail;
    json_decref(result);
    return s;
fail:
    json_decref(result);
    rf_notify_send_destroy(s);
    return NULL;
}

void rf_notify_send_destroy(rf_notify_send_t *s)
{
    if (!s)
        return;
    if (s->easy)
        curl_easy_cleanup(s->easy);
    curl_slist_free_all(s->headers);
    curl_slist_free_all(s->rcpt);
    rf_buf_release(&s->body);
    rf_buf_release(&s->answer);
    free(s);
}

CURL *rf_notify_send_easy(rf_notify_send_t *s)
{
    return s->easy;
}

/* Copies at most 200 bytes of text, control bytes as spaces, for a reason. */
static void notify_quote(const char *text, char *out, size_t size)
{
    size_t n = 0;

    for (; text && *text && n + 1 < size && n < 200; text++)
        out[n++] = (unsigned char)*text < 0x20 ? ' ' : *text;
    out[n] = '\0';
}

rf_err_t rf_notify_dingtalk_verdict(long http_status, const char *body, char *errstr,
                                    size_t errstr_size)
{
    json_t *answer, *code;
    char msg[256];
    long long errcode;

    if (http_status == 408 || http_status == 429 || http_status >= 500)
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size, "dingtalk answered HTTP %ld",
                       http_status);
    if (http_status != 200)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "dingtalk answered HTTP %ld", http_status);
    answer = json_loads(body ? body : "", 0, NULL);
    code = json_object_get(answer, "errcode");
    if (!json_is_integer(code)) {
        notify_quote(body, msg, sizeof(msg));
        json_decref(answer);
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size, "dingtalk answer has no errcode: '%s'",
                       msg);
    }
    errcode = (long long)json_integer_value(code);
    notify_quote(json_string_value(json_object_get(answer, "errmsg")), msg, sizeof(msg));
    json_decref(answer);
    if (errcode == 0)
        return RF_OK;
    if (errcode == 130101)
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size,
                       "dingtalk robot throttled the message (errcode 130101: %s)", msg);
    if (errcode == -1)
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size, "dingtalk is busy (errcode -1: %s)", msg);
    if (errcode == 310000)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "dingtalk refused the message: keyword, signature or timestamp"
                       " (errcode 310000: %s)",
                       msg);
    return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                   "dingtalk refused the message (errcode %lld: %s)", errcode, msg);
}

rf_err_t rf_notify_webhook_verdict(long http_status, char *errstr, size_t errstr_size)
{
    if (http_status >= 200 && http_status < 300)
        return RF_OK;
    if (http_status == 408 || http_status == 425 || http_status == 429 || http_status >= 500)
        return rf_errf(RF_ERR_RETRY, errstr, errstr_size, "webhook answered HTTP %ld", http_status);
    return rf_errf(RF_ERR_PERM, errstr, errstr_size, "webhook answered HTTP %ld", http_status);
}

/* Transfer errors that another attempt cannot fix. */
static int notify_curl_permanent(CURLcode code)
{
    switch (code) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_LOGIN_DENIED:
    case CURLE_USE_SSL_FAILED:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_AUTH_ERROR:
    case CURLE_NOT_BUILT_IN:
        return 1;
    default:
        return 0;
    }
}

rf_err_t rf_notify_send_verdict(rf_notify_send_t *s, CURLcode code, char *errstr,
                                size_t errstr_size)
{
    const char *what = rf_notify_channel_name(s->channel);
    long status = 0;

    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    if (s->channel == RF_NOTIFY_EMAIL) {
        if (code == CURLE_OK)
            return RF_OK;
        char reply[32] = "";
        if (status)
            snprintf(reply, sizeof(reply), " (smtp reply %ld)", status);
        return rf_errf(notify_curl_permanent(code) || status >= 500 ? RF_ERR_PERM : RF_ERR_RETRY,
                       errstr, errstr_size, "cannot send email: %s%s",
                       *s->curl_err ? s->curl_err : curl_easy_strerror(code), reply);
    }
    if (code != CURLE_OK)
        return rf_errf(notify_curl_permanent(code) ? RF_ERR_PERM : RF_ERR_RETRY, errstr,
                       errstr_size, "cannot reach the %s receiver: %s", what,
                       *s->curl_err ? s->curl_err : curl_easy_strerror(code));
    if (s->channel == RF_NOTIFY_DINGTALK)
        return rf_notify_dingtalk_verdict(status, rf_buf_str(&s->answer), errstr, errstr_size);
    return rf_notify_webhook_verdict(status, errstr, errstr_size);
}

rf_err_t rf_notify_send_run(rf_notify_send_t *s, char *errstr, size_t errstr_size)
{
    return rf_notify_send_verdict(s, curl_easy_perform(s->easy), errstr, errstr_size);
}
