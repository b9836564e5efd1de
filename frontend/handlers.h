/* The HTTP handlers, one per file (handler_*.c), and the router that registers them (server.c).
 * A handler is called after routing and authentication; it answers the request (now or later). */
#ifndef BW_FRONT_HANDLERS_H
#define BW_FRONT_HANDLERS_H

#include <jansson.h>
#include <stddef.h>

#include "frontend/front.h"
#include "frontend/jobs.h"

/* POST /v1/inference and /v1/jobs; jobs_form selects the sse_url form that is returned. */
int bw_handle_submit(bw_front *f, h2o_req_t *req, int jobs_form);
/* Creates the job for a validated request and names it in the access log. When the job table refuses it,
 * answers the request (503 QUEUE_FULL with Retry-After, or 500) and returns NULL. */
bw_job *bw_handle_submit_job(bw_front *f, h2o_req_t *req, const bw_job_params *p);
/* GET /v1/{inference,jobs}/<id>/stream */
int bw_handle_stream(bw_front *f, h2o_req_t *req, const char *id, size_t id_len);
/* DELETE /v1/{inference,jobs}/<id> */
int bw_handle_cancel(bw_front *f, h2o_req_t *req, const char *id, size_t id_len);
int bw_handle_health(bw_front *f, h2o_req_t *req);
int bw_handle_info(bw_front *f, h2o_req_t *req);
/* The /info document (the heartbeat carries it too); NULL when out of memory. */
json_t *bw_info_json(bw_front *f);
/* POST /v1/completions (chat = 0) and /v1/chat/completions (chat = 1) */
int bw_handle_openai(bw_front *f, h2o_req_t *req, int chat);
/* GET /v1/models (id NULL) and GET /v1/models/<id> (OpenAI's models.retrieve; id as in the path) */
int bw_handle_models(bw_front *f, h2o_req_t *req, const char *id, size_t id_len);
int bw_handle_metrics(bw_front *f, h2o_req_t *req);

#endif
