/* OpenAI's wire shapes for the completions and chat completions routes (SPEC §3.4): the SSE chunk
 * format (ending with data: [DONE], usage on request) and the whole non-streamed response, as two
 * bw_sse_format's over the one stream machinery, plus the error shape of a failed validation.
 *
 * Owns: ids, finish reasons, usage and the mapping of our job outcomes onto OpenAI's. Knows nothing of
 * routing or request parsing. */
#ifndef BW_FRONT_OPENAI_H
#define BW_FRONT_OPENAI_H

#include <jansson.h>

#include "frontend/jobs.h"
#include "frontend/sse.h"

/* Per request; lives in the request's pool. */
typedef struct {
    int chat;
    int include_usage;
    const char *model; /* echoed back */
    char id[64];       /* chatcmpl-… / cmpl-… (the job's uuid) */
    long long created; /* unix seconds */
} bw_openai_ctx;

extern const bw_sse_format bw_openai_stream_format;
extern const bw_sse_format bw_openai_whole_format;

/* Fills ctx for job j. */
void bw_openai_ctx_init(bw_openai_ctx *ctx, int chat, int include_usage, const char *model, const bw_job *j);

/* Answers a request refused by bw_request_parse_openai (its object is taken) in OpenAI's error shape:
 * every failed field listed in "errors", the first one named as "param". */
void bw_openai_send_invalid(h2o_req_t *req, json_t *bad);

#endif
