/* POST /v1/inference, POST /v1/jobs: validate, create the job, answer with its stream link at once
 * (the dual-call pattern of SPEC §3.2: generation starts now, the client connects to the stream next). */
#include <stdio.h>

#include "frontend/accesslog.h"
#include "frontend/handlers.h"
#include "frontend/http.h"
#include "frontend/jobs.h"
#include "frontend/link.h"
#include "frontend/request.h"

bw_job *bw_handle_submit_job(bw_front *f, h2o_req_t *req, const bw_job_params *p)
{
    bw_job *j;
    enum bw_jobs_submit_result rc = bw_jobs_submit(f->jobs, p, &j);
    if (rc == BW_JOBS_FULL) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
        bw_http_send_error(req, 503, "QUEUE_FULL", "too many jobs are waiting for the engine; retry later");
        return NULL;
    }
    if (rc != BW_JOBS_OK) {
        bw_http_send_error(req, 500, "INTERNAL", "out of memory");
        return NULL;
    }
    bw_accesslog_set_job(req, bw_job_id(j));
    return j;
}

int bw_handle_submit(bw_front *f, h2o_req_t *req, const bw_route_args *a)
{
    if (bw_http_check_json_body(f, req) != 0) return 0;
    bw_job_params p;
    json_t *root;
    json_t *bad = bw_request_parse_infer(req->entity.base, req->entity.len, bw_link_hello(f->link)->n_ctx, &p, &root);
    if (bad) {
        bw_http_send_obj(req, 400, bad);
        return 0;
    }
    bw_job *j = bw_handle_submit_job(f, req, &p);
    json_decref(root);
    if (!j) return 0;
    char url[128];
    snprintf(url, sizeof(url), "/v1/%s/%s/stream", a->arg ? "jobs" : "inference", bw_job_id(j));
    bw_http_send_obj(req, 200, json_pack("{s:s,s:s}", "job_id", bw_job_id(j), "sse_url", url));
    return 0;
}
