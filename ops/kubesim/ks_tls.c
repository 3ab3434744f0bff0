/* TLS material of kubesim: a self-signed CA and a loopback server certificate, generated once per state folder. */
#include "ks_tls.h"
#include "rf_buf.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *tls_read(const char *path)
{
    FILE *f = fopen(path, "r");
    rf_buf_t b = RF_BUF_INIT;
    char chunk[4096];
    size_t n;

    if (!f)
        return NULL;
    rf_buf_init(&b, 1 << 20);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        rf_buf_add(&b, chunk, n);
    fclose(f);
    return rf_buf_detach(&b);
}

static int tls_write(const char *path, const char *data, mode_t mode)
{
    char tmp[4200];
    int fd, result = -1;
    size_t len = strlen(data);

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    if (write(fd, data, len) == (ssize_t)len && fsync(fd) == 0)
        result = 0;
    close(fd);
    if (result == 0 && rename(tmp, path) != 0)
        result = -1;
    return result;
}

static char *pem_of(X509 *x, EVP_PKEY *k)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *out;
    long n;

    if (x)
        PEM_write_bio_X509(bio, x);
    else
        PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL);
    n = BIO_get_mem_data(bio, &data);
    out = strndup(data, (size_t)n);
    BIO_free(bio);
    return out;
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;

    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext)
        return -1;
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return 0;
}

/* ca: 1 for the CA, 0 for the server, 2 for a client certificate. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, int ca)
{
    X509 *x = X509_new();
    unsigned char serial[16];
    BIGNUM *bn;
    int ok = 1;

    RAND_bytes(serial, sizeof(serial));
    serial[0] &= 0x7f;
    bn = BN_bin2bn(serial, sizeof(serial), NULL);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    X509_set_version(x, 2);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), (long)3650 * 24 * 3600);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : X509_get_subject_name(x));
    if (ca == 2) {
        X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "O", MBSTRING_ASC,
                                   (const unsigned char *)"system:masters", -1, -1, 0);
        ok = add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
             add_ext(x, issuer, NID_key_usage, "critical,digitalSignature,keyEncipherment") == 0 &&
             add_ext(x, issuer, NID_ext_key_usage, "clientAuth") == 0 &&
             add_ext(x, issuer, NID_authority_key_identifier, "keyid:always") == 0;
    } else if (ca) {
        ok = add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE") == 0 &&
             add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature") == 0 &&
             add_ext(x, x, NID_subject_key_identifier, "hash") == 0;
    } else {
        ok = add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
             add_ext(x, issuer, NID_key_usage, "critical,digitalSignature,keyEncipherment") == 0 &&
             add_ext(x, issuer, NID_ext_key_usage, "serverAuth") == 0 &&
             add_ext(x, issuer, NID_subject_alt_name, "DNS:localhost,DNS:kubesim,IP:127.0.0.1") == 0 &&
             add_ext(x, issuer, NID_authority_key_identifier, "keyid:always") == 0;
    }
    if (!ok || X509_sign(x, issuer_key, EVP_sha256()) == 0) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static int tls_generate(const char *dir, char *errstr, size_t errstr_size)
{
    EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *key = EVP_EC_gen("P-256");
    EVP_PKEY *ckey = EVP_EC_gen("P-256");
    X509 *ca = NULL, *cert = NULL, *client = NULL;
    char path[4096], *pem;
    int result = -1;

    if (!ca_key || !key || !ckey) {
        snprintf(errstr, errstr_size, "cannot generate the tls keys");
        goto cleanup;
    }
    ca = make_cert(ca_key, "kubesim-ca", NULL, ca_key, 1);
    cert = ca ? make_cert(key, "kubesim", ca, ca_key, 0) : NULL;
    client = ca ? make_cert(ckey, "kubesim", ca, ca_key, 2) : NULL;
    if (!cert || !client) {
        snprintf(errstr, errstr_size, "cannot create the tls certificates");
        goto cleanup;
    }
    result = 0;
    snprintf(path, sizeof(path), "%s/ca.key", dir);
    pem = pem_of(NULL, ca_key);
    result |= tls_write(path, pem, 0600);
    free(pem);
    snprintf(path, sizeof(path), "%s/server.key", dir);
    pem = pem_of(NULL, key);
    result |= tls_write(path, pem, 0600);
    free(pem);
    snprintf(path, sizeof(path), "%s/server.crt", dir);
    pem = pem_of(cert, NULL);
    result |= tls_write(path, pem, 0644);
    free(pem);
    snprintf(path, sizeof(path), "%s/client.key", dir);
    pem = pem_of(NULL, ckey);
    result |= tls_write(path, pem, 0600);
    free(pem);
    snprintf(path, sizeof(path), "%s/client.crt", dir);
    pem = pem_of(client, NULL);
    result |= tls_write(path, pem, 0644);
    free(pem);
    snprintf(path, sizeof(path), "%s/ca.crt", dir);
    pem = pem_of(ca, NULL);
    result |= tls_write(path, pem, 0644);
    free(pem);
    if (result != 0)
        snprintf(errstr, errstr_size, "cannot write the tls files into '%s': %s", dir, strerror(errno));
cleanup:
    X509_free(ca);
    X509_free(cert);
    X509_free(client);
    EVP_PKEY_free(ckey);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(key);
    return result;
}

int ks_tls_load(ks_tls_t *tls, const char *dir, char *errstr, size_t errstr_size)
{
    char ca[4096], crt[4096], key[4096], ccrt[4096], ckey[4096];

    memset(tls, 0, sizeof(*tls));
    snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
    snprintf(crt, sizeof(crt), "%s/server.crt", dir);
    snprintf(key, sizeof(key), "%s/server.key", dir);
    snprintf(ccrt, sizeof(ccrt), "%s/client.crt", dir);
    snprintf(ckey, sizeof(ckey), "%s/client.key", dir);
    if ((access(ca, R_OK) != 0 || access(crt, R_OK) != 0 || access(key, R_OK) != 0 ||
         access(ccrt, R_OK) != 0 || access(ckey, R_OK) != 0) &&
        tls_generate(dir, errstr, errstr_size) != 0)
        return -1;
    tls->ca_pem = tls_read(ca);
    tls->cert_pem = tls_read(crt);
    tls->key_pem = tls_read(key);
    tls->client_cert_pem = tls_read(ccrt);
    tls->client_key_pem = tls_read(ckey);
    if (!tls->ca_pem || !tls->cert_pem || !tls->key_pem || !tls->client_cert_pem ||
        !tls->client_key_pem) {
        snprintf(errstr, errstr_size, "cannot read the tls files in '%s'", dir);
        ks_tls_release(tls);
        return -1;
    }
    return 0;
}

void ks_tls_release(ks_tls_t *tls)
{
    free(tls->ca_pem);
    free(tls->cert_pem);
    if (tls->key_pem)
        OPENSSL_cleanse(tls->key_pem, strlen(tls->key_pem));
    free(tls->key_pem);
    free(tls->client_cert_pem);
    if (tls->client_key_pem)
        OPENSSL_cleanse(tls->client_key_pem, strlen(tls->client_key_pem));
    free(tls->client_key_pem);
    memset(tls, 0, sizeof(*tls));
}
