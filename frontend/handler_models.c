/* GET /v1/models: the one model this worker serves, in OpenAI's list shape. */
#include <time.h>

#include "frontend/handlers.h"
#include "frontend/http.h"
#include "frontend/link.h"

int bw_handle_models(bw_front *f, h2o_req_t *req)
{
    const bw_proto_hello *h = bw_link_hello(f->link);
    const char *model = h->model_id[0] ? h->model_id : f->opts->model_ref ? f->opts->model_ref : "";
    json_t *data = json_array();
    if (model[0]) {
        json_t *o = json_pack("{s:s,s:s,s:I,s:s}", "id", model, "object", "model", "created", (json_int_t)time(NULL),
                              "owned_by", "beeworker");
        json_t *md = bw_link_model_json(f->link);
        if (o && md) json_object_update(o, md);
        json_decref(md);
        json_array_append_new(data, o);
    }
    bw_http_send_obj(req, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
    return 0;
}
