/* Job table and job life cycle; see jobs.h.
 *
 * States: QUEUED (waiting for an engine: on js->resume if it ran before, else on js->queued) → SUBMITTED
 * (SUBMIT sent to engine `epoch`, on js->inflight) → RUNNING (ACCEPTED seen) → FINISHED (end or error
 * recorded, retained for resume, then freed). Engine loss, ENGINE_SHUTDOWN and NOT_TAKEN send a job back
 * to QUEUED with the output it has; nothing else leaves FINISHED or re-enters QUEUED.
 * A job is freed only when it is FINISHED, its retention has expired and no stream reads it.
 *
 * Messages are filtered by the job's epoch and its per-epoch sequence (seq restarts at 0 with every
 * submission), so the runs of a job on different engines never mix. */
#include "frontend/jobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "frontend/buf.h"

#define N_BUCKETS 4096
#define TICK_MS 100
#define REPLAY_RETRY_MS 100 /* a REPLAY that filled nothing is asked again after this */
#define REPLAY_MAX_TRIES 50 /* then the gap is unrepairable: 5 s of asking without progress */
#define PROBE_IDLE_MS 1000  /* a job silent this long gets a REPLAY probe: its last messages may be lost */
#define EVENT_OVERHEAD 40   /* bytes of an SSE token event besides its text, for a job without a reader */

enum job_state { JOB_QUEUED, JOB_SUBMITTED, JOB_RUNNING, JOB_FINISHED };

typedef struct {
    uint32_t off, len; /* into bw_job.text */
    int32_t id;        /* token id: the resume point sent to the next engine */
    uint64_t ts_ns;
} tok_rec;

struct bw_job {
    bw_jobs *js;
    char id[BW_PROTO_JOB_ID_MAX + 1];
    bw_job *hnext;
    h2o_linklist_t state_link; /* js->resume, js->queued or js->inflight */
    enum job_state state;
    bw_job_params p;
    char *prompt;                         /* kept until the job is finished: a resumed job sends it again */
    char *prediction;                     /* likewise, or NULL */
    uint32_t pred_drafted, pred_accepted; /* from the engine's DONE */

    uint64_t epoch;     /* engine the job was last submitted to */
    unsigned n_submits; /* 0: never reached an engine (QUEUE_TIMEOUT rather than ENGINE_LOST) */
    int resume_pending; /* requeued after its engine was lost: the next submission is a resume */
    uint64_t next_seq;  /* next message expected from that engine */
    int gap;            /* a later message arrived first: a REPLAY is outstanding */
    uint64_t gap_end;   /* messages below this seq that arrive now came through a replay */
    unsigned replay_tries;
    uint64_t replay_ms, last_msg_ms;

    int has_start;
    bw_job_start start;
    char *model; /* start.model's storage */
    char arch[BW_PROTO_MAX_NAME + 1], weight_types[BW_PROTO_MAX_NAME + 1];
    tok_rec *toks;
    size_t n_toks, cap_toks;
    bw_buf text;
    uint64_t decode_ns;                 /* summed over the job's runs */
    uint64_t run_first_ns, run_last_ns; /* engine stamps of the current run's first and last token */
    bw_job_outcome out;                 /* end == BW_JOB_RUNNING until the job is FINISHED */
    char *out_text;                     /* storage of out.message or out.matched */

    bw_job_reader *reader;
    uint64_t delivered; /* SSE id of the first event the last reader had not written yet */
    int retention_over;
    int all_sent; /* a stream handed the terminal event to its client */
    uint32_t n_prompt;
    int32_t clamped_to; /* max_tokens as the context allowed it, when that is less than asked (else 0) */
    uint64_t created_ns;
    h2o_timeout_entry_t timer;      /* engine wait while QUEUED, retention once FINISHED */
    h2o_timeout_entry_t open_timer; /* cancels a job whose stream is not opened (or reopened) in time */
};

struct bw_jobs {
    bw_jobs_config c;
    int stopping;
    bw_job *buckets[N_BUCKETS];
    h2o_linklist_t resume, queued, inflight;
    unsigned n_queued, n_inflight, n_streams;
    h2o_timeout_t wait_to, retain_to, open_to, grace_to, tick_to;
    h2o_timeout_entry_t tick;
    bw_jobs_stats st;
};

static uint64_t now_ms(void) { return bw_clock_mono_ns() / 1000000ull; }

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
    free(j->prediction);
    free(j->model);
    free(j->toks);
    bw_buf_free(&j->text);
    free(j->out_text);
    free(j);
}

static void notify(bw_job *j)
{
    if (j->reader) j->reader->ops->notify(j->reader);
}

static int send_msg(bw_jobs *js, bw_proto_msg *m) { return js->c.engine.send(js->c.engine.ctx, m); }

static void leave_state_list(bw_job *j)
{
    if (!h2o_linklist_is_linked(&j->state_link)) return;
    h2o_linklist_unlink(&j->state_link);
    if (j->state == JOB_QUEUED) j->js->n_queued--;
    else j->js->n_inflight--;
}

static void unlink_timer(h2o_timeout_entry_t *e)
{
    if (h2o_timeout_is_linked(e)) h2o_timeout_unlink(e);
}

/* Records the outcome (out: its kind and details filled; text: the storage they point into, taken) and
 * starts retention. */
static void finish(bw_job *j, char *text)
{
    bw_jobs *js = j->js;
    if (j->state == JOB_FINISHED) {
        free(text);
        return;
    }
    leave_state_list(j);
    j->state = JOB_FINISHED;
    j->out.tokens_out = j->n_toks;
    j->out.decode_ns = j->decode_ns;
    j->out_text = text;
    free(j->prompt);
    j->prompt = NULL;
    free(j->prediction);
    j->prediction = NULL;
    unlink_timer(&j->timer);
    unlink_timer(&j->open_timer);
    h2o_timeout_link(js->c.loop, &js->retain_to, &j->timer);
    int failed = j->out.end == BW_JOB_FAILED;
    bw_metrics_job_end(js->c.metrics, j->id, failed, failed ? j->out.code : bw_stop_reason_name(j->out.stop), j->n_toks,
                       j->n_prompt, failed ? 0 : j->decode_ns / 1000000ull);
    notify(j);
}

static void finish_error(bw_job *j, const char *code, const char *message, size_t message_len)
{
    if (j->state == JOB_FINISHED) return;
    char *text = malloc(message_len + 1);
    j->out.end = BW_JOB_FAILED;
    if (text) {
        memcpy(text, message, message_len);
        text[message_len] = '\0';
        snprintf(j->out.code, sizeof(j->out.code), "%s", code);
        j->out.message = text, j->out.message_len = message_len;
    } else { /* out of memory: the client still gets a terminal event */
        snprintf(j->out.code, sizeof(j->out.code), "INTERNAL");
        j->out.message = "out of memory", j->out.message_len = strlen(j->out.message);
    }
    finish(j, text);
}

/* stop: enum bw_stop_reason; matched: the stop sequence the engine named, or NULL */
static void finish_end(bw_job *j, uint8_t stop, const char *matched, size_t matched_len)
{
    if (j->state == JOB_FINISHED) return;
    char *text = matched ? malloc(matched_len + 1) : NULL;
    j->out.end = BW_JOB_ENDED;
    j->out.stop = stop;
    if (text) {
        memcpy(text, matched, matched_len);
        text[matched_len] = '\0';
        j->out.has_matched = 1;
        j->out.matched = text, j->out.matched_len = matched_len;
    }
    j->out.has_prediction = j->p.prediction_len > 0;
    j->out.pred_accepted = j->pred_accepted;
    j->out.pred_rejected = j->pred_drafted - j->pred_accepted;
    j->out.clamped_to = j->clamped_to;
    finish(j, text);
}

/* A run that ends without its engine's DONE (cancelled here, engine lost) still decoded: its time is
 * what its tokens' stamps span, the same measure as the engine's (first token to the end). */
static void close_run(bw_job *j)
{
    if (j->run_last_ns > j->run_first_ns) j->decode_ns += j->run_last_ns - j->run_first_ns;
    j->run_first_ns = j->run_last_ns = 0;
}

/* Tells the job's engine to stop it; best effort, the job is ended here regardless. */
static void send_cancel(bw_jobs *js, bw_job *j)
{
    if (j->state != JOB_SUBMITTED && j->state != JOB_RUNNING) return;
    bw_proto_msg m;
    bw_proto_init(&m, BW_MSG_CANCEL, j->epoch, j->id, 0);
    if (send_msg(js, &m) != 0)
        bw_log_warn("%s: could not queue a CANCEL for engine %016llx", j->id, (unsigned long long)j->epoch);
}

static void on_wait_or_retain(h2o_timeout_entry_t *e)
{
    bw_job *j = H2O_STRUCT_FROM_MEMBER(bw_job, timer, e);
    if (j->state == JOB_QUEUED) {
        if (j->n_submits) {
            static const char msg[] = "the engine was lost and no engine took the job back within --engine-wait";
            j->js->st.jobs_engine_lost++;
            finish_error(j, "ENGINE_LOST", msg, sizeof(msg) - 1);
        } else {
            static const char msg[] = "no engine became ready within --engine-wait";
            finish_error(j, "QUEUE_TIMEOUT", msg, sizeof(msg) - 1);
        }
        return;
    }
    j->retention_over = 1;
    if (!j->reader) job_free(j);
}

static void on_open_timeout(h2o_timeout_entry_t *e)
{
    bw_job *j = H2O_STRUCT_FROM_MEMBER(bw_job, open_timer, e);
    if (j->state != JOB_FINISHED) bw_log_info("%s: no reader attached in time, cancelling", j->id);
    bw_jobs_cancel(j->js, j);
}

/* Asks the job's engine to publish its messages again from next_seq. */
static void send_replay(bw_jobs *js, bw_job *j, uint64_t now)
{
    bw_proto_msg m;
    bw_proto_init(&m, BW_MSG_REPLAY, j->epoch, j->id, 0);
    m.u.replay.from_seq = j->next_seq;
    j->replay_ms = now;
    if (send_msg(js, &m) != 0) bw_log_warn("%s: could not queue a REPLAY", j->id);
}

static void cancel_with_error(bw_jobs *js, bw_job *j, const char *code, const char *message)
{
    send_cancel(js, j);
    finish_error(j, code, message, strlen(message));
}

/* Gap repair and lost-tail detection: a gap is asked for again until it is filled or declared
 * unrepairable; a job that has been silent for a while gets one REPLAY, which costs nothing when nothing
 * was lost and recovers the tail (last tokens, DONE) when it was. */
static void on_tick(h2o_timeout_entry_t *e)
{
    bw_jobs *js = H2O_STRUCT_FROM_MEMBER(bw_jobs, tick, e);
    uint64_t now = now_ms();
    h2o_linklist_t *n = js->inflight.next;
    while (n != &js->inflight) {
        bw_job *j = H2O_STRUCT_FROM_MEMBER(bw_job, state_link, n);
        n = n->next; /* j may leave the list below */
        if (j->gap) {
            if (now - j->replay_ms < REPLAY_RETRY_MS) continue;
            if (++j->replay_tries > REPLAY_MAX_TRIES) {
                js->st.gaps_unrepairable++;
                cancel_with_error(js, j, "TOKEN_GAP",
                                  "messages of this job were lost between engine and front and could not be replayed");
                continue;
            }
            send_replay(js, j, now);
        } else if (now - j->last_msg_ms >= PROBE_IDLE_MS && now - j->replay_ms >= PROBE_IDLE_MS) {
            send_replay(js, j, now);
        }
    }
    h2o_timeout_link(js->c.loop, &js->tick_to, &js->tick);
}

bw_jobs *bw_jobs_create(const bw_jobs_config *c)
{
    bw_jobs *js = calloc(1, sizeof(*js));
    if (!js) return NULL;
    js->c = *c;
    h2o_linklist_init_anchor(&js->resume);
    h2o_linklist_init_anchor(&js->queued);
    h2o_linklist_init_anchor(&js->inflight);
    h2o_timeout_init(c->loop, &js->wait_to, (uint64_t)(c->engine_wait_s * 1000.0));
    h2o_timeout_init(c->loop, &js->retain_to, (uint64_t)c->retain_s * 1000u);
    h2o_timeout_init(c->loop, &js->open_to, (uint64_t)c->open_timeout_s * 1000u);
    h2o_timeout_init(c->loop, &js->grace_to, (uint64_t)(c->reconnect_grace_s * 1000.0));
    h2o_timeout_init(c->loop, &js->tick_to, TICK_MS);
    js->tick.cb = on_tick;
    h2o_timeout_link(c->loop, &js->tick_to, &js->tick);
    return js;
}

void bw_jobs_shutdown(bw_jobs *js) { js->stopping = 1; }

void bw_jobs_free(bw_jobs *js)
{
    for (size_t i = 0; i < N_BUCKETS; i++)
        while (js->buckets[i]) job_free(js->buckets[i]);
    unlink_timer(&js->tick);
    free(js);
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

/* Sends the job to the current engine, with its delivered output as the resume point. */
static int send_submit(bw_jobs *js, bw_job *j)
{
    bw_proto_msg m;
    uint64_t epoch = js->c.engine.ready_epoch(js->c.engine.ctx);
    if (!epoch) return -1;
    bw_proto_init(&m, BW_MSG_SUBMIT, epoch, j->id, 0);
    bw_proto_submit *s = &m.u.submit;
    s->flags = BW_SUBMIT_TEXT | j->p.submit_flags;
    s->temperature = j->p.temperature;
    s->top_p = j->p.top_p;
    s->min_p = j->p.min_p;
    s->repetition_penalty = j->p.repetition_penalty;
    s->top_k = j->p.top_k;
    s->repeat_last_n = BW_PROTO_REPEAT_LAST_N;
    s->seed = j->p.seed;
    s->max_tokens = j->p.max_tokens;
    s->text = j->prompt;
    s->text_len = (uint32_t)j->p.prompt_len;
    s->n_stop = (uint32_t)j->p.n_stop;
    for (int i = 0; i < j->p.n_stop; i++) {
        s->stop[i].s = j->p.stop[i];
        s->stop[i].len = (uint32_t)strlen(j->p.stop[i]);
    }
    if (j->prediction) {
        s->flags |= BW_SUBMIT_PREDICTION;
        s->prediction = j->prediction;
        s->prediction_len = (uint32_t)j->p.prediction_len;
    }
    uint8_t *le = NULL;
    if (j->n_toks) {
        le = malloc(4 * j->n_toks);
        if (!le) return -1;
        for (size_t i = 0; i < j->n_toks; i++)
            for (int b = 0; b < 4; b++) le[4 * i + (size_t)b] = (uint8_t)((uint32_t)j->toks[i].id >> (8 * b));
        s->resume_index = (int32_t)j->n_toks;
        s->n_resume = (uint32_t)j->n_toks;
        s->resume_le = le;
    }
    int rc = send_msg(js, &m);
    free(le);
    if (rc != 0) return -1;
    if (j->resume_pending) {
        js->st.jobs_resumed++;
        js->st.tokens_resumed += j->n_toks;
        bw_log_info("%s: resumed on engine %016llx at token %zu", j->id, (unsigned long long)epoch, j->n_toks);
    }
    leave_state_list(j);
    j->state = JOB_SUBMITTED;
    j->epoch = epoch;
    j->n_submits++;
    j->resume_pending = 0;
    j->next_seq = 0;
    j->gap = 0;
    j->gap_end = 0;
    j->replay_tries = 0;
    j->last_msg_ms = j->replay_ms = now_ms();
    h2o_linklist_insert(&js->inflight, &j->state_link);
    js->n_inflight++;
    unlink_timer(&j->timer);
    return 0;
}

/* Back to waiting for an engine, keeping the output delivered so far. The engine wait starts now, so a
 * job whose engine is gone for good ends with ENGINE_LOST after --engine-wait. */
static void requeue(bw_job *j, int resume)
{
    bw_jobs *js = j->js;
    close_run(j);
    leave_state_list(j);
    j->state = JOB_QUEUED;
    if (resume) j->resume_pending = 1;
    h2o_linklist_insert(&js->resume, &j->state_link);
    js->n_queued++;
    if (!h2o_timeout_is_linked(&j->timer)) h2o_timeout_link(js->c.loop, &js->wait_to, &j->timer);
}

enum bw_jobs_submit_result bw_jobs_submit(bw_jobs *js, const bw_job_params *p, bw_job **out)
{
    int ready = !js->stopping && js->c.engine.ready_epoch(js->c.engine.ctx) != 0 && js->n_queued == 0;
    if (!ready && js->n_queued >= (unsigned)js->c.queue_size) return BW_JOBS_FULL;
    bw_job *j = calloc(1, sizeof(*j));
    if (!j) return BW_JOBS_NOMEM;
    j->prompt = malloc(p->prompt_len + 1);
    if (!j->prompt) {
        free(j);
        return BW_JOBS_NOMEM;
    }
    memcpy(j->prompt, p->prompt, p->prompt_len);
    j->prompt[p->prompt_len] = '\0';
    if (p->prediction && p->prediction_len) {
        j->prediction = malloc(p->prediction_len);
        if (!j->prediction) {
            free(j->prompt);
            free(j);
            return BW_JOBS_NOMEM;
        }
        memcpy(j->prediction, p->prediction, p->prediction_len);
    }
    j->js = js;
    j->p = *p;
    j->p.prompt = NULL;
    j->p.prediction = NULL;
    if (!j->prediction) j->p.prediction_len = 0;
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
    h2o_timeout_link(js->c.loop, &js->open_to, &j->open_timer);
    if (!ready || send_submit(js, j) != 0) h2o_timeout_link(js->c.loop, &js->wait_to, &j->timer);
    *out = j;
    return BW_JOBS_OK;
}

static int submit_list(bw_jobs *js, h2o_linklist_t *list)
{
    while (!h2o_linklist_is_empty(list)) {
        bw_job *j = H2O_STRUCT_FROM_MEMBER(bw_job, state_link, list->next);
        if (send_submit(js, j) != 0) return -1; /* the push queue is full: the next HELLO retries */
    }
    return 0;
}

void bw_jobs_engine_ready(bw_jobs *js)
{
    if (js->stopping || !js->c.engine.ready_epoch(js->c.engine.ctx)) return;
    if (submit_list(js, &js->resume) == 0) submit_list(js, &js->queued);
}

void bw_jobs_engine_lost(bw_jobs *js, uint64_t epoch)
{
    js->st.engine_losses++;
    unsigned n = 0;
    h2o_linklist_t *l = js->inflight.next;
    while (l != &js->inflight) {
        bw_job *j = H2O_STRUCT_FROM_MEMBER(bw_job, state_link, l);
        l = l->next;
        if (j->epoch != epoch) continue;
        requeue(j, 1);
        n++;
    }
    if (n) bw_log_info("%u jobs wait for the next engine to resume them", n);
}

void bw_jobs_fail_all(bw_jobs *js, const char *code, const char *message)
{
    h2o_linklist_t *lists[] = {&js->inflight, &js->resume, &js->queued};
    for (size_t i = 0; i < 3; i++)
        while (!h2o_linklist_is_empty(lists[i])) {
            bw_job *j = H2O_STRUCT_FROM_MEMBER(bw_job, state_link, lists[i]->next);
            finish_error(j, code, message, strlen(message));
        }
}

void bw_jobs_cancel(bw_jobs *js, bw_job *j)
{
    if (j->state == JOB_FINISHED) return;
    send_cancel(js, j);
    close_run(j);
    finish_end(j, BW_STOP_CANCELLED, NULL, 0);
}

/* Bytes the client has not taken yet. While a stream reads the job they are its formatted events (an
 * OpenAI chunk repeats the model name and ids, many times the token's text); without a reader, the
 * events from the first one no stream has written, estimated from their text. */
static size_t backlog_bytes(const bw_job *j)
{
    if (j->reader) return j->reader->ops->backlog(j->reader);
    uint64_t first = j->delivered;
    size_t u = first > 0 ? (size_t)(first - 1) : 0;
    if (u >= j->n_toks) return 0;
    return (j->text.len - j->toks[u].off) + (j->n_toks - u) * EVENT_OVERHEAD;
}

static int add_token(bw_job *j, const bw_proto_token *t, uint64_t ts_ns)
{
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
    j->toks[j->n_toks++] = (tok_rec){.off = (uint32_t)off, .len = t->text_len, .id = t->token_id, .ts_ns = ts_ns};
    if (!j->run_first_ns) j->run_first_ns = ts_ns;
    j->run_last_ns = ts_ns;
    return 0;
}

/* The engine generates at most n_ctx - n_prompt tokens. Returns -1 when the job has been ended. */
static int fit_context(bw_jobs *js, bw_job *j)
{
    uint32_t n_ctx = js->c.engine.hello(js->c.engine.ctx)->n_ctx;
    int64_t room = (int64_t)n_ctx - (int64_t)j->n_prompt;
    if (room <= 0 || j->p.max_tokens <= room) return 0;
    if (!j->p.refuse_over_context) {
        j->clamped_to = (int32_t)room;
        return 0;
    }
    char msg[256];
    snprintf(msg, sizeof(msg),
             "This model's maximum context length is %u tokens. However, you requested %lld tokens "
             "(%u in the prompt, %d in the completion). Please reduce the length of the prompt or the completion.",
             n_ctx, (long long)j->n_prompt + j->p.max_tokens, j->n_prompt, (int)j->p.max_tokens);
    cancel_with_error(js, j, "context_length_exceeded", msg);
    return -1;
}

static void on_accepted(bw_jobs *js, bw_job *j, const bw_proto_msg *m)
{
    j->state = JOB_RUNNING;
    if (j->has_start) return; /* a resumed run: the client saw `started` from the first one */
    j->n_prompt = m->u.accepted.n_prompt;
    if (fit_context(js, j) != 0) return;
    const bw_proto_hello *h = js->c.engine.hello(js->c.engine.ctx);
    j->model = strdup(js->c.engine.model_id(js->c.engine.ctx));
    snprintf(j->arch, sizeof(j->arch), "%s", h->arch);
    snprintf(j->weight_types, sizeof(j->weight_types), "%s", h->weight_types);
    j->start = (bw_job_start){.job_id = j->id,
                              .model = j->model ? j->model : "",
                              .arch = j->arch,
                              .weight_types = j->weight_types,
                              .seed = m->u.accepted.seed,
                              .started_at = (long long)(m->h.real_ns / 1000000000ull)};
    j->has_start = 1;
}

/* A TOKEN in sequence: stored once at its index, then the client's backlog is checked. Returns -1 when
 * the job has been ended. */
static int on_token(bw_jobs *js, bw_job *j, const bw_proto_msg *m)
{
    const bw_proto_token *t = &m->u.token;
    if (j->state != JOB_RUNNING || (size_t)t->index > j->n_toks) {
        static const char msg[] = "the engine skipped a token index";
        cancel_with_error(js, j, "GENERATION_ERROR", msg);
        return -1;
    }
    if ((size_t)t->index < j->n_toks) {
        js->st.duplicates_suppressed++;
        return 0;
    }
    if (add_token(j, t, m->h.real_ns) != 0) {
        cancel_with_error(js, j, "INTERNAL", "out of memory storing a token");
        return -1;
    }
    if (m->h.seq < j->gap_end) js->st.tokens_replayed++;
    notify(j); /* formats the event, so that its bytes count */
    if (backlog_bytes(j) > js->c.stream_buffer) {
        js->st.slow_client_cancels++;
        bw_log_warn("%s: the client is more than %zu bytes behind; cancelling", j->id, js->c.stream_buffer);
        cancel_with_error(js, j, "SLOW_CLIENT",
                          "the client did not read the stream fast enough: its buffer (--stream-buffer) overflowed");
        return -1;
    }
    return 0;
}

/* Messages that are about the submission itself rather than a run: answered before sequence checks
 * because the engine that sends them keeps no history for the job. Returns 1 when m was one. */
static int on_submission_reply(bw_jobs *js, bw_job *j, const bw_proto_msg *m)
{
    if (m->h.type != BW_MSG_ERROR) return 0;
    uint16_t code = m->u.error.code;
    if (code == BW_PERR_NOT_TAKEN) {
        /* any engine may answer: PUSH can hand a SUBMIT to a draining engine during a rolling upgrade */
        if (j->state != JOB_SUBMITTED) return 1;
        j->n_submits--; /* it never reached an engine that runs it */
        requeue(j, 0);
        bw_jobs_engine_ready(js);
        return 1;
    }
    if (code == BW_PERR_REPLAY_GONE) {
        /* an answer to a REPLAY sent before the job left that engine (NOT_TAKEN, loss) says nothing */
        if (m->h.epoch != j->epoch || j->state == JOB_QUEUED) return 1;
        if (j->state == JOB_SUBMITTED && j->next_seq == 0) {
            /* the engine never saw the SUBMIT (it went to another engine that dropped it): send again */
            j->n_submits--;
            requeue(j, 0);
            bw_jobs_engine_ready(js);
            return 1;
        }
        js->st.gaps_unrepairable++;
        cancel_with_error(js, j, "REPLAY_UNAVAILABLE",
                          "messages of this job were lost and the engine no longer keeps them");
        return 1;
    }
    return 0;
}

void bw_jobs_on_msg(bw_jobs *js, const bw_proto_msg *m)
{
    bw_job *j = bw_jobs_find(js, m->h.job_id, strlen(m->h.job_id));
    if (!j || j->state == JOB_FINISHED) return;
    if (on_submission_reply(js, j, m)) return;
    if (j->state == JOB_QUEUED || m->h.epoch != j->epoch || m->h.seq < j->next_seq) {
        /* a stale engine's output, or a message replayed after it had arrived */
        if (m->h.type == BW_MSG_TOKEN) js->st.duplicates_suppressed++;
        return;
    }
    uint64_t now = now_ms();
    j->last_msg_ms = now;
    if (m->h.seq > j->next_seq) {
        if (m->h.seq + 1 > j->gap_end) j->gap_end = m->h.seq + 1;
        if (!j->gap) {
            j->gap = 1;
            j->replay_tries = 0;
            bw_log_warn("%s: engine messages lost from seq %llu; asking for a replay", j->id,
                        (unsigned long long)j->next_seq);
            send_replay(js, j, now);
        }
        return;
    }
    j->next_seq++;
    /* a gap that is being filled is not unrepairable: only REPLAYs that bring nothing count */
    j->replay_tries = 0;
    if (j->gap && j->next_seq >= j->gap_end) j->gap = 0;
    switch (m->h.type) {
    case BW_MSG_ACCEPTED:
        if ((size_t)m->u.accepted.first_index != j->n_toks) {
            cancel_with_error(js, j, "GENERATION_ERROR", "the engine resumed the job at the wrong index");
            return;
        }
        on_accepted(js, j, m);
        break;
    case BW_MSG_TOKEN:
        if (on_token(js, j, m) != 0) return;
        break;
    case BW_MSG_DONE: {
        const bw_proto_done *d = &m->u.done;
        j->decode_ns += d->decode_ns;
        /* the counts of the run that finished (a resumed job's earlier runs sent no DONE) */
        j->pred_drafted = d->pred_drafted;
        j->pred_accepted = d->pred_accepted;
        js->st.spec_drafted[0] += d->pred_drafted;
        js->st.spec_accepted[0] += d->pred_accepted;
        js->st.spec_drafted[1] += d->lookup_drafted;
        js->st.spec_accepted[1] += d->lookup_accepted;
        j->run_first_ns = j->run_last_ns = 0; /* the engine measured this run */
        int seq = d->stop == BW_STOP_SEQUENCE;
        finish_end(j, d->stop, seq ? d->stop_matched : NULL, d->stop_matched_len);
        return;
    }
    case BW_MSG_ERROR:
        if (m->u.error.code == BW_PERR_SHUTDOWN && !js->stopping) {
            /* the engine is exiting with the job unfinished: the next engine resumes it (the link has
             * stopped sending new work to that engine when this message passed it) */
            requeue(j, 1);
            bw_jobs_engine_ready(js);
            return;
        }
        finish_error(j, bw_proto_errcode_name(m->u.error.code), m->u.error.message, m->u.error.message_len);
        return;
    default: return;
    }
    notify(j);
}

void bw_jobs_stats_get(const bw_jobs *js, bw_jobs_stats *out) { *out = js->st; }

unsigned bw_jobs_queued(const bw_jobs *js) { return js->n_queued; }
unsigned bw_jobs_running(const bw_jobs *js) { return js->n_inflight; }
unsigned bw_jobs_streams(const bw_jobs *js) { return js->n_streams; }

const char *bw_job_id(const bw_job *j) { return j->id; }

int bw_job_attach(bw_job *j, bw_job_reader *r)
{
    if (j->reader) return -1;
    j->reader = r;
    j->js->n_streams++;
    unlink_timer(&j->open_timer);
    return 0;
}

bw_job_reader *bw_job_take_reader(bw_job *j)
{
    bw_job_reader *r = j->reader;
    if (!r) return NULL;
    j->delivered = r->ops->delivered(r);
    j->reader = NULL;
    j->js->n_streams--;
    return r;
}

void bw_job_detach(bw_job *j, bw_job_reader *r)
{
    if (j->reader != r) return;
    j->delivered = r->ops->delivered(r);
    j->reader = NULL;
    j->js->n_streams--;
    if (j->state != JOB_FINISHED) {
        if (j->js->c.reconnect_grace_s <= 0) bw_jobs_cancel(j->js, j);
        else h2o_timeout_link(j->js->c.loop, &j->js->grace_to, &j->open_timer);
    } else if (j->retention_over) {
        job_free(j);
    }
}

const bw_job_start *bw_job_started(const bw_job *j) { return j->has_start ? &j->start : NULL; }

size_t bw_job_n_tokens(const bw_job *j) { return j->n_toks; }

void bw_job_token(const bw_job *j, size_t i, const char **text, size_t *len, uint64_t *ts_ns)
{
    *text = j->text.p + j->toks[i].off;
    *len = j->toks[i].len;
    *ts_ns = j->toks[i].ts_ns;
}

const bw_job_outcome *bw_job_outcome_of(const bw_job *j) { return j->state == JOB_FINISHED ? &j->out : NULL; }

uint32_t bw_job_n_prompt(const bw_job *j) { return j->n_prompt; }
int bw_job_no_ids(const bw_job *j) { return j->p.no_ids; }
void bw_job_set_all_sent(bw_job *j) { j->all_sent = 1; }
int bw_job_all_sent(const bw_job *j) { return j->all_sent; }
uint64_t bw_job_created_ns(const bw_job *j) { return j->created_ns; }
