/* The HTTP(S) front of kubesim: libmicrohttpd, bearer tokens, fault injection and the /kubesim/ control paths. */
#ifndef KS_HTTP_H
#define KS_HTTP_H

#include "ks_api.h"

typedef struct ks_http ks_http_t;

typedef struct ks_http_conf {
    const char *host;      /* loopback address to bind */
    int port;              /* 0 picks a free port */
    const char *token;     /* required bearer token, NULL for none */
    const char *tls_cert;  /* PEM, NULL for plain HTTP */
    const char *tls_key;   /* PEM */
} ks_http_conf_t;

/* Starts serving api (borrowed). NULL on error with the reason in errstr. */
ks_http_t *ks_http_start(ks_api_t *api, const ks_http_conf_t *conf, char *errstr,
                         size_t errstr_size);
/* The bound port. */
int ks_http_port(const ks_http_t *h);
void ks_http_stop(ks_http_t *h);

#endif
