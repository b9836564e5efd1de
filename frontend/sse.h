/* Server-sent events for one job (SPEC §3.3): the response headers, the event format, h2o flow control
 * and the keep-alive comment.
 *
 * Owns: every byte of the native event stream (started, token, end and error events rendered from the
 * job's records, [DONE], retry: and keep-alives), the stream object (allocated in the request's pool,
 * freed with it, registered with its job as the job's bw_job_reader) and its cursor into the job's
 * events. At most one h2o_send is outstanding; events that arrive meanwhile are formatted at once and
 * coalesced into the next send when h2o calls proceed. When the request goes away before the job ends (client disconnect), the
 * job is detached, which cancels it. */
#ifndef BW_FRONT_SSE_H
#define BW_FRONT_SSE_H

#include <h2o.h>
#include <stdint.h>

#include "frontend/buf.h"
#include "frontend/jobs.h"
#include "frontend/metrics.h"

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

/* Once, before any stream: the loop (keep-alive timers), where write timings go (may be NULL), and
 * --reconnect-grace (the retry: a browser is told). */
void bw_sse_init(h2o_loop_t *loop, bw_metrics *metrics, double reconnect_grace_s);

enum {
    BW_SSE_TIMING = 1, /* token events carry "ts_ns" */
    BW_SSE_NO_IDS = 2, /* no id: lines and blank-line keep-alives, for clients that forward every line */
};
/* Starts the 200 text/event-stream response for job j from event id `from` (0 = everything), with
 * BW_SSE_* flags. Returns -1 without touching req when j already has a reader. */
int bw_sse_open(h2o_req_t *req, bw_job *j, uint64_t from, int flags);
/* The same for a format of the caller's; ctx is passed to its callbacks and must live as long as req. */
int bw_sse_open_as(h2o_req_t *req, bw_job *j, const bw_sse_format *fmt, void *ctx);
/* A reconnecting client (Last-Event-ID) takes the job over from the stream that reads it, whose client is
 * presumably gone but not yet noticed: that stream loses the job and its response ends, and this request
 * reads the job as bw_sse_open would. -1 without touching req when the job has no reader, or one that
 * cannot be replaced (a whole, non-streamed response). */
int bw_sse_take_over(h2o_req_t *req, bw_job *j, uint64_t from, int flags);

#endif
