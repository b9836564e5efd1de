/* SSE streams; see sse.h. The stream lives in the request's memory pool: h2o disposes it when the
 * request ends for any reason, which is where a vanished client turns into a cancelled job. */
#include "frontend/sse.h"

#include <string.h>

#include "common/clock.h"

#define KEEPALIVE_MS 5000

typedef struct {
    h2o_generator_t gen;
    bw_job_reader reader; /* how the job reaches this stream */
    h2o_req_t *req;
    bw_job *job;        /* NULL once detached */
    uint64_t next;      /* SSE id of the next event to format */
    uint64_t out_end;   /* SSE id after the last event of the outstanding send */
    uint64_t delivered; /* SSE id of the first event not in a completed send (the job's buffer bound) */
    const bw_sse_format *fmt;
    void *fmt_ctx;
    int no_ids;                   /* ?ids=0: no id: lines, keep-alives as bare blank lines */
    uint64_t last_token_write_ns; /* for inter-token latency; 0 before the first */
    int started;                  /* the response has begun (a deferred start waits for the job's first event) */
    int sending;                  /* an h2o_send is outstanding: wait for proceed */
    int final_sent;
    int pend_final;                 /* pend ends the response */
    size_t pend_first, pend_tokens; /* token events in pend, for the latency metrics */
    /* Events are formatted as they arrive, into pend, and handed to h2o from out, one send at a time.
     * Their formatted size (not the token text) is what a slow client costs, so it is what --stream-buffer
     * bounds (reader_backlog). */
    bw_buf out; /* the bytes of the outstanding send; h2o reads them until proceed */
    bw_buf pend;
    h2o_timeout_entry_t keepalive;
} bw_sse_stream;

static struct {
    h2o_loop_t *loop;
    h2o_timeout_t keepalive_to;
    bw_metrics *metrics;
    double reconnect_grace_s;
} g;

static void arm_keepalive(bw_sse_stream *s)
{
    if (h2o_timeout_is_linked(&s->keepalive)) h2o_timeout_unlink(&s->keepalive);
    if (!s->final_sent) h2o_timeout_link(g.loop, &g.keepalive_to, &s->keepalive);
}

static void send_out(bw_sse_stream *s, int final)
{
    h2o_iovec_t v = h2o_iovec_init(s->out.p, s->out.len);
    s->sending = 1;
    s->final_sent = final;
    arm_keepalive(s);
    h2o_send(s->req, &v, s->out.len ? 1 : 0, final ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

/* ---- the native format (SPEC §3.3); ctx says whether token events carry ts_ns and events their id ---- */

typedef struct {
    int timing, ids;
} native_opts;

static void native_started(void *ctx, bw_buf *out, const bw_job *j)
{
    const native_opts *o = ctx;
    const bw_job_start *st = bw_job_started(j);
    bw_buf_adds(out, o->ids ? "id: 0\ndata: " : "data: ");
    bw_buf_adds(out, "{\"type\":\"started\",\"job_id\":\"");
    bw_buf_add_json_str(out, st->job_id, strlen(st->job_id));
    bw_buf_adds(out, "\",\"model\":\"");
    bw_buf_add_json_str(out, st->model, strlen(st->model));
    bw_buf_addf(out, "\",\"seed\":%llu,\"started_at\":\"%lld\",\"architecture\":\"", (unsigned long long)st->seed,
                st->started_at);
    bw_buf_add_json_str(out, st->arch, strlen(st->arch));
    bw_buf_adds(out, "\",\"weight_types\":[");
    for (const char *p = st->weight_types, *sep = ""; *p;) {
        size_t n = strcspn(p, ",");
        if (n) {
            bw_buf_addf(out, "%s\"", sep);
            bw_buf_add_json_str(out, p, n);
            bw_buf_adds(out, "\"");
            sep = ",";
        }
        p += n + (p[n] == ',');
    }
    bw_buf_adds(out, "]}\n\n");
}

static void native_token(void *ctx, bw_buf *out, const bw_job *j, size_t i)
{
    const native_opts *o = ctx;
    const char *text;
    size_t len;
    uint64_t ts;
    bw_job_token(j, i, &text, &len, &ts);
    if (o->ids) bw_buf_addf(out, "id: %zu\n", i + 1);
    bw_buf_adds(out, "data: {\"type\":\"token\",\"t\":\"");
    bw_buf_add_json_str(out, text, len);
    if (o->timing) bw_buf_addf(out, "\",\"i\":%zu,\"ts_ns\":%llu}\n\n", i, (unsigned long long)ts);
    else bw_buf_addf(out, "\",\"i\":%zu}\n\n", i);
}

static void native_end(bw_buf *out, const bw_job_outcome *o)
{
    bw_buf_addf(out, "{\"type\":\"end\",\"tokens_out\":%zu,\"decode_time_ms\":%llu,\"stop_reason\":\"%s\"",
                o->tokens_out, (unsigned long long)(o->decode_ns / 1000000ull), bw_stop_reason_name(o->stop));
    if (o->has_prediction)
        bw_buf_addf(out, ",\"accepted_prediction_tokens\":%u,\"rejected_prediction_tokens\":%u", o->pred_accepted,
                    o->pred_rejected);
    if (o->clamped_to) bw_buf_addf(out, ",\"max_tokens_clamped_to\":%d", (int)o->clamped_to);
    if (o->has_matched) {
        bw_buf_adds(out, ",\"stop_sequence_matched\":\"");
        bw_buf_add_json_str(out, o->matched, o->matched_len);
        bw_buf_adds(out, "\"");
    }
    bw_buf_adds(out, "}");
}

static void native_terminal(void *ctx, bw_buf *out, const bw_job *j, h2o_req_t *req)
{
    (void)ctx, (void)req;
    const bw_job_outcome *o = bw_job_outcome_of(j);
    bw_buf_adds(out, "data: ");
    if (o->end == BW_JOB_ENDED) {
        native_end(out, o);
    } else {
        bw_buf_adds(out, "{\"type\":\"error\",\"code\":\"");
        bw_buf_add_json_str(out, o->code, strlen(o->code));
        bw_buf_adds(out, "\",\"message\":\"");
        bw_buf_add_json_str(out, o->message, o->message_len);
        bw_buf_adds(out, "\"}");
    }
    bw_buf_adds(out, "\n\ndata: [DONE]\n\n");
}

static const bw_sse_format native = {0, native_started, native_token, native_terminal, NULL};

/* A whole response (a whole format, or a deferred stream refused before it started): one send once the
 * job has ended, written by `write`. */
static void flush_whole(bw_sse_stream *s, void (*write)(void *, bw_buf *, const bw_job *, h2o_req_t *))
{
    bw_buf_reset(&s->out);
    write(s->fmt_ctx, &s->out, s->job, s->req);
    if (s->out.failed) {
        bw_buf_reset(&s->out);
        s->req->res.status = 500;
        s->req->res.reason = "Internal Server Error";
    }
    s->started = 1;
    h2o_start_response(s->req, &s->gen);
    send_out(s, 1);
}

static void start_event_stream(bw_sse_stream *s)
{
    h2o_req_t *req = s->req;
    s->started = 1;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-accel-buffering"), 0, NULL, H2O_STRLIT("no"));
    h2o_start_response(req, &s->gen);
}

/* Formats every event of the job that is not formatted yet into pend. */
static void format_new(bw_sse_stream *s)
{
    if (s->pend_final) return;
    size_t n = bw_job_n_tokens(s->job);
    if (s->next == 0 && bw_job_started(s->job)) {
        s->fmt->started(s->fmt_ctx, &s->pend, s->job);
        s->next = 1;
    }
    if (s->next >= 1 && s->next - 1 < n) {
        if (!s->pend_tokens) s->pend_first = (size_t)(s->next - 1);
        s->pend_tokens += n - (size_t)(s->next - 1);
        for (; s->next - 1 < n; s->next++) s->fmt->token(s->fmt_ctx, &s->pend, s->job, (size_t)(s->next - 1));
    }
    if (bw_job_outcome_of(s->job) && (s->next == 0 ? n == 0 : s->next - 1 >= n)) {
        s->fmt->terminal(s->fmt_ctx, &s->pend, s->job, s->req);
        s->pend_final = 1;
    }
    if (s->pend.failed) {
        /* cannot format: end the response rather than send a partial event */
        bw_buf_reset(&s->pend);
        s->pend_tokens = 0;
        s->pend_final = 1;
    }
}

/* Hands what is formatted to h2o, unless a send is in flight. */
static void flush(bw_sse_stream *s)
{
    if (s->final_sent || !s->job) return;
    if (s->fmt->whole) {
        if (!s->sending && bw_job_outcome_of(s->job)) flush_whole(s, s->fmt->terminal);
        return;
    }
    if (!s->started) {
        /* a deferred start: the status waits for the job's first event; an end before it is a refusal */
        if (bw_job_started(s->job)) {
            start_event_stream(s);
        } else {
            if (bw_job_outcome_of(s->job)) flush_whole(s, s->fmt->refuse);
            return;
        }
    }
    format_new(s);
    if (s->sending || !(s->pend.len || s->pend_final)) return;
    bw_buf tmp = s->out;
    s->out = s->pend;
    s->pend = tmp;
    bw_buf_reset(&s->pend);
    s->out_end = s->next;
    if (s->pend_final) bw_job_set_all_sent(s->job);
    /* measured as the bytes are handed to the socket: h2o writes at once when no send is pending */
    uint64_t now = bw_clock_mono_ns(), prev = s->last_token_write_ns;
    if (s->pend_tokens) s->last_token_write_ns = now;
    bw_metrics_tokens_written(g.metrics, bw_job_created_ns(s->job), s->pend_first, s->pend_tokens, prev, now);
    s->pend_tokens = 0;
    send_out(s, s->pend_final);
}

static void on_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    bw_sse_stream *s = H2O_STRUCT_FROM_MEMBER(bw_sse_stream, gen, g);
    (void)req;
    s->sending = 0;
    s->delivered = s->out_end;
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
    if (s->sending || s->final_sent || !s->started) {
        arm_keepalive(s);
        return;
    }
    bw_buf_reset(&s->out);
    /* a bare blank line is a valid SSE no-op too, for clients that forward every non-empty line (?ids=0) */
    bw_buf_adds(&s->out, s->no_ids ? "\n" : ": keep-alive\n\n");
    s->out_end = s->delivered;
    send_out(s, 0);
}

static void on_dispose(void *p)
{
    bw_sse_stream *s = p;
    if (h2o_timeout_is_linked(&s->keepalive)) h2o_timeout_unlink(&s->keepalive);
    if (s->job) {
        bw_job *j = s->job;
        s->job = NULL;
        bw_job_detach(j, &s->reader);
    }
    bw_buf_free(&s->out);
    bw_buf_free(&s->pend);
}

void bw_sse_init(h2o_loop_t *loop, bw_metrics *metrics, double reconnect_grace_s)
{
    g.loop = loop;
    g.metrics = metrics;
    g.reconnect_grace_s = reconnect_grace_s;
    h2o_timeout_init(loop, &g.keepalive_to, KEEPALIVE_MS);
}

/* ---- the stream as its job's reader ---- */

static void reader_notify(bw_job_reader *r) { flush(H2O_STRUCT_FROM_MEMBER(bw_sse_stream, reader, r)); }

static uint64_t reader_delivered(const bw_job_reader *r)
{
    return H2O_STRUCT_FROM_MEMBER(bw_sse_stream, reader, r)->delivered;
}

static size_t reader_backlog(const bw_job_reader *r)
{
    const bw_sse_stream *s = H2O_STRUCT_FROM_MEMBER(bw_sse_stream, reader, r);
    return (s->sending ? s->out.len : 0) + s->pend.len;
}

static const bw_job_reader_ops reader_ops = {reader_notify, reader_backlog, reader_delivered};

/* The stream loses its job to a reconnect and its response ends; -1 when it cannot be replaced. */
static int abandon(bw_sse_stream *s)
{
    if (s->fmt->whole || !s->started) return -1;
    s->job = NULL;
    bw_buf_free(&s->pend);
    if (!s->sending && !s->final_sent) {
        bw_buf_reset(&s->out);
        send_out(s, 1);
    }
    return 0;
}

static int open_stream(h2o_req_t *req, bw_job *j, uint64_t from, const bw_sse_format *fmt, void *ctx, int no_ids)
{
    bw_sse_stream *s = h2o_mem_alloc_shared(&req->pool, sizeof(*s), on_dispose);
    memset(s, 0, sizeof(*s));
    s->reader.ops = &reader_ops;
    s->req = req;
    s->next = from;
    s->out_end = from;
    s->delivered = from;
    s->fmt = fmt;
    s->fmt_ctx = ctx;
    s->no_ids = no_ids;
    s->keepalive.cb = on_keepalive;
    bw_buf_init(&s->out);
    bw_buf_init(&s->pend);
    if (bw_job_attach(j, &s->reader) != 0) return -1;
    s->job = j;
    s->gen.proceed = on_proceed;
    s->gen.stop = NULL;
    if (fmt->whole || fmt->refuse) {
        flush(s); /* the job may have ended (or started) already */
        return 0;
    }
    start_event_stream(s);
    if (!no_ids) {
        /* A browser's EventSource reconnects after its retry time (3 s by default) with Last-Event-ID;
         * the job waits --reconnect-grace for that: ask for a reconnect well within it. */
        double grace_ms = g.reconnect_grace_s * 1000.0;
        long retry_ms = grace_ms >= 3000 ? 1000 : (long)(grace_ms / 3);
        if (retry_ms > 0) bw_buf_addf(&s->pend, "retry: %ld\n\n", retry_ms);
    }
    flush(s);
    if (!s->sending) send_out(s, 0); /* nothing buffered yet: send the headers now */
    return 0;
}

int bw_sse_open(h2o_req_t *req, bw_job *j, uint64_t from, int flags)
{
    static native_opts opts[4] = {{0, 1}, {1, 1}, {0, 0}, {1, 0}};
    int no_ids = (flags & BW_SSE_NO_IDS) != 0;
    return open_stream(req, j, from, &native, &opts[((flags & BW_SSE_TIMING) ? 1 : 0) + (no_ids ? 2 : 0)], no_ids);
}

int bw_sse_open_as(h2o_req_t *req, bw_job *j, const bw_sse_format *fmt, void *ctx)
{
    return open_stream(req, j, 0, fmt, ctx, 0);
}

int bw_sse_take_over(h2o_req_t *req, bw_job *j, uint64_t from, int flags)
{
    bw_job_reader *old = bw_job_take_reader(j);
    if (!old) return -1;
    if (abandon(H2O_STRUCT_FROM_MEMBER(bw_sse_stream, reader, old)) != 0) {
        bw_job_attach(j, old); /* a whole response cannot be taken over */
        return -1;
    }
    return bw_sse_open(req, j, from, flags);
}
