/* Bearer-token authentication (SPEC §3.1).
 *
 * Owns: the token (from LLORCH_API_TOKEN or --api-token-file), the mode rules (local mode has none and
 * refuses one) and the constant-time comparison. The token is never logged or echoed. */
#ifndef BW_FRONT_AUTH_H
#define BW_FRONT_AUTH_H

#include <stddef.h>

#include "frontend/opts.h"

typedef struct bw_auth bw_auth;

enum bw_auth_result { BW_AUTH_OK = 0, BW_AUTH_MISSING, BW_AUTH_INVALID };

/* NULL with a one-line reason when the configuration is refused (no token in network mode, a token in
 * local mode, an unreadable or empty token file). */
bw_auth *bw_auth_create(const bw_front_opts *o, char *err, size_t errlen);
void bw_auth_free(bw_auth *a);

int bw_auth_enabled(const bw_auth *a);
/* Checks an Authorization header value (NULL when absent). */
enum bw_auth_result bw_auth_check(const bw_auth *a, const char *header, size_t len);

#endif
