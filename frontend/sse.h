/* Server-sent events for one job (SPEC §3.3): the response headers, the event format, h2o flow control
 * and the keep-alive comment.
 *
 * Owns: the stream object (allocated in the request's pool, freed with it) and its cursor into the job's
 * events. At most one h2o_send is outstanding; events that arrive meanwhile are coalesced into the next
 * send when h2o calls proceed. When the request goes away before the job ends (client disconnect), the
 * job is detached, which cancels it. */
#ifndef BW_FRONT_SSE_H
#define BW_FRONT_SSE_H

#include <stdint.h>

#include "frontend/buf.h"
#include "frontend/front.h"
#include "frontend/jobs.h"

/* How a stream writes a job's events. The native format (SPEC §3.3) is the default; the OpenAI routes
 * bring their own. Flow control, coalescing, keep-alive and cancellation on disconnect are the stream's
 * and the same for every format. Each callback appends the bytes of one event to out. */
typedef struct {
    /* Not a stream: nothing is sent until the job has ended, then terminal() sets the status and headers
     * of one ordinary response and writes its whole body. */
    int whole;
    void (*started)(void *ctx, bw_buf *out, const bw_job *j);
    void (*token)(void *ctx, bw_buf *out, const bw_job *j, size_t i);
    /* The end (or error) event and the stream's last bytes. */
    void (*terminal)(void *ctx, bw_buf *out, const bw_job *j, h2o_req_t *req);
} bw_sse_format;

void bw_sse_init(bw_front *f);

/* Starts the 200 text/event-stream response for job j from event id `from` (0 = everything).
 * timing: token events carry "ts_ns". Returns -1 without touching req when j already has a reader. */
int bw_sse_open(bw_front *f, h2o_req_t *req, bw_job *j, uint64_t from, int timing);
/* The same for a format of the caller's; ctx is passed to its callbacks and must live as long as req. */
int bw_sse_open_as(bw_front *f, h2o_req_t *req, bw_job *j, const bw_sse_format *fmt, void *ctx);

/* The job has new events (or ended): send what the stream has not sent, unless a send is in flight. */
void bw_sse_notify(bw_sse_stream *s);

/* A reconnecting client (Last-Event-ID) replaces this stream: it loses its job and its response ends.
 * -1 for a stream that cannot be replaced (a whole, non-streamed response). */
int bw_sse_abandon(bw_sse_stream *s);

/* SSE id of the first event not yet written to the client's socket (what the job's buffer bound counts). */
uint64_t bw_sse_delivered(const bw_sse_stream *s);

#endif
