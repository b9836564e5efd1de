/* GET /health (public): 200 only while an engine is ready, so a load balancer or hive can route on it. */
#include "frontend/handlers.h"
#include "frontend/http.h"
#include "frontend/link.h"
#include "frontend/supervisor.h"

int bw_handle_health(bw_front *f, h2o_req_t *req, const bw_route_args *a)
{
    (void)a;
    int ready = bw_link_state(f->link) == BW_LINK_READY && !f->stopping;
    const bw_proto_hello *h = bw_link_hello(f->link);
    int down = f->stopping || (f->sup && bw_sup_gave_up(f->sup)); /* nothing will bring an engine back */
    json_t *o = json_pack("{s:s,s:s}", "status", ready ? "healthy" : "unhealthy", "engine",
                          down ? "down" : bw_link_state_name(f->link));
    if (o && bw_link_state(f->link) == BW_LINK_LOADING) json_object_set_new(o, "progress", json_real(h->progress));
    bw_http_send_obj(req, ready ? 200 : 503, o);
    return 0;
}
