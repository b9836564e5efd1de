/* The front's Prometheus metrics (SPEC §3.4) and the per-job log line.
 *
 * Owns: the counters and histograms the front keeps itself (requests by route and code, jobs by stop
 * reason, tokens, time to first token and inter-token latency at the socket write) and the text
 * exposition format. Gauges (queue depth, streams, engine state, restarts) are read from their owners when
 * /metrics is rendered, so nothing here can drift from the module that knows. Loop thread only.
 * Every function accepts a NULL bw_metrics and then does nothing. */
#ifndef BW_FRONT_METRICS_H
#define BW_FRONT_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "frontend/buf.h"
#include "frontend/front.h"
#include "frontend/jobs.h"

typedef struct bw_metrics bw_metrics;

bw_metrics *bw_metrics_create(void);

/* A finished HTTP request: route is a label from bw_metrics_route() (bounded set), status its code. */
void bw_metrics_request(bw_metrics *m, const char *route, int status);
/* The route label of a path: the path template ("/v1/jobs/{id}/stream"), or "other". */
const char *bw_metrics_route(const char *path, size_t len);

/* A job has its terminal event: counts it by stop reason (or error code), adds its tokens, and writes
 * the job's log line (tokens, stop reason, tokens/s). */
void bw_metrics_job_end(bw_metrics *m, const bw_job *j);

/* Tokens first .. first+n-1 of j reached the socket at now_ns in one write; prev_ns is when the same
 * reader last wrote a token (0: none yet). Token 0 gives time to first token (from job creation); the
 * others give inter-token latency, 0 for tokens that shared a write. */
void bw_metrics_tokens_written(bw_metrics *m, const bw_job *j, size_t first, size_t n, uint64_t prev_ns,
                               uint64_t now_ns);

/* The exposition text of every series, gauges read from f. */
void bw_metrics_render(bw_metrics *m, bw_front *f, bw_buf *out);

#endif
