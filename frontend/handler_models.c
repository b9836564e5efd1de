/* GET /v1/models and GET /v1/models/<id>: the one model this worker serves, in OpenAI's list and model
 * shapes (the official client's models.list and models.retrieve). */
#include <time.h>

#include "frontend/handlers.h"
#include "frontend/http.h"
#include "frontend/link.h"
#include "frontend/model_id.h"

/* OpenAI's model object, with the engine's architecture and weight types beside its fields. */
static json_t *model_obj(bw_front *f, const char *id)
{
    json_t *o = json_pack("{s:s,s:s,s:I,s:s}", "id", id, "object", "model", "created", (json_int_t)time(NULL),
                          "owned_by", "beeworker");
    json_t *md = bw_link_model_json(f->link);
    if (o && md) json_object_update(o, md);
    json_decref(md);
    return o;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Whether the path segment names `model` ("hf:org/name" may arrive with %3A and %2F). */
static int names(const char *s, size_t n, const char *model)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++, k++) {
        char c = s[i];
        if (c == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            c = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        }
        if (c == '\0' || model[k] != c) return 0;
    }
    return model[k] == '\0';
}

int bw_handle_models(bw_front *f, h2o_req_t *req, const bw_route_args *a)
{
    const char *model = bw_model_id(f);
    if (a->id) {
        if (!model[0] || !names(a->id, a->id_len, model)) {
            json_t *e = json_pack("{s:s,s:s,s:s}", "code", "model_not_found", "message",
                                  "this worker serves one model: see GET /v1/models", "param", "model");
            bw_http_send_error_obj(req, 404, e);
            return 0;
        }
        bw_http_send_obj(req, 200, model_obj(f, model));
        return 0;
    }
    json_t *data = json_array();
    if (model[0]) json_array_append_new(data, model_obj(f, model));
    bw_http_send_obj(req, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
    return 0;
}
