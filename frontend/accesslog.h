/* The request log: one line per HTTP request when it ends (method, path, status, job id, duration),
 * plain or JSON per LLORCH_LOG_FORMAT, and the per-route request counters of /metrics.
 *
 * Owns: an h2o logger on the catch-all path, so every routed request is seen exactly once, whoever
 * answered it. Never logs headers or bodies: the bearer token cannot reach a log line from here. */
#ifndef BW_FRONT_ACCESSLOG_H
#define BW_FRONT_ACCESSLOG_H

#include "frontend/front.h"

void bw_accesslog_register(bw_front *f, h2o_pathconf_t *path);
/* Names the job a request created, for its log line (a job's own paths name it already). */
void bw_accesslog_set_job(h2o_req_t *req, const char *job_id);

#endif
