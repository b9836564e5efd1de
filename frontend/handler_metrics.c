/* GET /metrics (public unless --metrics-auth): Prometheus text exposition format 0.0.4. The gauges are
 * read here from the modules that own them. */
#include "frontend/buf.h"
#include "frontend/handlers.h"
#include "frontend/http.h"
#include "frontend/jobs.h"
#include "frontend/link.h"
#include "frontend/metrics.h"

static void read_gauges(bw_front *f, bw_metrics_gauges *g)
{
    const bw_proto_hello *h = bw_link_hello(f->link);
    int up = bw_link_state(f->link) == BW_LINK_READY || bw_link_state(f->link) == BW_LINK_LOADING;
    unsigned epochs = bw_link_epochs_seen(f->link);
    bw_jobs_stats st;
    bw_jobs_stats_get(f->jobs, &st);
    *g = (bw_metrics_gauges){
        .queued = bw_jobs_queued(f->jobs),
        .running = bw_jobs_running(f->jobs),
        .streams = bw_jobs_streams(f->jobs),
        .engine_queue_depth = up ? h->queue_depth : 0,
        .slots_total = up ? h->slots_total : 0,
        .slots_busy = up ? h->slots_busy : 0,
        .engine_state = f->stopping ? "down" : bw_link_state_name(f->link),
        .restarts = epochs ? epochs - 1 : 0,
        .bad_messages = bw_link_bad_messages(f->link),
        .engine_losses = st.engine_losses,
        .jobs_resumed = st.jobs_resumed,
        .tokens_resumed = st.tokens_resumed,
        .tokens_replayed = st.tokens_replayed,
        .gaps_unrepairable = st.gaps_unrepairable,
        .duplicates_suppressed = st.duplicates_suppressed,
        .slow_client_cancels = st.slow_client_cancels,
    };
    for (int i = 0; i < 2; i++) g->spec_drafted[i] = st.spec_drafted[i], g->spec_accepted[i] = st.spec_accepted[i];
}

int bw_handle_metrics(bw_front *f, h2o_req_t *req, const bw_route_args *a)
{
    (void)a;
    bw_metrics_gauges g;
    read_gauges(f, &g);
    bw_buf b;
    bw_buf_init(&b);
    bw_metrics_render(f->metrics, &g, &b);
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
