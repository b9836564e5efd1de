/* The inference request body of SPEC §3.2: parsing, defaults and validation of every field.
 *
 * Owns: the field rules and the 400 body listing every failed field. Knows nothing of HTTP or jobs
 * beyond filling bw_job_params. */
#ifndef BW_FRONT_REQUEST_H
#define BW_FRONT_REQUEST_H

#include <jansson.h>
#include <stddef.h>

#include "frontend/jobs.h"

/* Parses body (already known to be JSON by content type). On success returns NULL and fills p; p->prompt
 * points into *root, which the caller releases with json_decref after submitting. On failure returns the
 * status to send in *status (400) and the response object (caller sends and releases it). n_ctx: the
 * engine's context per slot if known (0 = unknown), for the max_tokens limit. */
json_t *bw_request_parse_infer(const char *body, size_t len, unsigned n_ctx, bw_job_params *p, json_t **root);

#endif
