/* The front's Prometheus metrics (SPEC §3.4) and the per-job log line.
 *
 * Owns: the counters and histograms the front keeps itself (requests by route and code, jobs by stop
 * reason, tokens, time to first token and inter-token latency at the socket write) and the text
 * exposition format. It takes plain values and knows no other module: the gauges (queue depth, streams,
 * engine state, restarts, repair counters) are read from their owners by GET /metrics and handed in at
 * render time, so nothing here can drift from the module that knows. Loop thread only.
 * Every function accepts a NULL bw_metrics and then does nothing (the job log line is still written). */
#ifndef BW_FRONT_METRICS_H
#define BW_FRONT_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "frontend/buf.h"

typedef struct bw_metrics bw_metrics;

/* route_labels: the bounded set of route labels (the route table's, see routes.h), in the order they are
 * exported; requests under any other label count as the last one ("other"). The array must outlive m. */
bw_metrics *bw_metrics_create(const char *const *route_labels, size_t n_labels);

/* A finished HTTP request: route is one of the labels given to bw_metrics_create, status its code. */
void bw_metrics_request(bw_metrics *m, const char *route, int status);

/* A job has ended: counts it by reason (its stop reason, or its error code when failed), adds its tokens,
 * and writes the job's log line (tokens, stop reason, tokens/s over decode_ms). */
void bw_metrics_job_end(bw_metrics *m, const char *job_id, int failed, const char *reason, size_t tokens,
                        uint32_t prompt_tokens, uint64_t decode_ms);

/* Tokens first .. first+n-1 of a job created at created_ns reached the socket at now_ns in one write;
 * prev_ns is when the same reader last wrote a token (0: none yet). Token 0 gives time to first token
 * (from the job's creation); the others give inter-token latency, 0 for tokens that shared a write. */
void bw_metrics_tokens_written(bw_metrics *m, uint64_t created_ns, size_t first, size_t n, uint64_t prev_ns,
                               uint64_t now_ns);

/* The values /metrics exports from other modules, read when it is rendered. */
typedef struct {
    unsigned queued, running, streams; /* the job table's */
    uint64_t engine_queue_depth;       /* the engine's own queue (0 unless it is up) */
    unsigned slots_total, slots_busy;  /* likewise */
    const char *engine_state;          /* "starting|loading|ready|restarting|down|draining" */
    unsigned restarts;                 /* engine epochs after the first */
    unsigned long bad_messages;        /* engine messages dropped as invalid */
    /* what engine losses cost and what the job table repaired */
    uint64_t engine_losses, jobs_resumed, tokens_resumed, tokens_replayed, gaps_unrepairable, duplicates_suppressed,
        slow_client_cancels;
    /* speculative decoding: [0] predicted outputs, [1] prompt lookup */
    uint64_t spec_drafted[2], spec_accepted[2];
} bw_metrics_gauges;

/* The exposition text of every series. */
void bw_metrics_render(const bw_metrics *m, const bw_metrics_gauges *g, bw_buf *out);

#endif
