/* POST /v1/completions and POST /v1/chat/completions (SPEC §3.4): the OpenAI-compatible face of a job.
 * The request becomes an ordinary job; its output is the POST's own response, streamed in OpenAI's chunk
 * format or sent whole when the job ends. A client that goes away cancels the job, as with SSE. */
#include "frontend/handlers.h"
#include "frontend/http.h"
#include "frontend/jobs.h"
#include "frontend/link.h"
#include "frontend/model_id.h"
#include "frontend/openai.h"
#include "frontend/request.h"
#include "frontend/sse.h"

int bw_handle_openai(bw_front *f, h2o_req_t *req, const bw_route_args *a)
{
    int chat = a->arg;
    if (bw_http_check_json_body(f, req) != 0) return 0;
    bw_job_params p;
    bw_openai_req o = {.chat = chat};
    json_t *root;
    json_t *bad =
        bw_request_parse_openai(req->entity.base, req->entity.len, bw_link_hello(f->link)->n_ctx, &p, &o, &root);
    if (bad) {
        bw_openai_send_invalid(req, bad);
        return 0;
    }
    /* the model is echoed, never used for routing: a worker serves one model */
    const char *model = o.model ? o.model : bw_model_id(f);
    char *model_copy = h2o_strdup(&req->pool, model, SIZE_MAX).base;
    bw_job *j = bw_handle_submit_job(f, req, &p);
    json_decref(root);
    bw_request_openai_free(&o);
    if (!j) return 0;
    bw_openai_ctx *ctx = h2o_mem_alloc_pool(&req->pool, sizeof(*ctx));
    bw_openai_ctx_init(ctx, chat, o.include_usage, model_copy, j);
    if (bw_sse_open_as(req, j, o.stream ? &bw_openai_stream_format : &bw_openai_whole_format, ctx) != 0) {
        /* a job made just now has no reader; should that ever change, fail loudly rather than leak it */
        bw_jobs_cancel(f->jobs, j);
        bw_http_send_error(req, 500, "INTERNAL", "the new job could not be attached to this response");
    }
    return 0;
}
