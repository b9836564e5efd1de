/* OpenAI response shapes; see openai.h. A job's outcome decides between a finish_reason and an error. */
#include "frontend/openai.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "frontend/buf.h"
#include "frontend/http.h"

void bw_openai_ctx_init(bw_openai_ctx *ctx, int chat, int include_usage, const char *model, const bw_job *j)
{
    const char *id = bw_job_id(j);
    if (strncmp(id, "job-", 4) == 0) id += 4;
    ctx->chat = chat;
    ctx->include_usage = include_usage;
    ctx->model = model;
    snprintf(ctx->id, sizeof(ctx->id), "%s-%s", chat ? "chatcmpl" : "cmpl", id);
    ctx->created = (long long)time(NULL);
}

/* How a job ended, in OpenAI's terms. */
typedef struct {
    int failed;
    const char *finish_reason;  /* "stop" | "length" */
    const char *code, *message; /* when failed */
} outcome;

static outcome outcome_of(const bw_job *j)
{
    const bw_job_outcome *r = bw_job_outcome_of(j);
    outcome o = {0};
    if (r && r->end == BW_JOB_ENDED) {
        o.finish_reason = r->stop == BW_STOP_MAX_TOKENS ? "length" : "stop";
        return o;
    }
    o.failed = 1;
    o.code = r && r->code[0] ? r->code : "INTERNAL";
    o.message = r && r->message ? r->message : "the job failed";
    return o;
}

static int status_of(const char *code)
{
    static const char *const unavailable[] = {"ENGINE_LOST", "QUEUE_TIMEOUT", "QUEUE_FULL", "SHUTTING_DOWN",
                                              "ENGINE_SHUTDOWN"};
    static const char *const bad_input[] = {"BAD_REQUEST", "TOKENIZE_ERROR", "context_length_exceeded"};
    for (size_t i = 0; i < sizeof(unavailable) / sizeof(unavailable[0]); i++)
        if (strcmp(code, unavailable[i]) == 0) return 503;
    for (size_t i = 0; i < sizeof(bad_input) / sizeof(bad_input[0]); i++)
        if (strcmp(code, bad_input[i]) == 0) return 400;
    return 500;
}

static void add_str(bw_buf *out, const char *s)
{
    bw_buf_adds(out, "\"");
    bw_buf_add_json_str(out, s, strlen(s));
    bw_buf_adds(out, "\"");
}

/* {"id":…,"object":…,"created":…,"model":…, — the members every chunk and response starts with */
static void head(const bw_openai_ctx *c, bw_buf *out, const char *object)
{
    bw_buf_adds(out, "{\"id\":\"");
    bw_buf_adds(out, c->id);
    bw_buf_addf(out, "\",\"object\":\"%s\",\"created\":%lld,\"model\":", object, c->created);
    add_str(out, c->model);
    bw_buf_adds(out, ",");
}

static void usage(const bw_job *j, bw_buf *out)
{
    unsigned long long p = bw_job_n_prompt(j), n = bw_job_n_tokens(j);
    const bw_job_outcome *o = bw_job_outcome_of(j);
    uint32_t acc = o ? o->pred_accepted : 0, rej = o ? o->pred_rejected : 0;
    bw_buf_addf(out,
                "\"usage\":{\"prompt_tokens\":%llu,\"completion_tokens\":%llu,\"total_tokens\":%llu,"
                "\"completion_tokens_details\":{\"accepted_prediction_tokens\":%u,\"rejected_prediction_tokens\":%u}}",
                p, n, p + n, acc, rej);
}

static void error_body(bw_buf *out, int status, const outcome *o)
{
    bw_buf_addf(out, "{\"error\":{\"message\":");
    add_str(out, o->message);
    bw_buf_addf(out,
                ",\"type\":\"%s\",\"param\":null,\"code\":", status >= 500 ? "server_error" : "invalid_request_error");
    add_str(out, o->code);
    bw_buf_adds(out, "}}");
}

/* One streamed chunk whose only choice carries `text` (chat: as delta content; role only with text) and
 * finish_reason. */
static void chunk(const bw_openai_ctx *c, bw_buf *out, const char *text, size_t len, const char *finish, int role)
{
    bw_buf_adds(out, "data: ");
    head(c, out, c->chat ? "chat.completion.chunk" : "text_completion");
    if (c->chat) {
        bw_buf_adds(out, "\"choices\":[{\"index\":0,\"delta\":{");
        if (role) bw_buf_adds(out, "\"role\":\"assistant\",");
        if (text) {
            bw_buf_adds(out, "\"content\":\"");
            bw_buf_add_json_str(out, text, len);
            bw_buf_adds(out, "\"");
        }
        bw_buf_adds(out, "},\"logprobs\":null,\"finish_reason\":");
    } else {
        bw_buf_adds(out, "\"choices\":[{\"index\":0,\"text\":\"");
        if (text) bw_buf_add_json_str(out, text, len);
        bw_buf_adds(out, "\",\"logprobs\":null,\"finish_reason\":");
    }
    if (finish) add_str(out, finish);
    else bw_buf_adds(out, "null");
    bw_buf_adds(out, "}]}\n\n");
}

static void stream_started(void *ctx, bw_buf *out, const bw_job *j)
{
    (void)j;
    const bw_openai_ctx *c = ctx;
    if (c->chat) chunk(c, out, "", 0, NULL, 1); /* OpenAI opens a chat stream with the role */
}

static void stream_token(void *ctx, bw_buf *out, const bw_job *j, size_t i)
{
    const char *text;
    size_t len;
    uint64_t ts;
    bw_job_token(j, i, &text, &len, &ts);
    if (len) chunk(ctx, out, text, len, NULL, 0); /* an empty delta (held-back text) says nothing */
}

static void stream_terminal(void *ctx, bw_buf *out, const bw_job *j, h2o_req_t *req)
{
    (void)req;
    const bw_openai_ctx *c = ctx;
    outcome o = outcome_of(j);
    if (o.failed) {
        bw_buf_adds(out, "data: ");
        error_body(out, status_of(o.code), &o);
        bw_buf_adds(out, "\n\n");
    } else {
        chunk(c, out, NULL, 0, o.finish_reason, 0);
        if (c->include_usage) {
            bw_buf_adds(out, "data: ");
            head(c, out, c->chat ? "chat.completion.chunk" : "text_completion");
            bw_buf_adds(out, "\"choices\":[],");
            usage(j, out);
            bw_buf_adds(out, "}\n\n");
        }
    }
    bw_buf_adds(out, "data: [DONE]\n\n");
}

static void whole_terminal(void *ctx, bw_buf *out, const bw_job *j, h2o_req_t *req)
{
    const bw_openai_ctx *c = ctx;
    outcome o = outcome_of(j);
    int status = o.failed ? status_of(o.code) : 200;
    if (o.failed) {
        error_body(out, status, &o);
    } else {
        head(c, out, c->chat ? "chat.completion" : "text_completion");
        bw_buf_adds(out, c->chat ? "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\""
                                 : "\"choices\":[{\"index\":0,\"text\":\"");
        for (size_t i = 0, n = bw_job_n_tokens(j); i < n; i++) {
            const char *text;
            size_t len;
            uint64_t ts;
            bw_job_token(j, i, &text, &len, &ts);
            bw_buf_add_json_str(out, text, len); /* a token never ends inside a UTF-8 sequence */
        }
        bw_buf_adds(out,
                    c->chat ? "\"},\"logprobs\":null,\"finish_reason\":" : "\",\"logprobs\":null,\"finish_reason\":");
        add_str(out, o.finish_reason);
        bw_buf_adds(out, "}],");
        usage(j, out);
        bw_buf_adds(out, "}");
    }
    req->res.status = status;
    req->res.reason = status == 200   ? "OK"
                      : status == 400 ? "Bad Request"
                      : status == 503 ? "Service Unavailable"
                                      : "Internal Server Error";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
}

/* A stream answers 200 only once the engine has accepted the job: a request it refuses (a prompt and
 * max_tokens over the context) gets OpenAI's 400 instead of an error inside a 200 stream. */
const bw_sse_format bw_openai_stream_format = {0, stream_started, stream_token, stream_terminal, whole_terminal};
const bw_sse_format bw_openai_whole_format = {1, NULL, NULL, whole_terminal, NULL};

void bw_openai_send_invalid(h2o_req_t *req, json_t *bad)
{
    json_t *errs = json_object_get(bad, "errors");
    if (!errs) { /* {"error":{code,message}}: malformed JSON, not an object */
        json_t *e = json_incref(json_object_get(bad, "error"));
        json_decref(bad);
        bw_http_send_error_obj(req, 400, e);
        return;
    }
    bw_buf msg;
    bw_buf_init(&msg);
    size_t i;
    json_t *e;
    json_array_foreach(errs, i, e)
    {
        if (i) bw_buf_adds(&msg, "; ");
        const char *m = json_string_value(json_object_get(e, "message"));
        if (m) bw_buf_adds(&msg, m);
    }
    size_t len;
    char *text = bw_buf_take(&msg, &len);
    json_t *first = json_array_get(errs, 0);
    json_t *err = json_pack("{s:s,s:s,s:O?,s:O}", "code", "VALIDATION_FAILED", "message",
                            text ? text : "invalid request", "param", json_object_get(first, "field"), "errors", errs);
    free(text);
    json_decref(bad);
    bw_http_send_error_obj(req, 400, err);
}
