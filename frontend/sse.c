/* SSE streams; see sse.h. The stream lives in the request's memory pool: h2o disposes it when the
 * request ends for any reason, which is where a vanished client turns into a cancelled job. */
#include "frontend/sse.h"

#include <string.h>

#include "frontend/buf.h"
#include "frontend/jobs.h"

#define KEEPALIVE_MS 5000

struct bw_sse_stream {
    h2o_generator_t gen;
    bw_front *f;
    h2o_req_t *req;
    bw_job *job;     /* NULL once detached */
    uint64_t next;   /* SSE id of the next event to send */
    int timing;
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

static void add_token_event(bw_sse_stream *s, size_t i)
{
    const char *text;
    size_t len;
    uint64_t ts;
    bw_job_token(s->job, i, &text, &len, &ts);
    bw_buf_addf(&s->out, "id: %zu\ndata: {\"type\":\"token\",\"t\":\"", i + 1);
    bw_buf_add_json_str(&s->out, text, len);
    if (s->timing) bw_buf_addf(&s->out, "\",\"i\":%zu,\"ts_ns\":%llu}\n\n", i, (unsigned long long)ts);
    else bw_buf_addf(&s->out, "\",\"i\":%zu}\n\n", i);
}

/* Everything the client has not seen yet, in one send. */
static void flush(bw_sse_stream *s)
{
    if (s->sending || s->final_sent || !s->job) return;
    bw_buf_reset(&s->out);
    size_t len;
    const char *started = bw_job_started(s->job, &len);
    if (s->next == 0 && started) {
        bw_buf_adds(&s->out, "id: 0\ndata: ");
        bw_buf_add(&s->out, started, len);
        bw_buf_adds(&s->out, "\n\n");
        s->next = 1;
    }
    size_t n = bw_job_n_tokens(s->job);
    if (s->next >= 1)
        for (; s->next - 1 < n; s->next++) add_token_event(s, (size_t)(s->next - 1));
    const char *terminal = bw_job_terminal(s->job, &len);
    int final = terminal && (s->next == 0 ? n == 0 : s->next - 1 >= n);
    if (final) {
        bw_buf_adds(&s->out, "data: ");
        bw_buf_add(&s->out, terminal, len);
        bw_buf_adds(&s->out, "\n\ndata: [DONE]\n\n");
    }
    if (s->out.failed) {
        /* cannot format: end the response rather than send a partial event */
        bw_buf_reset(&s->out);
        final = 1;
    }
    if (s->out.len || final) send_out(s, final);
}

static void on_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    bw_sse_stream *s = H2O_STRUCT_FROM_MEMBER(bw_sse_stream, gen, g);
    (void)req;
    s->sending = 0;
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

int bw_sse_open(bw_front *f, h2o_req_t *req, bw_job *j, uint64_t from, int timing)
{
    bw_sse_stream *s = h2o_mem_alloc_shared(&req->pool, sizeof(*s), on_dispose);
    memset(s, 0, sizeof(*s));
    s->f = f;
    s->req = req;
    s->next = from;
    s->timing = timing;
    s->keepalive.cb = on_keepalive;
    bw_buf_init(&s->out);
    if (bw_job_attach(j, s) != 0) return -1;
    s->job = j;
    s->gen.proceed = on_proceed;
    s->gen.stop = NULL;
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
