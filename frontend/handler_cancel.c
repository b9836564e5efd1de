/* DELETE /v1/{jobs,inference}/<id>: asks for cancellation; the job's stream ends with an `end` event whose
 * stop_reason is CANCELLED once the engine has stopped it. */
#include "frontend/handlers.h"
#include "frontend/http.h"
#include "frontend/jobs.h"

int bw_handle_cancel(bw_front *f, h2o_req_t *req, const bw_route_args *a)
{
    bw_job *j = bw_jobs_find(f->jobs, a->id, a->id_len);
    if (!j) {
        bw_http_send_error(req, 404, "JOB_NOT_FOUND", "no such job");
        return 0;
    }
    bw_jobs_cancel(f->jobs, j);
    bw_http_send_obj(req, 202, json_pack("{s:s,s:s}", "job_id", bw_job_id(j), "status", "cancelling"));
    return 0;
}
