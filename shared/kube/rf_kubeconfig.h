/* Kubeconfig loading: one context resolved into server, TLS material and credentials. */
#ifndef RF_KUBECONFIG_H
#define RF_KUBECONFIG_H

#include <stddef.h>

typedef struct rf_kubeconfig {
    char *path;      /* the file it came from ("in-cluster" for the service account) */
    char *context;   /* the context used */
    char *cluster;   /* the context's cluster name */
    char *user;      /* the context's user name ("" when the context names none) */
    char *server;    /* base URL, without a trailing slash: "https://10.0.0.1:6443" */
    char *namespace; /* the context's namespace, "default" when unset */

    /* PEM blobs, read from the *-data fields (base64) or from the files they name
     * (relative to the kubeconfig's folder); NULL when absent. */
    char *ca_pem;
    size_t ca_pem_len;
    char *cert_pem;
    size_t cert_pem_len;
    char *key_pem;
    size_t key_pem_len;

    char *token;      /* bearer token (the `token` field, or the file's content at load) */
    char *token_file; /* absolute path of `tokenFile`, re-read by rf_kube as it rotates */
    char *username;   /* basic auth, when the user has username and password */
    char *password;
    char *proxy_url;              /* the cluster's proxy-url, or NULL */
    int insecure_skip_tls_verify; /* only when the file says `insecure-skip-tls-verify: true` */
} rf_kubeconfig_t;

/* Loads path (NULL: $KUBECONFIG's first entry, else ~/.kube/config) and resolves context
 * (NULL: current-context). Returns NULL and fills errstr naming the file and the missing or
 * bad field. exec and auth-provider users are refused by name (not supported). */
rf_kubeconfig_t *rf_kubeconfig_load(const char *path, const char *context, char *errstr,
                                    size_t errstr_size);

/* The configuration of a pod's service account: $KUBERNETES_SERVICE_HOST/_PORT and
 * /var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace} (dir overrides that
 * folder, for tests). Returns NULL with errstr when not running in a cluster. */
rf_kubeconfig_t *rf_kubeconfig_in_cluster(const char *dir, char *errstr, size_t errstr_size);

void rf_kubeconfig_destroy(rf_kubeconfig_t *cfg);

#endif
