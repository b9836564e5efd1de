/* SSE streams; see sse.h. The stream lives in the request's memory pool: h2o disposes it when the
 * request ends for any reason, which is where a vanished client turns into a cancelled job. */
#include "frontend/sse.h"

#include <string.h>

#include "common/clock.h"
#include "frontend/buf.h"
#include "frontend/jobs.h"
#include "frontend/metrics.h"

#define KEEPALIVE_MS 5000

struct bw_sse_stream {
    h2o_generator_t gen;
    bw_front *f;
    h2o_req_t *req;
    bw_job *job;     /* NULL once detached */
    uint64_t next;   /* SSE id of the next event to send */
    uint64_t delivered; /* SSE id of the first event not in a completed send (the job's buffer bound) */
    const bw_sse_format *fmt;
    void *fmt_ctx;
    uint64_t last_token_write_ns; /* for inter-token latency; 0 before the first */
    int sending;     /* an h2o_send is outstanding: wait for proceed */
    int final_sent;
    bw_buf out;      /* the bytes of the outstanding send; h2o reads them until proceed */
    h2o_timeout_entry_t keepalive;
};

static h2o_timeout_t keepalive_to;

static void arm_keepalive(bw_sse_stream *s)
{
    if (h2o_timeout_is_linked(&s->keepalive)) h2o_timeout_unlink(&s->keepalive);
    if (!s->final_sent) h2o_timeout_link(s->f->loop, &keepalive_to, &s->keepalive);
}

static void send_out(bw_sse_stream *s, int final)
{
    h2o_iovec_t v = h2o_iovec_init(s->out.p, s->out.len);
    s->sending = 1;
    s->final_sent = final;
    arm_keepalive(s);
    h2o_send(s->req, &v, s->out.len ? 1 : 0, final ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

/* ---- the native format (SPEC §3.3); ctx is non-NULL when token events carry ts_ns ---- */

static void native_started(void *ctx, bw_buf *out, const bw_job *j)
{
    (void)ctx;
    size_t len;
    const char *started = bw_job_started(j, &len);
    bw_buf_adds(out, "id: 0\ndata: ");
    bw_buf_add(out, started, len);
    bw_buf_adds(out, "\n\n");
}

static void native_token(void *ctx, bw_buf *out, const bw_job *j, size_t i)
{
    const char *text;
    size_t len;
    uint64_t ts;
    bw_job_token(j, i, &text, &len, &ts);
    bw_buf_addf(out, "id: %zu\ndata: {\"type\":\"token\",\"t\":\"", i + 1);
    bw_buf_add_json_str(out, text, len);
    if (ctx) bw_buf_addf(out, "\",\"i\":%zu,\"ts_ns\":%llu}\n\n", i, (unsigned long long)ts);
    else bw_buf_addf(out, "\",\"i\":%zu}\n\n", i);
}

static void native_terminal(void *ctx, bw_buf *out, const bw_job *j, h2o_req_t *req)
{
    (void)ctx, (void)req;
    size_t len;
    const char *terminal = bw_job_terminal(j, &len);
    bw_buf_adds(out, "data: ");
    bw_buf_add(out, terminal, len);
    bw_buf_adds(out, "\n\ndata: [DONE]\n\n");
}

static const bw_sse_format native = {0, native_started, native_token, native_terminal};

/* A whole (non-streamed) response: one send once the job has ended. */
static void flush_whole(bw_sse_stream *s)
{
    size_t len;
    if (!bw_job_terminal(s->job, &len)) return;
    bw_buf_reset(&s->out);
    s->fmt->terminal(s->fmt_ctx, &s->out, s->job, s->req);
    if (s->out.failed) {
        bw_buf_reset(&s->out);
        s->req->res.status = 500;
        s->req->res.reason = "Internal Server Error";
    }
    h2o_start_response(s->req, &s->gen);
    send_out(s, 1);
}

/* Everything the client has not seen yet, in one send. */
static void flush(bw_sse_stream *s)
{
    if (s->sending || s->final_sent || !s->job) return;
    if (s->fmt->whole) {
        flush_whole(s);
        return;
    }
    bw_buf_reset(&s->out);
    size_t len;
    const char *started = bw_job_started(s->job, &len);
    if (s->next == 0 && started) {
        s->fmt->started(s->fmt_ctx, &s->out, s->job);
        s->next = 1;
    }
    size_t n = bw_job_n_tokens(s->job), first = s->next >= 1 ? (size_t)(s->next - 1) : n;
    if (s->next >= 1)
        for (; s->next - 1 < n; s->next++) s->fmt->token(s->fmt_ctx, &s->out, s->job, (size_t)(s->next - 1));
    const char *terminal = bw_job_terminal(s->job, &len);
    int final = terminal && (s->next == 0 ? n == 0 : s->next - 1 >= n);
    if (final) s->fmt->terminal(s->fmt_ctx, &s->out, s->job, s->req);
    size_t written = s->next >= 1 ? (size_t)(s->next - 1) - first : 0;
    if (s->out.failed) {
        /* cannot format: end the response rather than send a partial event */
        bw_buf_reset(&s->out);
        final = 1;
        written = 0;
    }
    if (s->out.len || final) {
        /* measured as the bytes are handed to the socket: h2o writes at once when no send is pending */
        uint64_t now = bw_clock_mono_ns(), prev = s->last_token_write_ns;
        if (written) s->last_token_write_ns = now;
        bw_metrics_tokens_written(s->f->metrics, s->job, first, written, prev, now);
        send_out(s, final);
    }
}

static void on_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    bw_sse_stream *s = H2O_STRUCT_FROM_MEMBER(bw_sse_stream, gen, g);
    (void)req;
    s->sending = 0;
    s->delivered = s->next;
    if (!s->job && !s->final_sent) { /* abandoned while a send was in flight */
        bw_buf_reset(&s->out);
        send_out(s, 1);
        return;
    }
    flush(s);
}

static void on_keepalive(h2o_timeout_entry_t *e)
{
    bw_sse_stream *s = H2O_STRUCT_FROM_MEMBER(bw_sse_stream, keepalive, e);
    if (s->sending || s->final_sent) {
        arm_keepalive(s);
        return;
    }
    bw_buf_reset(&s->out);
    bw_buf_adds(&s->out, ": keep-alive\n\n");
    send_out(s, 0);
}

static void on_dispose(void *p)
{
    bw_sse_stream *s = p;
    if (h2o_timeout_is_linked(&s->keepalive)) h2o_timeout_unlink(&s->keepalive);
    if (s->job) {
        bw_job *j = s->job;
        s->job = NULL;
        bw_job_detach(j, s);
    }
    bw_buf_free(&s->out);
}

void bw_sse_init(bw_front *f)
{
    h2o_timeout_init(f->loop, &keepalive_to, KEEPALIVE_MS);
}

void bw_sse_notify(bw_sse_stream *s)
{
    flush(s);
}

uint64_t bw_sse_delivered(const bw_sse_stream *s) { return s->delivered; }

int bw_sse_abandon(bw_sse_stream *s)
{
    if (s->fmt->whole) return -1;
    s->job = NULL;
    if (!s->sending && !s->final_sent) {
        bw_buf_reset(&s->out);
        send_out(s, 1);
    }
    return 0;
}

static int open_stream(bw_front *f, h2o_req_t *req, bw_job *j, uint64_t from, const bw_sse_format *fmt, void *ctx)
{
    bw_sse_stream *s = h2o_mem_alloc_shared(&req->pool, sizeof(*s), on_dispose);
    memset(s, 0, sizeof(*s));
    s->f = f;
    s->req = req;
    s->next = from;
    s->delivered = from;
    s->fmt = fmt;
    s->fmt_ctx = ctx;
    s->keepalive.cb = on_keepalive;
    bw_buf_init(&s->out);
    if (bw_job_attach(j, s) != 0) return -1;
    s->job = j;
    s->gen.proceed = on_proceed;
    s->gen.stop = NULL;
    if (fmt->whole) {
        flush(s); /* the job may have ended already */
        return 0;
    }
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-accel-buffering"), 0, NULL, H2O_STRLIT("no"));
    h2o_start_response(req, &s->gen);
    flush(s);
    if (!s->sending) send_out(s, 0); /* nothing buffered yet: send the headers now */
    return 0;
}

int bw_sse_open(bw_front *f, h2o_req_t *req, bw_job *j, uint64_t from, int timing)
{
    static int with_timing = 1;
    return open_stream(f, req, j, from, &native, timing ? &with_timing : NULL);
}

int bw_sse_open_as(bw_front *f, h2o_req_t *req, bw_job *j, const bw_sse_format *fmt, void *ctx)
{
    return open_stream(f, req, j, 0, fmt, ctx);
}
