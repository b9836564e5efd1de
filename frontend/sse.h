/* Server-sent events for one job (SPEC §3.3): the response headers, the event format, h2o flow control
 * and the keep-alive comment.
 *
 * Owns: the stream object (allocated in the request's pool, freed with it) and its cursor into the job's
 * events. At most one h2o_send is outstanding; events that arrive meanwhile are formatted at once and
 * coalesced into the next send when h2o calls proceed. When the request goes away before the job ends (client disconnect), the
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
    /* Non-NULL: the response waits for the job's `started` before it sends its 200 and headers, and a job
     * that ends before it started is answered as a whole response written by refuse() (its status, such
     * as a 400 for a request the engine found too long, and body). */
    void (*refuse)(void *ctx, bw_buf *out, const bw_job *j, h2o_req_t *req);
} bw_sse_format;

void bw_sse_init(bw_front *f);

enum {
    BW_SSE_TIMING = 1, /* token events carry "ts_ns" */
    BW_SSE_NO_IDS = 2, /* no id: lines and blank-line keep-alives, for clients that forward every line */
};
/* Starts the 200 text/event-stream response for job j from event id `from` (0 = everything), with
 * BW_SSE_* flags. Returns -1 without touching req when j already has a reader. */
int bw_sse_open(bw_front *f, h2o_req_t *req, bw_job *j, uint64_t from, int flags);
/* The same for a format of the caller's; ctx is passed to its callbacks and must live as long as req. */
int bw_sse_open_as(bw_front *f, h2o_req_t *req, bw_job *j, const bw_sse_format *fmt, void *ctx);

/* The job has new events (or ended): send what the stream has not sent, unless a send is in flight. */
void bw_sse_notify(bw_sse_stream *s);

/* A reconnecting client (Last-Event-ID) replaces this stream: it loses its job and its response ends.
 * -1 for a stream that cannot be replaced (a whole, non-streamed response). */
int bw_sse_abandon(bw_sse_stream *s);

/* SSE id of the first event not yet written to the client's socket. */
uint64_t bw_sse_delivered(const bw_sse_stream *s);
/* Formatted bytes the client has not taken yet (in the outstanding send or waiting for it): what the
 * job's --stream-buffer bound counts while a stream reads it. */
size_t bw_sse_backlog(const bw_sse_stream *s);

#endif
