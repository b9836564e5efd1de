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
/* {"error":{"code":…,"message":…}}; on the OpenAI routes (/v1/completions, /v1/chat/…, /v1/models) the
 * error also carries OpenAI's "type" and "param", so both kinds of client read it. */
void bw_http_send_error(h2o_req_t *req, int status, const char *code, const char *message);
/* The same with the members of "error" given (taken); type/param are added on the OpenAI routes. */
void bw_http_send_error_obj(h2o_req_t *req, int status, json_t *error);

/* The checks before a JSON body is parsed (SPEC §3.2): a content type other than application/json → 415,
 * a body over --max-body → 413, a worker shutting down → 503. Returns -1 after answering. */
int bw_http_check_json_body(bw_front *f, h2o_req_t *req);

/* More than one Content-Length (RFC 9112 §6.3): answers 400, closes the connection and returns -1. */
int bw_http_reject_ambiguous_framing(h2o_req_t *req);

/* Applies the bearer-token rule (two Authorization headers: 400); on failure it has answered and
 * returns -1. */
int bw_http_authorize(bw_front *f, h2o_req_t *req);

/* The value of query parameter `name` (not decoded; our parameters are plain numbers), or -1. */
int bw_http_query(h2o_req_t *req, const char *name, char *out, size_t cap);
/* A request header's value by lower-case name, or NULL. */
const h2o_iovec_t *bw_http_header(h2o_req_t *req, const char *name, size_t name_len);

#endif
