/* GET /v1/{inference,jobs}/<id>/stream: attaches the one reader a job may have and replays what it
 * produced so far; resumes after Last-Event-ID (or from ?from=). A resuming request takes the job over
 * from a reader that is still attached: its client has reconnected, and the front may not have noticed
 * the old connection close yet (HTTP/1 sees that only on a failed write, and none comes while the job
 * waits for an engine). A second reader that does not resume gets 409. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/handlers.h"
#include "frontend/http.h"
#include "frontend/jobs.h"
#include "frontend/sse.h"

static int parse_u64(const char *s, size_t n, uint64_t *out)
{
    char buf[24];
    if (n == 0 || n >= sizeof(buf)) return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (buf[i] < '0' || buf[i] > '9') return -1;
    errno = 0;
    unsigned long long v = strtoull(buf, NULL, 10);
    if (errno) return -1;
    *out = v;
    return 0;
}

int bw_handle_stream(bw_front *f, h2o_req_t *req, const bw_route_args *a)
{
    bw_job *j = bw_jobs_find(f->jobs, a->id, a->id_len);
    if (!j) {
        bw_http_send_error(req, 404, "JOB_NOT_FOUND", "no such job (finished jobs are kept for --retain seconds)");
        return 0;
    }
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
        /* the headers a GET would get, without attaching a reader (which would take the job) */
        req->res.status = 200;
        req->res.reason = "OK";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream"));
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
        h2o_send_inline(req, "", 0);
        return 0;
    }
    uint64_t from = 0;
    int resuming = 0;
    char q[32];
    const h2o_iovec_t *last = bw_http_header(req, H2O_STRLIT("last-event-id"));
    if (last) {
        uint64_t n;
        if (parse_u64(last->base, last->len, &n) || n == UINT64_MAX) {
            bw_http_send_error(req, 400, "INVALID_LAST_EVENT_ID", "Last-Event-ID must be an event id (a number)");
            return 0;
        }
        from = n + 1;
        resuming = 1;
    } else if (bw_http_query(req, "from", q, sizeof(q)) == 0) {
        resuming = 1;
        if (parse_u64(q, strlen(q), &from)) {
            bw_http_send_error(req, 400, "INVALID_FROM", "from must be an event id (a number)");
            return 0;
        }
    }
    if (resuming && bw_job_outcome_of(j) && bw_job_all_sent(j) && from > bw_job_n_tokens(j)) {
        /* A reconnect after the whole stream went out (an EventSource that was not closed after [DONE]):
         * nothing is left, and 204 is what makes a browser stop reconnecting. */
        req->res.status = 204;
        req->res.reason = "No Content";
        h2o_send_inline(req, "", 0);
        return 0;
    }
    int flags = 0;
    if (bw_http_query(req, "timing", q, sizeof(q)) == 0 && strcmp(q, "1") == 0) flags |= BW_SSE_TIMING;
    /* ?ids=0 / ?ids=1 override the job's default (no ids for rbee's operation form, see jobs.h) */
    int no_ids = bw_job_no_ids(j);
    if (bw_http_query(req, "ids", q, sizeof(q)) == 0) no_ids = strcmp(q, "0") == 0;
    if (no_ids) flags |= BW_SSE_NO_IDS;
    if (bw_sse_open(req, j, from, flags) == 0) return 0;
    if (resuming && bw_sse_take_over(req, j, from, flags) == 0) return 0;
    bw_http_send_error(req, 409, "STREAM_ALREADY_OPEN", "this job's stream is already being read");
    return 0;
}
