/* The inference request bodies: SPEC §3.2's (flat or {"operation":"infer"}) and the OpenAI-compatible
 * completions and chat completions (SPEC §3.4): parsing, defaults and validation of every field.
 *
 * Owns: the field rules and the list of every failed field ({"field","constraint","message","value"?}).
 * Both body kinds share one set of field checks. Knows nothing of HTTP or jobs beyond filling
 * bw_job_params. */
#ifndef BW_FRONT_REQUEST_H
#define BW_FRONT_REQUEST_H

#include <jansson.h>
#include <stddef.h>

#include "frontend/jobs.h"

/* Parses body (already known to be JSON by content type). On success returns NULL and fills p; p->prompt
 * points into *root, which the caller releases with json_decref after submitting. On failure returns the
 * 400 response object: {"errors":[…]} for field failures, {"error":{code,message}} for a body that is not
 * a JSON object (caller sends and releases it). n_ctx: the engine's context per slot if known (0 =
 * unknown), for the max_tokens limit. */
json_t *bw_request_parse_infer(const char *body, size_t len, unsigned n_ctx, bw_job_params *p, json_t **root);

/* What an OpenAI request asks for beyond the job itself. */
typedef struct {
    int chat; /* /v1/chat/completions (set by the caller) */
    int stream;
    int include_usage; /* stream_options.include_usage */
    const char *model; /* echoed back; points into root, NULL when absent */
    char *packed;      /* chat: the conversation p->prompt points to (malloc'd; bw_request_openai_free) */
} bw_openai_req;

/* The same for /v1/completions (o->chat = 0) and /v1/chat/completions (o->chat = 1). On failure the
 * object is {"error":{code,message}} or {"errors":[…]} as above; the handler restates it in OpenAI's
 * error shape. */
json_t *bw_request_parse_openai(const char *body, size_t len, unsigned n_ctx, bw_job_params *p, bw_openai_req *o,
                                json_t **root);
void bw_request_openai_free(bw_openai_req *o);

#endif
