/* GET /info: who this worker is and what its engine is doing (SPEC §3.4); the heartbeat sends the same. */
#include <stdio.h>

#include "frontend/handlers.h"
#include "frontend/http.h"
#include "frontend/jobs.h"
#include "frontend/link.h"
#include "frontend/model_id.h"

/* What engine restarts cost and what the front repaired (issue 5): the same counters /metrics exports. */
static json_t *resume_json(bw_front *f)
{
    bw_jobs_stats st;
    bw_jobs_stats_get(f->jobs, &st);
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "engine_losses", (json_int_t)st.engine_losses, "jobs_resumed",
                     (json_int_t)st.jobs_resumed, "tokens_resumed", (json_int_t)st.tokens_resumed, "tokens_replayed",
                     (json_int_t)st.tokens_replayed, "duplicates_suppressed", (json_int_t)st.duplicates_suppressed,
                     "gaps_unrepairable", (json_int_t)st.gaps_unrepairable, "slow_client_cancels",
                     (json_int_t)st.slow_client_cancels, "jobs_engine_lost", (json_int_t)st.jobs_engine_lost);
}

/* Speculative decoding by draft source (issue 14): the counters /metrics exports. */
static json_t *spec_json(bw_front *f)
{
    bw_jobs_stats st;
    bw_jobs_stats_get(f->jobs, &st);
    json_t *o = json_object();
    static const char *const src[] = {"prediction", "lookup"};
    for (int i = 0; o && i < 2; i++) {
        const uint64_t d = st.spec_drafted[i], a = st.spec_accepted[i];
        json_t *s = json_pack("{s:I,s:I,s:I,s:f}", "drafted", (json_int_t)d, "accepted", (json_int_t)a, "rejected",
                              (json_int_t)(d - a), "acceptance_rate", d ? (double)a / (double)d : 0.0);
        if (s) json_object_set_new(o, src[i], s);
    }
    return o;
}

json_t *bw_info_json(bw_front *f)
{
    const bw_proto_hello *h = bw_link_hello(f->link);
    int have = bw_link_state(f->link) != BW_LINK_NONE;
    char device[160], epoch[20];
    snprintf(device, sizeof(device), "%s:%d", have && h->backend[0] ? h->backend : f->opts->backend, f->opts->device);
    snprintf(epoch, sizeof(epoch), "%016llx", (unsigned long long)bw_link_epoch(f->link));
    unsigned epochs = bw_link_epochs_seen(f->link);
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:i,s:s,s:s,s:s}", "id", f->opts->worker_id, "model_id", bw_model_id(f),
                          "model_name", bw_model_name(f), "device", device, "port", f->port, "status",
                          bw_link_state(f->link) == BW_LINK_READY ? "ready" : "not_ready", "implementation",
                          "beeworker", "version", BW_VERSION);
    json_t *e = json_pack("{s:s,s:s,s:{s:I,s:I},s:I,s:I,s:I}", "epoch", epoch, "state", bw_link_state_name(f->link),
                          "slots", "total", (json_int_t)h->slots_total, "busy", (json_int_t)h->slots_busy,
                          "queue_depth", (json_int_t)h->queue_depth, "restarts", (json_int_t)(epochs ? epochs - 1 : 0),
                          "pid", (json_int_t)h->pid);
    if (o && e) {
        json_object_set_new(o, "engine", e);
        json_t *md = bw_link_model_json(f->link);
        if (md) json_object_update(o, md);
        json_decref(md);
        json_t *jobs = json_pack("{s:I,s:I,s:I}", "waiting", (json_int_t)bw_jobs_queued(f->jobs), "running",
                                 (json_int_t)bw_jobs_running(f->jobs), "streams", (json_int_t)bw_jobs_streams(f->jobs));
        if (jobs) json_object_set_new(o, "jobs", jobs);
        json_t *r = resume_json(f);
        if (r) json_object_set_new(o, "resume", r);
        json_t *sp = spec_json(f);
        if (sp) json_object_set_new(o, "speculation", sp);
    } else {
        json_decref(e);
    }
    return o;
}

int bw_handle_info(bw_front *f, h2o_req_t *req, const bw_route_args *a)
{
    (void)a;
    bw_http_send_obj(req, 200, bw_info_json(f));
    return 0;
}
