/* Cross-origin requests from browsers (--cors-origin): a web page on another origin may call the worker
 * with fetch() and read its streams with EventSource.
 *
 * Owns: the Access-Control-* headers. A preflight (OPTIONS with Access-Control-Request-Method) is
 * answered here, before authentication: browsers never send credentials with it. Every other response to
 * an allowed origin names that origin and exposes the headers a client reads. Off (no headers, OPTIONS
 * answered as before) unless --cors-origin is given. */
#ifndef BW_FRONT_CORS_H
#define BW_FRONT_CORS_H

#include "frontend/front.h"

/* Returns 1 when req was a preflight and has been answered; otherwise adds the response headers for an
 * allowed Origin (none for another origin) and returns 0. */
int bw_cors_apply(bw_front *f, h2o_req_t *req);

#endif
