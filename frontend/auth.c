/* Bearer tokens; see auth.h. The comparison hashes both sides first so that neither the content nor the
 * length of the configured token leaks through timing. */
#include "frontend/auth.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct bw_auth {
    int enabled;
    unsigned char digest[SHA256_DIGEST_LENGTH];
};

/* Reads the first line of a token file (systemd credentials and secrets files end with a newline). */
static int read_token_file(const char *path, char *out, size_t cap, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open --api-token-file '%s': %s", path, strerror(errno));
        return -1;
    }
    size_t n = fread(out, 1, cap - 1, f);
    int toolong = !feof(f) && fgetc(f) != EOF;
    fclose(f);
    out[n] = '\0';
    out[strcspn(out, "\r\n")] = '\0';
    if (toolong) {
        snprintf(err, errlen, "--api-token-file '%s' is larger than %zu bytes", path, cap - 1);
        return -1;
    }
    return 0;
}

bw_auth *bw_auth_create(const bw_front_opts *o, char *err, size_t errlen)
{
    char token[4096];
    token[0] = '\0';
    const char *env = getenv("LLORCH_API_TOKEN");
    if (o->api_token_file) {
        if (read_token_file(o->api_token_file, token, sizeof(token), err, errlen)) return NULL;
        if (!token[0]) {
            snprintf(err, errlen, "--api-token-file '%s' holds an empty token", o->api_token_file);
            return NULL;
        }
    } else if (env && env[0]) {
        if (strlen(env) >= sizeof(token)) {
            snprintf(err, errlen, "LLORCH_API_TOKEN is longer than %zu bytes", sizeof(token) - 1);
            return NULL;
        }
        strcpy(token, env);
    }
    /* the engine and anything else this process starts has no use for the token: it is not inherited.
     * Called before any thread exists (nng's start with the link), so unsetenv is safe here. */
    if (env) {
        OPENSSL_cleanse((char *)env, strlen(env));
        unsetenv("LLORCH_API_TOKEN");
    }
    if (o->local_mode && token[0]) {
        snprintf(err, errlen,
                 "--local-mode serves without authentication: unset LLORCH_API_TOKEN / "
                 "--api-token-file, or drop --local-mode");
        return NULL;
    }
    if (!o->local_mode && !token[0]) {
        snprintf(err, errlen,
                 "network mode needs a bearer token: set LLORCH_API_TOKEN or --api-token-file "
                 "(or use --local-mode for 127.0.0.1 without auth)");
        return NULL;
    }
    bw_auth *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->enabled = !o->local_mode;
    if (a->enabled) SHA256((const unsigned char *)token, strlen(token), a->digest);
    OPENSSL_cleanse(token, sizeof(token));
    return a;
}

void bw_auth_free(bw_auth *a)
{
    if (a) OPENSSL_cleanse(a, sizeof(*a));
    free(a);
}

int bw_auth_enabled(const bw_auth *a) { return a->enabled; }

enum bw_auth_result bw_auth_check(const bw_auth *a, const char *header, size_t len)
{
    if (!a->enabled) return BW_AUTH_OK;
    if (!header || len == 0) return BW_AUTH_MISSING;
    /* the scheme is case-insensitive (RFC 9110 §11.1); the token is compared byte for byte, spaces
     * included: "Bearer  t" or "Bearer t " is not "Bearer t" */
    if (len < 7 || strncasecmp(header, "Bearer ", 7) != 0) return BW_AUTH_INVALID;
    const char *tok = header + 7;
    size_t n = len - 7;
    if (n == 0) return BW_AUTH_MISSING;
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)tok, n, d);
    return CRYPTO_memcmp(d, a->digest, sizeof(d)) == 0 ? BW_AUTH_OK : BW_AUTH_INVALID;
}
