/* TLS material of kubesim: a self-signed CA and a loopback server certificate, generated once per state folder. */
#ifndef KS_TLS_H
#define KS_TLS_H

#include <stddef.h>

typedef struct ks_tls {
    char *ca_pem;   /* the CA certificate clients verify against */
    char *cert_pem; /* the server certificate (127.0.0.1, localhost) */
    char *key_pem;  /* the server key */
    char *client_cert_pem; /* a client certificate (CN kubesim, O system:masters) for kubeconfig */
    char *client_key_pem;
} ks_tls_t;

/* Loads DIR/ca.crt, DIR/server.crt, DIR/server.key, DIR/client.crt and DIR/client.key,
 * creating them (and DIR/ca.key) when absent. 0 on success, -1 with the reason in errstr. */
int ks_tls_load(ks_tls_t *tls, const char *dir, char *errstr, size_t errstr_size);
void ks_tls_release(ks_tls_t *tls);

#endif
