/* POST /v1/inference, POST /v1/jobs: validate, create the job, answer with its stream link at once
 * (the dual-call pattern of SPEC §3.2: generation starts now, the client connects to the stream next). */
#include <string.h>
#include <strings.h>

#include "frontend/handlers.h"
#include "frontend/http.h"
#include "frontend/jobs.h"
#include "frontend/link.h"
#include "frontend/request.h"

static int is_json_type(const h2o_iovec_t *v)
{
    static const char want[] = "application/json";
    size_t n = sizeof(want) - 1;
    if (v->len < n || strncasecmp(v->base, want, n) != 0) return 0;
    return v->len == n || v->base[n] == ';' || v->base[n] == ' ';
}

int bw_handle_submit(bw_front *f, h2o_req_t *req, int jobs_form)
{
    ssize_t ct = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (ct >= 0 && !is_json_type(&req->headers.entries[ct].value)) {
        bw_http_send_error(req, 415, "UNSUPPORTED_MEDIA_TYPE", "send the request body as application/json");
        return 0;
    }
    if (req->entity.len > f->opts->max_body) {
        bw_http_send_error(req, 413, "PAYLOAD_TOO_LARGE", "the request body exceeds --max-body");
        return 0;
    }
    if (f->stopping) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("5"));
        bw_http_send_error(req, 503, "SHUTTING_DOWN", "this worker is shutting down");
        return 0;
    }
    bw_job_params p;
    json_t *root;
    json_t *bad = bw_request_parse_infer(req->entity.base, req->entity.len, bw_link_hello(f->link)->n_ctx, &p, &root);
    if (bad) {
        bw_http_send_obj(req, 400, bad);
        return 0;
    }
    bw_job *j;
    enum bw_jobs_submit_result rc = bw_jobs_submit(f->jobs, &p, &j);
    json_decref(root);
    if (rc == BW_JOBS_FULL) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
        bw_http_send_error(req, 503, "QUEUE_FULL", "too many jobs are waiting for the engine; retry later");
        return 0;
    }
    if (rc != BW_JOBS_OK) {
        bw_http_send_error(req, 500, "INTERNAL", "out of memory");
        return 0;
    }
    char url[128];
    snprintf(url, sizeof(url), "/v1/%s/%s/stream", jobs_form ? "jobs" : "inference", bw_job_id(j));
    bw_http_send_obj(req, 200, json_pack("{s:s,s:s}", "job_id", bw_job_id(j), "sse_url", url));
    return 0;
}
