/* Fuzz target: rf_kubeconfig_load on a file written per input, in a folder with PEM files. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rf_kubeconfig.h"

/*
 * Input: byte 0 picks the context (current-context, or one of the fixture's names), the
 * rest is the kubeconfig file. It is written into a private folder that also holds the
 * fixture's pki/ and token files, so relative file references resolve. Besides sanitizer
 * reports, the target aborts when a contract of rf_kubeconfig.h breaks: a loaded config
 * has its names, a server without a trailing slash and consistent PEM lengths; a refusal
 * fills errstr naming the file.
 */

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_kubeconfig: check failed: %s (line %d)\n", #cond, __LINE__);     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char *const fuzz_contexts[] = {
    NULL, "data", "files", "token", "token-file", "basic", "anonymous", "ctx",
};

static char fuzz_dir[256];
static char fuzz_path[300];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_copy(const char *from, const char *to)
{
    char buf[8192];
    FILE *in = fopen(from, "rb");
    FILE *out = fopen(to, "wb");
    size_t n;

    if (!in || !out) {
        fprintf(stderr, "fuzz_kubeconfig: cannot copy '%s' to '%s': %s\n", from, to,
                strerror(errno));
        exit(1);
    }
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        fwrite(buf, 1, n, out);
    fclose(in);
    if (fclose(out) != 0)
        exit(1);
}

static void fuzz_cleanup(void)
{
    static const char *const files[] = {"pki/ca.crt", "pki/client.crt", "pki/client.key", "token",
                                        "config"};
    char path[400];

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", fuzz_dir, files[i]);
        unlink(path);
    }
    snprintf(path, sizeof(path), "%s/pki", fuzz_dir);
    rmdir(path);
    rmdir(fuzz_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *const files[] = {"pki/ca.crt", "pki/client.crt", "pki/client.key", "token"};
    const char *tmp = getenv("TMPDIR");
    char from[600], to[400];

    (void)argc;
    (void)argv;
    snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/fuzz-kubeconfig-XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(fuzz_dir)) {
        fprintf(stderr, "fuzz_kubeconfig: mkdtemp: %s\n", strerror(errno));
        exit(1);
    }
    atexit(fuzz_cleanup);
    snprintf(to, sizeof(to), "%s/pki", fuzz_dir);
    mkdir(to, 0700);
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(from, sizeof(from), "%s/tests/fixtures/kubeconfig/%s", RELFLEET_SOURCE_DIR,
                 files[i]);
        snprintf(to, sizeof(to), "%s/%s", fuzz_dir, files[i]);
        fuzz_copy(from, to);
    }
    snprintf(fuzz_path, sizeof(fuzz_path), "%s/config", fuzz_dir);
    return 0;
}

static void fuzz_check_config(const rf_kubeconfig_t *cfg)
{
    size_t n;

    FUZZ_CHECK(cfg->path && strcmp(cfg->path, fuzz_path) == 0);
    FUZZ_CHECK(cfg->context && cfg->cluster && cfg->user && cfg->namespace);
    FUZZ_CHECK(cfg->server && *cfg->server);
    n = strlen(cfg->server);
    FUZZ_CHECK(cfg->server[n - 1] != '/');
    FUZZ_CHECK((cfg->ca_pem != NULL) == (cfg->ca_pem_len > 0));
    FUZZ_CHECK((cfg->cert_pem != NULL) == (cfg->cert_pem_len > 0));
    FUZZ_CHECK((cfg->key_pem != NULL) == (cfg->key_pem_len > 0));
    FUZZ_CHECK((cfg->cert_pem != NULL) == (cfg->key_pem != NULL));
    FUZZ_CHECK((cfg->username != NULL) == (cfg->password != NULL));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *context;
    rf_kubeconfig_t *cfg;
    char errstr[1024];
    FILE *f;

    if (size < 1)
        return 0;
    context = fuzz_contexts[data[0] % (sizeof(fuzz_contexts) / sizeof(fuzz_contexts[0]))];
    f = fopen(fuzz_path, "wb");
    FUZZ_CHECK(f != NULL);
    FUZZ_CHECK(fwrite(data + 1, 1, size - 1, f) == size - 1);
    FUZZ_CHECK(fclose(f) == 0);
    errstr[0] = '\0';
    cfg = rf_kubeconfig_load(fuzz_path, context, errstr, sizeof(errstr));
    if (!cfg) {
        FUZZ_CHECK(errstr[0] != '\0');
        if (!strstr(errstr, fuzz_path)) {
            fprintf(stderr, "fuzz_kubeconfig: error does not name the file: %s\n", errstr);
            abort();
        }
        return 0;
    }
    fuzz_check_config(cfg);
    rf_kubeconfig_destroy(cfg);
    return 0;
}
