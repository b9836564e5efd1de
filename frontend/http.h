/* Response and request helpers shared by the handlers: JSON bodies, the error shapes of SPEC §3.1/§3.2,
 * the bearer check, and small request parsers.
 *
 * Owns: the exact bytes of error bodies, so every handler answers the same way. */
#ifndef BW_FRONT_HTTP_H
#define BW_FRONT_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "frontend/front.h"

/* Sends body (copied) as application/json. */
void bw_http_send_json(h2o_req_t *req, int status, const char *body, size_t len);
/* Sends and releases obj. */
void bw_http_send_obj(h2o_req_t *req, int status, json_t *obj);
/* {"error":{"code":…,"message":…}} */
void bw_http_send_error(h2o_req_t *req, int status, const char *code, const char *message);

/* Applies the bearer-token rule; on failure it has sent the 401 and returns -1. */
int bw_http_authorize(bw_front *f, h2o_req_t *req);

/* The value of query parameter `name` (not decoded; our parameters are plain numbers), or -1. */
int bw_http_query(h2o_req_t *req, const char *name, char *out, size_t cap);
/* A request header's value by lower-case name, or NULL. */
const h2o_iovec_t *bw_http_header(h2o_req_t *req, const char *name, size_t name_len);

#endif
