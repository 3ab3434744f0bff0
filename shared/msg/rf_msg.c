/* Consumed messages: bounds, parsing, schema and key checks; dead letters, times, ids. */
#include "rf_msg.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "rf_buf.h"
#include "rf_json.h"
#include "rf_jtext.h"

#define QUOTE_MAX 128 /* bytes of the input a reason quotes */

/* Offset of the first byte that is not valid UTF-8, or n. ASCII eight bytes at a time:
 * every stage checks each payload whole (issue 20: ~40 K instructions per message a byte
 * at a time). */
static size_t utf8_check(const unsigned char *s, size_t n)
{
    size_t i = 0, len;
    uint64_t w;

    while (i < n) {
        if (n - i >= 8) {
            memcpy(&w, s + i, 8);
            if ((w & 0x8080808080808080ULL) == 0) {
                i += 8;
                continue;
            }
        }
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        len = rf_jtext_utf8_len(s + i, n - i);
        if (len == 0)
            return i;
        i += len;
    }
    return n;
}

/* A NUL-terminated copy of at most max bytes of s, cut on a character boundary, with
 * every byte that is not UTF-8 (and NUL) replaced by U+FFFD. NULL when out of memory. */
static char *utf8_sanitize(const void *p, size_t n, size_t max)
{
    const unsigned char *s = p;
    rf_buf_t b = RF_BUF_INIT;
    size_t i = 0, len;

    rf_buf_init(&b, 0);
    while (i < n) {
        len = s[i] == 0 ? 0 : rf_jtext_utf8_len(s + i, n - i);
        if (b.len + (len ? len : 3) > max)
            break;
        if (len == 0) {
            rf_buf_add(&b, "\xEF\xBF\xBD", 3);
            i++;
        } else {
            rf_buf_add(&b, s + i, len);
            i += len;
        }
    }
    return rf_buf_detach(&b);
}

/* Writes at most QUOTE_MAX bytes of p into dst for a message: printable ASCII as is,
 * anything else as \xNN, "..." when cut. */
static void quote_bytes(char *dst, size_t size, const void *p, size_t n)
{
    const unsigned char *s = p;
    size_t i, used = 0;

    dst[0] = '\0';
    for (i = 0; i < n && i < QUOTE_MAX && used + 5 < size; i++) {
        if (s[i] >= 0x20 && s[i] < 0x7F && s[i] != '\'' && s[i] != '\\')
            used += (size_t)snprintf(dst + used, size - used, "%c", s[i]);
        else
            used += (size_t)snprintf(dst + used, size - used, "\\x%02x", s[i]);
    }
    if (i < n && used + 4 < size)
        snprintf(dst + used, size - used, "...");
}

/* The bytes nests_deeper stops at outside strings. */
static const unsigned char nest_bytes[256] = {
    ['"'] = 1, ['['] = 1, ['{'] = 1, [']'] = 1, ['}'] = 1};

/* Nonzero when arrays and objects nest deeper than max. Scans the bytes (strings and
 * their escapes skipped: rf_json_string_end, memchr for the quotes) without recursion, so
 * any input is safe. */
static int nests_deeper(const char *s, size_t n, int max)
{
    int depth = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        while (i < n && !nest_bytes[(unsigned char)s[i]])
            i++;
        if (i >= n)
            break;
        if (s[i] == '"') {
            i = rf_json_string_end(s, n, i) - 1; /* an unclosed string runs to the end */
        } else if (s[i] == '[' || s[i] == '{') {
            if (++depth > max)
                return 1;
        } else {
            depth--;
        }
    }
    return 0;
}

static rf_err_t check_key(const json_t *body, const void *key, size_t key_len, char *errstr,
                          size_t errstr_size)
{
    const json_t *env = json_object_get(body, "env");
    const json_t *service = json_object_get(body, "service");
    char want[300], quoted[QUOTE_MAX * 4 + 8];
    int n;

    if (!json_is_string(env) || !json_is_string(service))
        return RF_OK;
    n = snprintf(want, sizeof(want), "%s/%s", json_string_value(env), json_string_value(service));
    if (n < 0 || (size_t)n >= sizeof(want))
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "env and service too long for a key");
    if (!key || key_len == 0)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "missing key (expected '%s')", want);
    if (key_len != (size_t)n || memcmp(key, want, key_len) != 0) {
        quote_bytes(quoted, sizeof(quoted), key, key_len);
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "key '%s' does not match the body ('%s')",
                       quoted, want);
    }
    return RF_OK;
}

/* rf_msg_parse with the size checked on payload and jansson parsing text: payload, or its
 * lean copy. For a lean copy the payload's own UTF-8 and depth scans are left out: what
 * jansson parses it checks for UTF-8 (the same rule as utf8_check) and nests_deeper checks
 * text's depth, and rf_jtext_valid has checked the members left out of text for both
 * (depth LEAN_VALUE_DEPTH), so the payload passes them exactly when both parts do. */
static rf_err_t msg_parse(const rf_schema_registry_t *reg, const void *payload, size_t len,
                          const char *text, size_t text_len, const void *key, size_t key_len,
                          const char *expect_prefix, json_t **out, char *errstr, size_t errstr_size)
{
    json_t *body = NULL;
    json_error_t jerr;
    const json_t *schema;
    const char *name;
    char reason[768];
    size_t bad;
    rf_err_t result = RF_OK;

    *out = NULL;
    if (!payload || len == 0)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "empty payload");
    if (len > RF_MSG_MAX_BYTES)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "payload too large (%zu > %d bytes)", len,
                       RF_MSG_MAX_BYTES);
    bad = text == payload ? utf8_check(payload, len) : len;
    if (bad < len)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "payload is not valid UTF-8 (byte %zu)",
                       bad);
    if (nests_deeper(text, text_len, RF_MSG_MAX_DEPTH))
        return rf_errf(RF_ERR_PERM, errstr, errstr_size, "payload nests deeper than %d levels",
                       RF_MSG_MAX_DEPTH);
    body = rf_json_loadb(text, text_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!body)
        return rf_errf(RF_ERR_PERM, errstr, errstr_size,
                       "payload is not JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                       jerr.column);
    if (!json_is_object(body)) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "payload is not a JSON object");
        goto cleanup;
    }
    schema = json_object_get(body, "schema");
    if (!schema) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "missing field 'schema'");
        goto cleanup;
    }
    if (!json_is_string(schema)) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "field 'schema': expected string");
        goto cleanup;
    }
    name = json_string_value(schema);
    if (expect_prefix && strncmp(name, expect_prefix, strlen(expect_prefix)) != 0) {
        quote_bytes(reason, sizeof(reason), name, json_string_length(schema));
        result =
            rf_errf(RF_ERR_PERM, errstr, errstr_size,
                    "schema '%s' does not belong here (expected '%s*')", reason, expect_prefix);
        goto cleanup;
    }
    result = rf_schema_validate(reg, name, body, reason, sizeof(reason));
    if (result == RF_ERR_NOTFOUND) {
        quote_bytes(reason, sizeof(reason), name, json_string_length(schema));
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "unknown schema '%s'", reason);
        goto cleanup;
    }
    if (result != RF_OK) {
        result = rf_errf(RF_ERR_PERM, errstr, errstr_size, "invalid %s: %s", name, reason);
        goto cleanup;
    }
    result = check_key(body, key, key_len, errstr, errstr_size);

cleanup:
    if (result == RF_OK)
        *out = body;
    else
        json_decref(body);
    return result;
}

rf_err_t rf_msg_parse(const rf_schema_registry_t *reg, const void *payload, size_t len,
                      const void *key, size_t key_len, const char *expect_prefix, json_t **out,
                      char *errstr, size_t errstr_size)
{
    return msg_parse(reg, payload, len, payload, len, key, key_len, expect_prefix, out, errstr,
                     errstr_size);
}

static int lean_keeps(const char *const *keep, const char *key, size_t klen)
{
    for (; *keep; keep++)
        if (strlen(*keep) == klen && memcmp(*keep, key, klen) == 0)
            return 1;
    return 0;
}

/* Members of one object of the lean array, at most (more: parsed whole). */
#define LEAN_MEMBERS_MAX 32
/* The levels a member of an object of the lean array may nest: it is 3 levels down (the
 * payload, the array, the object). */
#define LEAN_VALUE_DEPTH (RF_MSG_MAX_DEPTH - 3)

/* Appends the object at s[i] (after blanks) to out with only the members keep names and the
 * others to rest, comma-separated as they came. Those others jansson never sees, so each is
 * checked by rf_jtext_valid, and no key may come twice. Returns the index just past the
 * object, or len + 1 when it is not an object as expected, has more than LEAN_MEMBERS_MAX
 * members, a key with an escape (it could name a kept member in other bytes) or twice, or a
 * member to pass on that rf_jtext_valid refuses: the payload is then parsed whole. */
static size_t lean_copy_object(const char *s, size_t len, size_t i, const char *const *keep,
                               rf_buf_t *out, rf_buf_t *rest)
{
    const char *keys[LEAN_MEMBERS_MAX];
    size_t klens[LEAN_MEMBERS_MAX], n = 0;
    int first = 1;

    i = rf_jtext_ws(s, len, i);
    if (i >= len || s[i] != '{')
        return len + 1;
    rf_buf_addc(out, '{');
    i = rf_jtext_ws(s, len, i + 1);
    if (i < len && s[i] == '}') {
        rf_buf_addc(out, '}');
        return i + 1;
    }
    for (;;) {
        size_t ks = i, ke, vs, ve, klen;
        int kept;
        if (i >= len || s[i] != '"' || n == LEAN_MEMBERS_MAX)
            return len + 1;
        ke = rf_jtext_valid(s, len, ks);
        if (ke > len || memchr(s + ks + 1, '\\', ke - ks - 2))
            return len + 1;
        klen = ke - ks - 2;
        for (size_t k = 0; k < n; k++)
            if (klens[k] == klen && memcmp(keys[k], s + ks + 1, klen) == 0)
                return len + 1; /* jansson refuses it (JSON_REJECT_DUPLICATES) */
        keys[n] = s + ks + 1;
        klens[n++] = klen;
        i = rf_jtext_ws(s, len, ke);
        if (i >= len || s[i] != ':')
            return len + 1;
        vs = rf_jtext_ws(s, len, i + 1);
        kept = lean_keeps(keep, s + ks + 1, klen);
        /* a kept member is only delimited: jansson parses it */
        ve = kept ? rf_jtext_skip(s, len, vs) : rf_jtext_valid_depth(s, len, vs, LEAN_VALUE_DEPTH);
        if (ve > len || ve == vs)
            return len + 1;
        if (kept ? !first : rest->len > 0)
            rf_buf_addc(kept ? out : rest, ',');
        if (kept)
            first = 0;
        rf_buf_add(kept ? out : rest, s + ks, ve - ks);
        i = rf_jtext_ws(s, len, ve);
        if (i < len && s[i] == '}')
            break;
        if (i >= len || s[i] != ',')
            return len + 1;
        i = rf_jtext_ws(s, len, i + 1);
    }
    rf_buf_addc(out, '}');
    return i + 1;
}

/* The lean copy of the object s[0..len) into out: the objects of its member array with
 * only the members keep names; the others' texts go to a new lean (NULL when the text is
 * not as expected: an object whose member array, once, is an array of objects that
 * lean_copy_object takes). The rest of the object is copied as it is, for jansson. */
static rf_msg_lean_t *lean_copy(const char *s, size_t len, const char *array,
                                const char *const *keep, rf_buf_t *out)
{
    rf_buf_t rests = RF_BUF_INIT, rest = RF_BUF_INIT;
    size_t i = rf_jtext_ws(s, len, 0), alen = strlen(array), cap = 0, n = 0;
    size_t *offs = NULL, *lens = NULL;
    rf_msg_lean_t *l = NULL;
    int found = 0;

    if (i >= len || s[i] != '{')
        goto fail;
    rf_buf_addc(out, '{');
    i = rf_jtext_ws(s, len, i + 1);
    while (i < len && s[i] != '}') {
        size_t ks = i, ke, vs, ve;
        if (s[i] != '"' || (ke = rf_json_string_end(s, len, i)) > len)
            goto fail;
        i = rf_jtext_ws(s, len, ke);
        if (i >= len || s[i] != ':')
            goto fail;
        vs = rf_jtext_ws(s, len, i + 1);
        if (out->len > 1)
            rf_buf_addc(out, ',');
        rf_buf_add(out, s + ks, vs - ks); /* the key and ':' */
        if (ke - ks - 2 != alen || memcmp(s + ks + 1, array, alen) != 0) {
            ve = rf_jtext_skip(s, len, vs);
            if (ve > len || ve == vs)
                goto fail;
            rf_buf_add(out, s + vs, ve - vs);
        } else {
            size_t j;
            if (found || vs >= len || s[vs] != '[')
                goto fail; /* twice (jansson refuses it) or not an array: parsed whole */
            found = 1;
            rf_buf_addc(out, '[');
            j = rf_jtext_ws(s, len, vs + 1);
            if (j < len && s[j] == ']')
                j++; /* empty: the schema's to refuse */
            else
                for (;;) {
                    size_t ee;
                    if (n == cap) {
                        cap = cap ? 2 * cap : 8;
                        offs = realloc(offs, cap * sizeof(*offs));
                        lens = realloc(lens, cap * sizeof(*lens));
                        if (!offs || !lens)
                            abort();
                    }
                    if (n > 0)
                        rf_buf_addc(out, ',');
                    rf_buf_reset(&rest);
                    ee = lean_copy_object(s, len, j, keep, out, &rest);
                    if (ee > len)
                        goto fail;
                    offs[n] = rests.len;
                    lens[n] = rest.len;
                    rf_buf_add(&rests, rest.data ? rest.data : "", rest.len);
                    rf_buf_addc(&rests, '\0');
                    n++;
                    j = rf_jtext_ws(s, len, ee);
                    if (j < len && s[j] == ']') {
                        j++;
                        break;
                    }
                    if (j >= len || s[j] != ',')
                        goto fail;
                    j = rf_jtext_ws(s, len, j + 1);
                }
            rf_buf_addc(out, ']');
            ve = j;
        }
        i = rf_jtext_ws(s, len, ve);
        if (i < len && s[i] == ',') {
            i = rf_jtext_ws(s, len, i + 1);
            if (i >= len || s[i] != '"')
                goto fail; /* a comma before '}' is not JSON */
        } else if (i >= len || s[i] != '}') {
            goto fail;
        }
    }
    if (i >= len || !found || rf_jtext_ws(s, len, i + 1) != len || rf_buf_addc(out, '}') != 0)
        goto fail;
    l = calloc(1, sizeof(*l) + n * sizeof(*l->rest) + n * sizeof(*l->rest_len));
    if (!l)
        abort();
    l->n = n;
    l->rest = (const char **)(l + 1);
    l->rest_len = (size_t *)(l->rest + n);
    l->text = rf_buf_detach(&rests);
    for (size_t k = 0; k < n; k++) {
        l->rest[k] = l->text + offs[k];
        l->rest_len[k] = lens[k];
    }
fail:
    free(offs);
    free(lens);
    rf_buf_release(&rest);
    rf_buf_release(&rests);
    return l;
}

rf_err_t rf_msg_parse_lean(const rf_schema_registry_t *reg, const void *payload, size_t len,
                           const void *key, size_t key_len, const char *expect_prefix,
                           const char *array, const char *const *keep, json_t **out,
                           rf_msg_lean_t **lean, char *errstr, size_t errstr_size)
{
    rf_buf_t text = RF_BUF_INIT;
    rf_msg_lean_t *l = NULL;
    rf_err_t result = RF_ERR_PERM;

    *lean = NULL;
    if (payload && len > 0 && len <= RF_MSG_MAX_BYTES)
        l = lean_copy(payload, len, array, keep, &text);
    if (l)
        result = msg_parse(reg, payload, len, rf_buf_str(&text), text.len, key, key_len,
                           expect_prefix, out, errstr, errstr_size);
    rf_buf_release(&text);
    if (result == RF_OK) {
        *lean = l;
        return RF_OK;
    }
    /* Refused, or not as expected: parsed whole, so the reason is the one it always was. */
    rf_msg_lean_destroy(l);
    return rf_msg_parse(reg, payload, len, key, key_len, expect_prefix, out, errstr, errstr_size);
}

void rf_msg_lean_destroy(rf_msg_lean_t *l)
{
    if (!l)
        return;
    free(l->text);
    free(l);
}

char *rf_msg_dlq_build(const char *stage, const char *reason, const char *topic, int32_t partition,
                       int64_t offset, const void *key, size_t key_len, const void *payload,
                       size_t len)
{
    char now[RF_MSG_TIME_SIZE];
    char *why = NULL, *safe_key = NULL, *b64 = NULL, *text = NULL;
    size_t keep = len > RF_MSG_DLQ_PAYLOAD_MAX ? RF_MSG_DLQ_PAYLOAD_MAX : len;
    json_t *msg = NULL;

    if (!stage || !reason || !topic)
        return NULL;
    why = utf8_sanitize(reason[0] ? reason : "no reason given",
                        reason[0] ? strlen(reason) : strlen("no reason given"),
                        RF_MSG_DLQ_REASON_MAX);
    if (key)
        safe_key = utf8_sanitize(key, key_len, RF_MSG_DLQ_KEY_MAX);
    b64 = malloc(4 * ((keep + 2) / 3) + 1);
    if (!why || (key && !safe_key) || !b64)
        goto cleanup;
    b64[0] = '\0';
    if (keep > 0)
        EVP_EncodeBlock((unsigned char *)b64, payload, (int)keep);
    rf_msg_now_iso(now, sizeof(now));
    msg = json_pack(
        "{s:s, s:s, s:s, s:s, s:i, s:I, s:o, s:s, s:I, s:b, s:s}", "schema", "relfleet.dlq.v1",
        "stage", stage, "reason", why, "source_topic", topic, "partition", (int)partition, "offset",
        (json_int_t)offset, "key", safe_key ? json_string(safe_key) : json_null(), "payload_base64",
        b64, "payload_size", (json_int_t)len, "payload_truncated", keep < len, "rejected_at", now);
    if (!msg)
        goto cleanup;
    text = json_dumps(msg, JSON_COMPACT);

cleanup:
    json_decref(msg);
    free(why);
    free(safe_key);
    free(b64);
    return text;
}

int rf_msg_iso_from_ms(int64_t unix_ms, char *buf, size_t size)
{
    int64_t secs = unix_ms / 1000;
    int64_t ms = unix_ms % 1000;
    char tmp[64];
    struct tm tm;
    time_t t;
    int n;

    if (ms < 0) {
        ms += 1000;
        secs--;
    }
    t = (time_t)secs;
    if (size > 0)
        buf[0] = '\0';
    if (!gmtime_r(&t, &tm))
        return -1;
    n = snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)ms);
    if (n < 0 || (size_t)n >= size)
        return -1;
    memcpy(buf, tmp, (size_t)n + 1);
    return 0;
}

int rf_msg_now_iso(char *buf, size_t size)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return rf_msg_iso_from_ms((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, buf, size);
}

int rf_msg_uuid4(char out[RF_MSG_UUID_SIZE])
{
    unsigned char b[16];
    size_t got = 0;
    ssize_t n;

    out[0] = '\0';
    while (got < sizeof(b)) {
        n = getrandom(b + got, sizeof(b) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    b[6] = (unsigned char)((b[6] & 0x0F) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3F) | 0x80); /* variant RFC 4122 */
    snprintf(out, RF_MSG_UUID_SIZE,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return 0;
}
