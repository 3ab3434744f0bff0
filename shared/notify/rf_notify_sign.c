/* Notification signatures through OpenSSL's HMAC and base64. */
#include "rf_notify_sign.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rf_notify_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                           unsigned char out[32])
{
    unsigned int out_len = 32;

    HMAC(EVP_sha256(), key, (int)key_len, data, len, out, &out_len);
}

size_t rf_notify_base64(const void *data, size_t len, char *out)
{
    return (size_t)EVP_EncodeBlock((unsigned char *)out, data, (int)len);
}

int rf_notify_url_encode(const char *s, char *out, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;

    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                    (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' || *p == '_' || *p == '*';
        size_t need = plain || *p == ' ' ? 1 : 3;
        if (n + need >= size) {
            if (size > 0)
                out[0] = '\0';
            return -1;
        }
        if (plain) {
            out[n++] = (char)*p;
        } else if (*p == ' ') {
            out[n++] = '+';
        } else {
            out[n++] = '%';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        }
    }
    if (size > 0)
        out[n] = '\0';
    return size > 0 ? 0 : -1;
}

void rf_notify_dingtalk_sign(const char *secret, long long timestamp_ms,
                             char out[RF_NOTIFY_DINGTALK_SIGN_SIZE])
{
    char to_sign[4200];
    char b64[48];
    unsigned char mac[32];
    int n;

    n = snprintf(to_sign, sizeof(to_sign), "%lld\n%s", timestamp_ms, secret);
    if (n < 0 || (size_t)n >= sizeof(to_sign))
        n = (int)sizeof(to_sign) - 1; /* secrets are far shorter; never read past the buffer */
    rf_notify_hmac_sha256(secret, strlen(secret), to_sign, (size_t)n, mac);
    rf_notify_base64(mac, sizeof(mac), b64);
    rf_notify_url_encode(b64, out, RF_NOTIFY_DINGTALK_SIGN_SIZE);
}

void rf_notify_webhook_sign(const char *key, long long timestamp_s, const void *body, size_t len,
                            char out[RF_NOTIFY_WEBHOOK_SIGN_SIZE])
{
    unsigned char mac[32];
    char ts[32];
    int n = snprintf(ts, sizeof(ts), "%lld.", timestamp_s);
    char *signed_text = malloc((size_t)n + len + 1);

    if (!signed_text)
        abort();
    memcpy(signed_text, ts, (size_t)n);
    memcpy(signed_text + n, body, len);
    rf_notify_hmac_sha256(key, strlen(key), signed_text, (size_t)n + len, mac);
    free(signed_text);
    memcpy(out, "sha256=", 7);
    for (int i = 0; i < 32; i++)
        snprintf(out + 7 + 2 * i, 3, "%02x", mac[i]);
}
