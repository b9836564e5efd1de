/* The HTTP handlers, one per file (handler_*.c), registered in the route table (routes.c). A handler is
 * called after routing, authentication and the method check; it answers the request (now or later). */
#ifndef BW_FRONT_HANDLERS_H
#define BW_FRONT_HANDLERS_H

#include <jansson.h>
#include <stddef.h>

#include "frontend/front.h"
#include "frontend/jobs.h"

/* What the route table hands a handler: the {id} of its path (or NULL), and the route's own argument. */
typedef struct {
    const char *id;
    size_t id_len;
    int arg;
} bw_route_args;

/* POST /v1/inference and /v1/jobs; arg 1 (/v1/jobs) selects the sse_url form that is returned. */
int bw_handle_submit(bw_front *f, h2o_req_t *req, const bw_route_args *a);
/* Creates the job for a validated request and names it in the access log. When the job table refuses it,
 * answers the request (503 QUEUE_FULL with Retry-After, or 500) and returns NULL. */
bw_job *bw_handle_submit_job(bw_front *f, h2o_req_t *req, const bw_job_params *p);
/* GET /v1/{inference,jobs}/<id>/stream */
int bw_handle_stream(bw_front *f, h2o_req_t *req, const bw_route_args *a);
/* DELETE /v1/{inference,jobs}/<id> */
int bw_handle_cancel(bw_front *f, h2o_req_t *req, const bw_route_args *a);
int bw_handle_health(bw_front *f, h2o_req_t *req, const bw_route_args *a);
int bw_handle_info(bw_front *f, h2o_req_t *req, const bw_route_args *a);
/* The /info document (the heartbeat carries it too); NULL when out of memory. */
json_t *bw_info_json(bw_front *f);
/* POST /v1/completions (arg 0) and /v1/chat/completions (arg 1) */
int bw_handle_openai(bw_front *f, h2o_req_t *req, const bw_route_args *a);
/* GET /v1/models (no id) and GET /v1/models/<id> (OpenAI's models.retrieve; id as in the path) */
int bw_handle_models(bw_front *f, h2o_req_t *req, const bw_route_args *a);
int bw_handle_metrics(bw_front *f, h2o_req_t *req, const bw_route_args *a);

#endif
