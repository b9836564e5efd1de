/* Job table and job life cycle; see jobs.h.
 *
 * States: QUEUED (waiting for an engine, on js->queued) → SUBMITTED (SUBMIT sent, on js->inflight) →
 * RUNNING (ACCEPTED seen) → FINISHED (end or error recorded, retained for resume, then freed).
 * A job is freed only when it is FINISHED, its retention has expired and no stream reads it. */
#include "frontend/jobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "frontend/buf.h"
#include "frontend/link.h"
#include "frontend/metrics.h"
#include "frontend/sse.h"

#define N_BUCKETS 4096

enum job_state { JOB_QUEUED, JOB_SUBMITTED, JOB_RUNNING, JOB_FINISHED };

typedef struct {
    uint32_t off, len; /* into bw_job.text */
    uint64_t ts_ns;
} tok_rec;

struct bw_job {
    bw_jobs *js;
    char id[BW_PROTO_JOB_ID_MAX + 1];
    bw_job *hnext;
    h2o_linklist_t state_link; /* js->queued or js->inflight */
    enum job_state state;
    bw_job_params p;
    char *prompt;

    uint64_t epoch;      /* engine epoch the job was submitted to */
    uint64_t next_seq;   /* next engine message expected */
    uint64_t replay_from; /* gap already asked for (UINT64_MAX = none) */
    int cancel_sent;

    char *started;
    size_t started_len;
    tok_rec *toks;
    size_t n_toks, cap_toks;
    bw_buf text;
    char *terminal;
    size_t terminal_len;

    bw_sse_stream *reader;
    int retention_over;
    uint32_t n_prompt;
    uint64_t created_ns;
    h2o_timeout_entry_t timer;      /* engine wait while QUEUED, retention once FINISHED */
    h2o_timeout_entry_t open_timer; /* cancels a job whose stream is never opened */
};

struct bw_jobs {
    bw_front *f;
    bw_job *buckets[N_BUCKETS];
    h2o_linklist_t queued, inflight;
    unsigned n_queued, n_inflight, n_streams;
    h2o_timeout_t wait_to, retain_to, open_to;
};

static uint32_t hash_id(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h % N_BUCKETS;
}

bw_job *bw_jobs_find(bw_jobs *js, const char *id, size_t len)
{
    if (len == 0 || len > BW_PROTO_JOB_ID_MAX) return NULL;
    for (bw_job *j = js->buckets[hash_id(id, len)]; j; j = j->hnext)
        if (strlen(j->id) == len && memcmp(j->id, id, len) == 0) return j;
    return NULL;
}

static void job_free(bw_job *j)
{
    bw_jobs *js = j->js;
    bw_job **pp = &js->buckets[hash_id(j->id, strlen(j->id))];
    while (*pp != j) pp = &(*pp)->hnext;
    *pp = j->hnext;
    if (h2o_linklist_is_linked(&j->state_link)) h2o_linklist_unlink(&j->state_link);
    if (h2o_timeout_is_linked(&j->timer)) h2o_timeout_unlink(&j->timer);
    if (h2o_timeout_is_linked(&j->open_timer)) h2o_timeout_unlink(&j->open_timer);
    free(j->prompt);
    free(j->started);
    free(j->toks);
    bw_buf_free(&j->text);
    free(j->terminal);
    free(j);
}

static void notify(bw_job *j)
{
    if (j->reader) bw_sse_notify(j->reader);
}

static void leave_state_list(bw_job *j)
{
    if (!h2o_linklist_is_linked(&j->state_link)) return;
    h2o_linklist_unlink(&j->state_link);
    if (j->state == JOB_QUEUED) j->js->n_queued--;
    else j->js->n_inflight--;
}

/* Records the terminal event (JSON text, taken) and starts retention. */
static void finish(bw_job *j, char *terminal, size_t len)
{
    bw_jobs *js = j->js;
    if (j->state == JOB_FINISHED) {
        free(terminal);
        return;
    }
    if (!terminal) { /* out of memory: the client still gets a terminal event */
        static const char oom[] = "{\"type\":\"error\",\"code\":\"INTERNAL\",\"message\":\"out of memory\"}";
        terminal = strdup(oom);
        len = terminal ? sizeof(oom) - 1 : 0;
    }
    leave_state_list(j);
    j->state = JOB_FINISHED;
    j->terminal = terminal;
    j->terminal_len = len;
    free(j->prompt);
    j->prompt = NULL;
    if (h2o_timeout_is_linked(&j->timer)) h2o_timeout_unlink(&j->timer);
    h2o_timeout_link(js->f->loop, &js->retain_to, &j->timer);
    bw_metrics_job_end(js->f->metrics, j);
    notify(j);
}

static void finish_error(bw_job *j, const char *code, const char *message, size_t message_len)
{
    bw_buf b;
    bw_buf_init(&b);
    bw_buf_adds(&b, "{\"type\":\"error\",\"code\":\"");
    bw_buf_add_json_str(&b, code, strlen(code));
    bw_buf_adds(&b, "\",\"message\":\"");
    bw_buf_add_json_str(&b, message, message_len);
    bw_buf_adds(&b, "\"}");
    size_t len;
    char *s = bw_buf_take(&b, &len);
    finish(j, s, len);
}

static void finish_end(bw_job *j, const char *reason, uint32_t tokens_out, uint64_t decode_ns, const char *matched,
                       size_t matched_len)
{
    bw_buf b;
    bw_buf_init(&b);
    bw_buf_addf(&b, "{\"type\":\"end\",\"tokens_out\":%u,\"decode_time_ms\":%llu,\"stop_reason\":\"%s\"", tokens_out,
                (unsigned long long)(decode_ns / 1000000ull), reason);
    if (matched) {
        bw_buf_adds(&b, ",\"stop_sequence_matched\":\"");
        bw_buf_add_json_str(&b, matched, matched_len);
        bw_buf_adds(&b, "\"");
    }
    bw_buf_adds(&b, "}");
    size_t len;
    char *s = bw_buf_take(&b, &len);
    finish(j, s, len);
}

static void on_wait_or_retain(h2o_timeout_entry_t *e)
{
    bw_job *j = H2O_STRUCT_FROM_MEMBER(bw_job, timer, e);
    if (j->state == JOB_QUEUED) {
        static const char msg[] = "no engine became ready within --engine-wait";
        finish_error(j, "QUEUE_TIMEOUT", msg, sizeof(msg) - 1);
        return;
    }
    j->retention_over = 1;
    if (!j->reader) job_free(j);
}

static void on_open_timeout(h2o_timeout_entry_t *e)
{
    bw_job *j = H2O_STRUCT_FROM_MEMBER(bw_job, open_timer, e);
    if (j->state != JOB_FINISHED) bw_log_info("%s: stream never opened, cancelling", j->id);
    bw_jobs_cancel(j->js, j);
}

bw_jobs *bw_jobs_create(bw_front *f)
{
    bw_jobs *js = calloc(1, sizeof(*js));
    if (!js) return NULL;
    js->f = f;
    h2o_linklist_init_anchor(&js->queued);
    h2o_linklist_init_anchor(&js->inflight);
    h2o_timeout_init(f->loop, &js->wait_to, (uint64_t)(f->opts->engine_wait_s * 1000.0));
    h2o_timeout_init(f->loop, &js->retain_to, (uint64_t)f->opts->retain_s * 1000u);
    h2o_timeout_init(f->loop, &js->open_to, (uint64_t)f->opts->open_timeout_s * 1000u);
    return js;
}

static void make_id(char *out, size_t cap)
{
    unsigned char r[16];
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
        /* getrandom cannot fail for 16 bytes once the pool is up; keep ids unique regardless */
        uint64_t t = bw_clock_mono_ns();
        for (int i = 0; i < 16; i++) r[i] = (unsigned char)(t >> (8 * (i % 8))) ^ (unsigned char)(i * 37);
    }
    r[6] = (r[6] & 0x0f) | 0x40; /* UUID version 4 */
    r[8] = (r[8] & 0x3f) | 0x80;
    snprintf(out, cap, "job-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2],
             r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]);
}

static int send_submit(bw_jobs *js, bw_job *j)
{
    bw_proto_msg m;
    bw_proto_init(&m, BW_MSG_SUBMIT, 0, j->id, 0);
    bw_proto_submit *s = &m.u.submit;
    s->flags = BW_SUBMIT_TEXT | j->p.submit_flags;
    s->temperature = j->p.temperature;
    s->top_p = j->p.top_p;
    s->min_p = j->p.min_p;
    s->repetition_penalty = j->p.repetition_penalty;
    s->top_k = j->p.top_k;
    s->repeat_last_n = 64;
    s->seed = j->p.seed;
    s->max_tokens = j->p.max_tokens;
    s->text = j->prompt;
    s->text_len = (uint32_t)j->p.prompt_len;
    s->n_stop = (uint32_t)j->p.n_stop;
    for (int i = 0; i < j->p.n_stop; i++) {
        s->stop[i].s = j->p.stop[i];
        s->stop[i].len = (uint32_t)strlen(j->p.stop[i]);
    }
    if (bw_link_send(js->f->link, &m) != 0) return -1;
    leave_state_list(j);
    j->state = JOB_SUBMITTED;
    j->epoch = bw_link_epoch(js->f->link);
    j->next_seq = 0;
    j->replay_from = UINT64_MAX;
    h2o_linklist_insert(&js->inflight, &j->state_link);
    js->n_inflight++;
    if (h2o_timeout_is_linked(&j->timer)) h2o_timeout_unlink(&j->timer);
    free(j->prompt);
    j->prompt = NULL;
    return 0;
}

enum bw_jobs_submit_result bw_jobs_submit(bw_jobs *js, const bw_job_params *p, bw_job **out)
{
    int ready = bw_link_state(js->f->link) == BW_LINK_READY && js->n_queued == 0;
    if (!ready && js->n_queued >= (unsigned)js->f->opts->queue_size) return BW_JOBS_FULL;
    bw_job *j = calloc(1, sizeof(*j));
    if (!j) return BW_JOBS_NOMEM;
    j->prompt = malloc(p->prompt_len + 1);
    if (!j->prompt) {
        free(j);
        return BW_JOBS_NOMEM;
    }
    memcpy(j->prompt, p->prompt, p->prompt_len);
    j->prompt[p->prompt_len] = '\0';
    j->js = js;
    j->p = *p;
    j->p.prompt = NULL;
    j->replay_from = UINT64_MAX;
    j->created_ns = bw_clock_mono_ns();
    bw_buf_init(&j->text);
    j->timer.cb = on_wait_or_retain;
    j->open_timer.cb = on_open_timeout;
    do make_id(j->id, sizeof(j->id));
    while (bw_jobs_find(js, j->id, strlen(j->id)));
    uint32_t h = hash_id(j->id, strlen(j->id));
    j->hnext = js->buckets[h];
    js->buckets[h] = j;

    j->state = JOB_QUEUED;
    h2o_linklist_insert(&js->queued, &j->state_link);
    js->n_queued++;
    h2o_timeout_link(js->f->loop, &js->open_to, &j->open_timer);
    if (!ready || send_submit(js, j) != 0) h2o_timeout_link(js->f->loop, &js->wait_to, &j->timer);
    *out = j;
    return BW_JOBS_OK;
}

void bw_jobs_engine_ready(bw_jobs *js)
{
    while (!h2o_linklist_is_empty(&js->queued)) {
        bw_job *j = H2O_STRUCT_FROM_MEMBER(bw_job, state_link, js->queued.next);
        if (send_submit(js, j) != 0) {
            if (!h2o_timeout_is_linked(&j->timer)) h2o_timeout_link(js->f->loop, &js->wait_to, &j->timer);
            break; /* the push queue is full: the next HELLO retries */
        }
    }
}

void bw_jobs_engine_lost(bw_jobs *js)
{
    static const char msg[] = "the engine process exited or restarted before the job completed";
    while (!h2o_linklist_is_empty(&js->inflight)) {
        bw_job *j = H2O_STRUCT_FROM_MEMBER(bw_job, state_link, js->inflight.next);
        finish_error(j, "ENGINE_LOST", msg, sizeof(msg) - 1);
    }
}

void bw_jobs_fail_all(bw_jobs *js, const char *code, const char *message)
{
    bw_jobs_engine_lost(js); /* in-flight first: their engine is going away with us */
    while (!h2o_linklist_is_empty(&js->queued)) {
        bw_job *j = H2O_STRUCT_FROM_MEMBER(bw_job, state_link, js->queued.next);
        finish_error(j, code, message, strlen(message));
    }
}

void bw_jobs_cancel(bw_jobs *js, bw_job *j)
{
    if (h2o_timeout_is_linked(&j->open_timer)) h2o_timeout_unlink(&j->open_timer);
    switch (j->state) {
    case JOB_QUEUED:
        finish_end(j, "CANCELLED", 0, 0, NULL, 0);
        break;
    case JOB_SUBMITTED:
    case JOB_RUNNING:
        if (!j->cancel_sent) {
            bw_proto_msg m;
            bw_proto_init(&m, BW_MSG_CANCEL, 0, j->id, 0);
            /* if the push queue is full the engine is gone or stuck; engine loss ends the job then */
            if (bw_link_send(js->f->link, &m) == 0) j->cancel_sent = 1;
        }
        break;
    case JOB_FINISHED:
        break;
    }
}

static void request_replay(bw_jobs *js, bw_job *j)
{
    if (j->replay_from == j->next_seq) return; /* asked already; the engine replays in order */
    bw_proto_msg m;
    bw_proto_init(&m, BW_MSG_REPLAY, 0, j->id, 0);
    m.u.replay.from_seq = j->next_seq;
    if (bw_link_send(js->f->link, &m) == 0) j->replay_from = j->next_seq;
    bw_log_warn("%s: gap in engine messages at seq %llu, asked for a replay", j->id,
                (unsigned long long)j->next_seq);
}

static int add_token(bw_job *j, const bw_proto_token *t, uint64_t ts_ns)
{
    if ((size_t)t->index != j->n_toks) return -1;
    if (j->n_toks == j->cap_toks) {
        size_t cap = j->cap_toks ? j->cap_toks * 2 : 64;
        tok_rec *n = realloc(j->toks, cap * sizeof(*n));
        if (!n) return -1;
        j->toks = n;
        j->cap_toks = cap;
    }
    size_t off = j->text.len;
    bw_buf_add(&j->text, t->text, t->text_len);
    if (j->text.failed || off > UINT32_MAX) return -1;
    j->toks[j->n_toks++] = (tok_rec){.off = (uint32_t)off, .len = t->text_len, .ts_ns = ts_ns};
    return 0;
}

static void on_accepted(bw_jobs *js, bw_job *j, const bw_proto_msg *m)
{
    bw_buf b;
    bw_buf_init(&b);
    const char *model = bw_link_hello(js->f->link)->model_id;
    bw_buf_adds(&b, "{\"type\":\"started\",\"job_id\":\"");
    bw_buf_adds(&b, j->id);
    bw_buf_adds(&b, "\",\"model\":\"");
    bw_buf_add_json_str(&b, model, strlen(model));
    bw_buf_addf(&b, "\",\"seed\":%llu,\"started_at\":\"%lld\"}", (unsigned long long)m->u.accepted.seed,
                (long long)(m->h.real_ns / 1000000000ull));
    j->started = bw_buf_take(&b, &j->started_len);
    j->n_prompt = m->u.accepted.n_prompt;
    j->state = JOB_RUNNING;
}

void bw_jobs_on_msg(bw_jobs *js, const bw_proto_msg *m)
{
    bw_job *j = bw_jobs_find(js, m->h.job_id, strlen(m->h.job_id));
    if (!j || j->state == JOB_QUEUED || j->state == JOB_FINISHED || m->h.epoch != j->epoch) return;
    if (m->h.seq < j->next_seq) return; /* a replayed message we already have */
    if (m->h.seq > j->next_seq) {
        request_replay(js, j);
        return;
    }
    j->next_seq++;
    switch (m->h.type) {
    case BW_MSG_ACCEPTED:
        on_accepted(js, j, m);
        break;
    case BW_MSG_TOKEN:
        if (j->state != JOB_RUNNING || add_token(j, &m->u.token, m->h.real_ns) != 0) {
            static const char msg[] = "the engine sent a token out of order";
            finish_error(j, "GENERATION_ERROR", msg, sizeof(msg) - 1);
            bw_jobs_cancel(js, j);
            return;
        }
        break;
    case BW_MSG_DONE: {
        const bw_proto_done *d = &m->u.done;
        int seq = d->stop == BW_PSTOP_SEQUENCE;
        finish_end(j, bw_proto_stop_name(d->stop), d->n_generated, d->decode_ns, seq ? d->stop_matched : NULL,
                   d->stop_matched_len);
        return;
    }
    case BW_MSG_ERROR:
        finish_error(j, bw_proto_errcode_name(m->u.error.code), m->u.error.message, m->u.error.message_len);
        return;
    default:
        return;
    }
    notify(j);
}

unsigned bw_jobs_queued(const bw_jobs *js) { return js->n_queued; }
unsigned bw_jobs_running(const bw_jobs *js) { return js->n_inflight; }
unsigned bw_jobs_streams(const bw_jobs *js) { return js->n_streams; }

const char *bw_job_id(const bw_job *j) { return j->id; }

int bw_job_attach(bw_job *j, bw_sse_stream *s)
{
    if (j->reader) return -1;
    j->reader = s;
    j->js->n_streams++;
    if (h2o_timeout_is_linked(&j->open_timer)) h2o_timeout_unlink(&j->open_timer);
    return 0;
}

void bw_job_detach(bw_job *j, bw_sse_stream *s)
{
    if (j->reader != s) return;
    j->reader = NULL;
    j->js->n_streams--;
    if (j->state != JOB_FINISHED) bw_jobs_cancel(j->js, j);
    else if (j->retention_over) job_free(j);
}

const char *bw_job_started(const bw_job *j, size_t *len)
{
    *len = j->started_len;
    return j->started;
}

size_t bw_job_n_tokens(const bw_job *j) { return j->n_toks; }

void bw_job_token(const bw_job *j, size_t i, const char **text, size_t *len, uint64_t *ts_ns)
{
    *text = j->text.p + j->toks[i].off;
    *len = j->toks[i].len;
    *ts_ns = j->toks[i].ts_ns;
}

const char *bw_job_terminal(const bw_job *j, size_t *len)
{
    *len = j->terminal_len;
    return j->terminal;
}

uint32_t bw_job_n_prompt(const bw_job *j) { return j->n_prompt; }
uint64_t bw_job_created_ns(const bw_job *j) { return j->created_ns; }
