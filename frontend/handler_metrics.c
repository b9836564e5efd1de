/* GET /metrics (public unless --metrics-auth): Prometheus text exposition format 0.0.4. */
#include "frontend/buf.h"
#include "frontend/handlers.h"
#include "frontend/http.h"
#include "frontend/metrics.h"

int bw_handle_metrics(bw_front *f, h2o_req_t *req)
{
    bw_buf b;
    bw_buf_init(&b);
    bw_metrics_render(f->metrics, f, &b);
    if (b.failed) {
        bw_buf_free(&b);
        bw_http_send_error(req, 500, "INTERNAL", "out of memory");
        return 0;
    }
    /* h2o_send_inline copies: the buffer is ours to free */
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; version=0.0.4; charset=utf-8"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_send_inline(req, b.p, b.len);
    bw_buf_free(&b);
    return 0;
}
