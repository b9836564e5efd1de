/* Continuous batching; see scheduler.h.
 *
 * A job is QUEUED (on the wait list, ACCEPTED already published), then holds a slot: first its prompt is
 * fed in chunks (prefill), then one token per step (decode). Each step feeds every slot in one
 * bw_backend_forward call, then samples and publishes per job. Beside decoding jobs, prompt chunks are
 * kept to about prefill_step_ms of work, so a long prompt arriving does not stall the others' streams. Finished jobs move to a short retired
 * list so that a REPLAY that arrives after the end can still be served. */
#include "engine/scheduler.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "engine/chat.h"
#include "engine/cuda/backend_cuda.h"
#include "engine/prompt.h"
#include "engine/generate.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

#define QUEUE_MAX 1024        /* jobs waiting for a slot; more is QUEUE_FULL */
#define RETIRED_MAX 64        /* finished jobs whose history is kept for REPLAY */
#define PREFILL_MIN_TOKENS 32 /* the smallest prompt chunk beside decoding jobs (and the first, unmeasured one) */
#define PREFILL_STEP_MS 50.0  /* default target time of a step that prefills beside decoding jobs */
#define SPEC_LOOKUP_NGRAM 3   /* prompt lookup: the shortest n-gram of the output's tail to look up */
#define SPEC_PRED_NGRAM 1     /* the prediction is a strong hint: one token of context is enough */
#define SPEC_MAX_NGRAM 4      /* the longest n-gram tried first */
#define SPEC_PRIOR_PRED 0.85  /* acceptance per draft token assumed before a job has tried any (prediction) */
#define SPEC_PRIOR_LOOKUP 0.7 /* the same for prompt lookup */
#define SPEC_PRIOR_WEIGHT 2.0 /* how many tried draft tokens that assumption is worth */
#define SPEC_MEMORY 0.9       /* per verification: weight left to older evidence of a job's acceptance */
#define SPEC_PROBE_EVERY 32   /* steps between one-token probes while drafting does not pay */
#define STEP_COST_MEMORY 0.9  /* per decode step of a size: weight left to older times of that size */

enum { SRC_NONE = 0, SRC_PRED, SRC_LOOKUP };

typedef struct job {
    char id[BW_PROTO_JOB_ID_MAX + 1];
    bw_gen *gen;
    const int32_t *toks; /* the prompt, owned by gen */
    size_t n_prompt;
    size_t n_fed; /* positions in the slot's KV cache */
    size_t chunk; /* prompt tokens in the current step's batch */
    int prefilled;
    int32_t next_tok; /* sampled, to be fed in the next step */
    int slot;
    int cancelled;
    uint64_t seq;
    uint64_t seed;
    int32_t first_index;
    int32_t max_tokens;
    uint32_t n_published;
    /* speculation (see draft()) */
    int32_t *pred;                 /* the client's predicted output as tokens, or NULL */
    size_t n_pred, pred_pos;       /* pred_pos: where the output is believed to be in pred */
    double acc_hit[2], acc_try[2]; /* decayed draft tokens accepted / verified, by source (acceptance) */
    int probe_in;                  /* steps until a one-token probe while drafting does not pay */
    int n_draft, draft_src;
    int32_t *draft; /* spec_max tokens */
    size_t row0;    /* first logits row of this step */
    uint32_t pred_drafted, pred_accepted, lookup_drafted, lookup_accepted;
    uint64_t t_admit, t_first;
    struct {
        uint8_t **msg;
        uint32_t *len;
        size_t n, cap;
    } hist;
    struct job *next; /* wait queue or retired list */
} job;

struct bw_sched {
    bw_engine *e;
    uint64_t epoch;
    bw_sched_publish_fn publish;
    void *ctx;
    bw_sampler *sampler;
    int n_vocab, n_slots, n_ctx, max_batch;
    double prefill_step_ns; /* 0: whole --batch chunks even beside decoding jobs */
    double ns_per_token;    /* measured on steps of at least PREFILL_MIN_TOKENS tokens; 0 until then */
    int spec_max;           /* most draft tokens per job and step; 0 = no speculation */
    int spec_fixed;         /* send every draft whole instead of choose_draft's length (tests) */
    /* step time of decode-only steps as a + b * tokens, by least squares over decayed sums (what a
     * draft token costs against what a token saved is worth; see choose_draft) */
    double *cost_w, *cost_t; /* decode steps by size (tokens, 1 .. max_batch): decayed count and time (ns) */
    double *cost_est;        /* step_cost's estimate by size, rebuilt when a step is measured */
    struct {
        _Atomic uint64_t drafted, accepted;
    } stats[2]; /* [0] prediction, [1] prompt lookup */
    job **slots;
    job *q_head, *q_tail;
    job *r_head, *r_tail;
    unsigned n_retired;
    atomic_uint busy, queued;
    /* batch scratch */
    int32_t *b_tok, *b_pos, *b_slot;
    uint8_t *b_want;
    job **b_rows;
    float *logits;
    float *forced;           /* one logits row that leaves the sampler a single choice (resume replay) */
    int device_sampling;     /* CUDA backend: rows are sampled on the device, only ids come back */
    bw_cuda_sample_req *req; /* per logits row, for the device sampler */
    int32_t *ids;            /* per logits row: the device's choice */
    enum bw_chat_kind chat_kind;
    bw_gguf_str tmpl;
};

/* ---- jobs and their history ---- */

static void job_free(job *j)
{
    if (!j) return;
    bw_gen_free(j->gen);
    free(j->pred);
    free(j->draft);
    for (size_t i = 0; i < j->hist.n; i++) free(j->hist.msg[i]);
    free(j->hist.msg);
    free(j->hist.len);
    free(j);
}

static void keep(job *j, uint8_t *buf, uint32_t len)
{
    if (j->hist.n == j->hist.cap) {
        size_t cap = j->hist.cap ? j->hist.cap * 2 : 64;
        uint8_t **m = realloc(j->hist.msg, cap * sizeof(*m));
        if (m) j->hist.msg = m;
        uint32_t *l = realloc(j->hist.len, cap * sizeof(*l));
        if (l) j->hist.len = l;
        if (!m || !l) {
            /* history is best effort: a later REPLAY of this message is answered by its absence */
            free(buf);
            return;
        }
        j->hist.cap = cap;
    }
    j->hist.msg[j->hist.n] = buf;
    j->hist.len[j->hist.n++] = len;
}

/* Stamps, encodes, keeps and publishes one message of job j. */
static void emit(bw_sched *s, job *j, bw_proto_msg *m)
{
    m->h.version = BW_PROTO_VERSION;
    m->h.epoch = s->epoch;
    m->h.seq = j->seq++;
    memcpy(m->h.job_id, j->id, sizeof(j->id));
    m->h.mono_ns = bw_clock_mono_ns();
    m->h.real_ns = bw_clock_real_ns();
    size_t n = bw_proto_encoded_size(m);
    uint8_t *buf = n ? malloc(n) : NULL;
    if (!buf || bw_proto_encode(m, buf, n) != (long)n) {
        bw_log_error("%s: cannot encode a %s message", j->id, bw_proto_type_name(m->h.type));
        free(buf);
        return;
    }
    s->publish(s->ctx, buf, n);
    keep(j, buf, (uint32_t)n);
}

static void emit_error(bw_sched *s, job *j, uint16_t code, const char *message)
{
    bw_proto_msg m;
    bw_proto_init(&m, BW_MSG_ERROR, 0, NULL, 0);
    m.u.error.code = code;
    m.u.error.message = message;
    m.u.error.message_len = (uint32_t)strnlen(message, BW_PROTO_MAX_ERRMSG);
    emit(s, j, &m);
}

static void retire(bw_sched *s, job *j)
{
    bw_gen_free(j->gen);
    j->gen = NULL;
    free(j->pred);
    j->pred = NULL;
    j->next = NULL;
    if (s->r_tail) s->r_tail->next = j;
    else s->r_head = j;
    s->r_tail = j;
    if (++s->n_retired > RETIRED_MAX) {
        job *old = s->r_head;
        s->r_head = old->next;
        if (!s->r_head) s->r_tail = NULL;
        s->n_retired--;
        job_free(old);
    }
}

static void free_slot(bw_sched *s, job *j)
{
    if (j->slot >= 0) {
        s->slots[j->slot] = NULL;
        j->slot = -1;
        atomic_fetch_sub_explicit(&s->busy, 1, memory_order_relaxed);
    }
}

static void finish_done(bw_sched *s, job *j, enum bw_stop_reason why, const char *matched)
{
    uint64_t now = bw_clock_mono_ns();
    bw_proto_msg m;
    bw_proto_init(&m, BW_MSG_DONE, 0, NULL, 0);
    m.u.done.stop = (uint8_t)why;
    m.u.done.n_prompt = (uint32_t)j->n_prompt;
    m.u.done.n_generated = (uint32_t)j->first_index + j->n_published;
    m.u.done.prefill_ns = j->t_first ? j->t_first - j->t_admit : 0;
    m.u.done.decode_ns = j->t_first ? now - j->t_first : 0;
    if (matched) {
        m.u.done.stop_matched = matched;
        m.u.done.stop_matched_len = (uint32_t)strnlen(matched, BW_PROTO_MAX_STOP_LEN);
    }
    m.u.done.pred_drafted = j->pred_drafted;
    m.u.done.pred_accepted = j->pred_accepted;
    m.u.done.lookup_drafted = j->lookup_drafted;
    m.u.done.lookup_accepted = j->lookup_accepted;
    emit(s, j, &m);
    free_slot(s, j);
    retire(s, j);
}

static void finish_error(bw_sched *s, job *j, uint16_t code, const char *message)
{
    emit_error(s, j, code, message);
    free_slot(s, j);
    retire(s, j);
}

/* ---- lookup ---- */

static job *find_active(bw_sched *s, const char *id, job **prev_in_queue)
{
    for (int i = 0; i < s->n_slots; i++)
        if (s->slots[i] && strcmp(s->slots[i]->id, id) == 0) return s->slots[i];
    job *prev = NULL;
    for (job *j = s->q_head; j; prev = j, j = j->next)
        if (strcmp(j->id, id) == 0) {
            if (prev_in_queue) *prev_in_queue = prev;
            return j;
        }
    return NULL;
}

static job *find_retired(bw_sched *s, const char *id)
{
    for (job *j = s->r_head; j; j = j->next)
        if (strcmp(j->id, id) == 0) return j;
    return NULL;
}

static void unqueue(bw_sched *s, job *j, job *prev)
{
    if (prev) prev->next = j->next;
    else s->q_head = j->next;
    if (s->q_tail == j) s->q_tail = prev;
    j->next = NULL;
    atomic_fetch_sub_explicit(&s->queued, 1, memory_order_relaxed);
}

/* ---- create ---- */

bw_sched *bw_sched_create(bw_engine *e, uint64_t epoch, bw_sched_publish_fn publish, void *ctx, char *err,
                          size_t errlen)
{
    bw_sched *s = calloc(1, sizeof(*s));
    if (!s) goto oom;
    s->e = e;
    s->epoch = epoch;
    s->publish = publish;
    s->ctx = ctx;
    s->n_vocab = e->model.cfg.n_vocab;
    s->n_slots = e->n_slots;
    s->n_ctx = e->n_ctx;
    s->max_batch = e->backend->params.max_batch > 0 ? e->backend->params.max_batch : 512;
    if (s->max_batch < s->n_slots) s->max_batch = s->n_slots; /* every running job gets its decode token */
    s->prefill_step_ns = PREFILL_STEP_MS * 1e6;
    s->spec_max = 0;
    size_t bcap = (size_t)s->max_batch;
    s->sampler = bw_sampler_create(s->n_vocab);
    s->slots = calloc((size_t)s->n_slots, sizeof(*s->slots));
    s->b_tok = malloc(bcap * sizeof(int32_t));
    s->b_pos = malloc(bcap * sizeof(int32_t));
    s->b_slot = malloc(bcap * sizeof(int32_t));
    s->b_want = malloc(bcap);
    s->b_rows = malloc((size_t)s->n_slots * sizeof(job *));
    s->cost_w = calloc(bcap + 1, sizeof(double));
    s->cost_t = calloc(bcap + 1, sizeof(double));
    s->cost_est = calloc(bcap + 1, sizeof(double));
    s->logits = malloc((size_t)s->n_slots * (size_t)s->n_vocab * sizeof(float));
    s->forced = malloc((size_t)s->n_vocab * sizeof(float));
    /* BW_CUDA_SAMPLING=device samples on the GPU and copies only ids back. Until a GPU run has shown it
     * choosing what the host sampler chooses (tests/gpu/serve_sampling.py), the default stays on the host:
     * logits copied, bw_sample here. */
    const char *cs = getenv("BW_CUDA_SAMPLING");
    s->device_sampling = bw_backend_is_cuda(e->backend) && cs && strcmp(cs, "device") == 0;
    s->req = malloc((size_t)s->n_slots * sizeof(*s->req));
    s->ids = malloc((size_t)s->n_slots * sizeof(*s->ids));
    if (!s->sampler || !s->slots || !s->b_tok || !s->b_pos || !s->b_slot || !s->b_want || !s->b_rows || !s->cost_w ||
        !s->cost_t || !s->cost_est || !s->logits || !s->forced || !s->req || !s->ids)
        goto oom;
    if (bw_gguf_get_str(e->gguf, "tokenizer.chat_template", &s->tmpl) != 0) s->tmpl = (bw_gguf_str){0, NULL};
    s->chat_kind = bw_prompt_chat_kind(e->tok, s->tmpl.str, s->tmpl.len);
    return s;
oom:
    snprintf(err, errlen, "out of memory creating the scheduler (%d slots, vocabulary %d)", e->n_slots,
             e->model.cfg.n_vocab);
    bw_sched_free(s);
    return NULL;
}

void bw_sched_set_prefill_step_ms(bw_sched *s, double ms) { s->prefill_step_ns = ms > 0 ? ms * 1e6 : 0; }

void bw_sched_set_spec_fixed(bw_sched *s, int on) { s->spec_fixed = on != 0; }

int bw_sched_set_spec_max(bw_sched *s, int k)
{
    if (k < 0 || k > BW_SCHED_SPEC_MAX) return -1;
    /* every slot may want logits for its token and k drafts in one step */
    float *l = malloc((size_t)s->n_slots * (size_t)(k + 1) * (size_t)s->n_vocab * sizeof(float));
    if (!l) return -1;
    for (int i = 0; i < s->n_slots; i++)
        if (s->slots[i]) s->slots[i]->n_draft = 0;
    free(s->logits);
    s->logits = l;
    s->spec_max = k;
    return 0;
}

/* Prompt tokens this step may feed: all the room left, unless jobs are decoding beside them. */
static int prefill_budget(const bw_sched *s, int n_decoding, int room)
{
    if (n_decoding == 0 || s->prefill_step_ns <= 0) return room;
    double fit = s->ns_per_token > 0 ? s->prefill_step_ns / s->ns_per_token : PREFILL_MIN_TOKENS;
    if (fit < PREFILL_MIN_TOKENS) fit = PREFILL_MIN_TOKENS;
    return fit < room ? (int)fit : room;
}

void bw_sched_free(bw_sched *s)
{
    if (!s) return;
    for (int i = 0; s->slots && i < s->n_slots; i++) job_free(s->slots[i]);
    for (job *j = s->q_head, *n; j; j = n) n = j->next, job_free(j);
    for (job *j = s->r_head, *n; j; j = n) n = j->next, job_free(j);
    bw_sampler_free(s->sampler);
    free(s->slots);
    free(s->b_tok);
    free(s->b_pos);
    free(s->b_slot);
    free(s->b_want);
    free(s->b_rows);
    free(s->cost_w);
    free(s->cost_t);
    free(s->cost_est);
    free(s->logits);
    free(s->forced);
    free(s->req);
    free(s->ids);
    free(s);
}

/* ---- submit ---- */

/* The messages of a BW_SUBMIT_MESSAGES submit (already checked by the decoder) as C strings the chat
 * renderer takes. `scratch` is a copy of the packed text; each content is moved to the front of its record's
 * bytes and NUL-terminated there (a record's 5-byte head leaves room for the NUL), so nothing else is copied. */
static bw_chat_msg *unpack_conversation(const bw_proto_submit *x, char *scratch, size_t *n_out)
{
    size_t n = 0, cap = 8;
    bw_chat_msg *msgs = malloc(cap * sizeof(*msgs));
    uint32_t off = 0, len;
    uint8_t role;
    const char *content;
    while (msgs && bw_proto_chat_next(x->text, x->text_len, &off, &role, &content, &len) == 1) {
        if (n == cap) {
            bw_chat_msg *m = realloc(msgs, 2 * cap * sizeof(*msgs));
            if (!m) break;
            msgs = m;
            cap *= 2;
        }
        char *dst = scratch + (content - x->text) - 5;
        memmove(dst, scratch + (content - x->text), len);
        dst[len] = '\0';
        msgs[n++] = (bw_chat_msg){bw_proto_role_name(role), dst};
    }
    if (msgs && off != x->text_len) { /* out of memory part way */
        free(msgs);
        return NULL;
    }
    *n_out = n;
    return msgs;
}

/* The prompt of a SUBMIT as token ids (malloc'd, without the resume tokens), or NULL with the reason in
 * err. */
static int32_t *prompt_tokens(bw_sched *s, const bw_proto_submit *x, size_t *n_out, char *err, size_t errlen)
{
    const bw_tok *tok = s->e->tok;
    int32_t *ids = NULL;
    size_t n = 0;
    if (x->flags & BW_SUBMIT_TEXT) {
        bw_prompt_ctx pc = {tok, s->chat_kind, s->tmpl.str, s->tmpl.len};
        bw_chat_msg one = {"user", NULL}, *msgs = &one;
        size_t n_msgs = 1;
        char *text = malloc((size_t)x->text_len + 1);
        if (!text) goto oom;
        memcpy(text, x->text, x->text_len);
        text[x->text_len] = '\0';
        one.content = text;
        if (x->flags & BW_SUBMIT_MESSAGES) {
            msgs = unpack_conversation(x, text, &n_msgs);
            if (!msgs) {
                free(text);
                goto oom;
            }
        }
        bw_prompt_req req = {
            .text = text,
            .text_len = x->text_len,
            .msgs = (x->flags & BW_SUBMIT_CHAT) ? msgs : NULL,
            .n_msgs = n_msgs,
            .add_bos = (x->flags & BW_SUBMIT_NO_BOS) ? 0 : -1,
            .parse_special = 0,
        };
        ids = bw_prompt_encode(&pc, &req, 0, &n, err, errlen);
        if (msgs != &one) free(msgs);
        free(text);
        if (!ids) return NULL;
    } else {
        ids = malloc((size_t)x->n_tokens * sizeof(int32_t));
        if (!ids) goto oom;
        for (uint32_t i = 0; i < x->n_tokens; i++) ids[n++] = bw_proto_token_at(x->tokens_le, i);
    }
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= s->n_vocab) {
            snprintf(err, errlen, "token id %d is outside the vocabulary of %d", ids[i], s->n_vocab);
            free(ids);
            return NULL;
        }
    if (n == 0) {
        snprintf(err, errlen, "the prompt encodes to no tokens");
        free(ids);
        return NULL;
    }
    *n_out = n;
    return ids;
oom:
    snprintf(err, errlen, "out of memory tokenizing the prompt");
    return NULL;
}

/* Brings a resumed job's generator to where the interrupted run stopped: each token that run produced is
 * drawn again from a logits row that allows only that token. This rebuilds what the generator derives from
 * its output (text held back for stop strings, an unfinished UTF-8 sequence, the index of the random
 * stream) without the backend; the KV cache is then filled by prefilling prompt + output. Returns 0 with
 * the last token in *last (last->stop says whether that run had ended and only its DONE was lost;
 * BW_STOP_NONE when nothing was replayed), or -1 when the tokens are not an output this job can have
 * produced. */
static int replay_output(bw_sched *s, job *j, const bw_proto_submit *x, bw_gen_token *last)
{
    *last = (bw_gen_token){.stop = BW_STOP_NONE};
    for (uint32_t i = 0; i < x->n_resume; i++) {
        int32_t id = bw_proto_token_at(x->resume_le, i);
        if (id >= s->n_vocab) return -1;
        /* finite, so a repetition penalty of 0 cannot turn the row into NaNs */
        for (int v = 0; v < s->n_vocab; v++) s->forced[v] = -1e30f;
        s->forced[id] = 1.0f;
        if (bw_gen_next(j->gen, s->sampler, s->forced, last) != 0 || last->id != id) return -1;
        if (last->stop != BW_STOP_NONE && i + 1 < x->n_resume) return -1;
    }
    return 0;
}

/* The draft buffer and the prediction as tokens (encoded as plain text, no BOS). A prediction the
 * tokenizer refuses only leaves the job without one: it can change no token, only the speed. */
static int spec_init(bw_sched *s, job *j, const bw_proto_submit *x)
{
    j->draft = malloc(BW_SCHED_SPEC_MAX * sizeof(int32_t));
    if (!j->draft) return -1;
    if (!(x->flags & BW_SUBMIT_PREDICTION) || x->prediction_len == 0) return 0;
    char *text = malloc((size_t)x->prediction_len + 1);
    if (!text) return -1;
    memcpy(text, x->prediction, x->prediction_len);
    text[x->prediction_len] = '\0';
    bw_prompt_ctx pc = {s->e->tok, s->chat_kind, s->tmpl.str, s->tmpl.len};
    bw_prompt_req req = {.text = text, .text_len = strlen(text), .add_bos = 0, .parse_special = 0};
    char err[256];
    j->pred = req.text_len ? bw_prompt_encode(&pc, &req, 0, &j->n_pred, err, sizeof(err)) : NULL;
    free(text);
    if (!j->pred) j->n_pred = 0;
    return 0;
}

void bw_sched_refuse(bw_sched *s, const char *job_id, uint16_t code, const char *message)
{
    bw_proto_msg m;
    bw_proto_init(&m, BW_MSG_ERROR, s->epoch, job_id, 0);
    m.u.error.code = code;
    m.u.error.message = message;
    m.u.error.message_len = (uint32_t)strnlen(message, BW_PROTO_MAX_ERRMSG);
    m.h.mono_ns = bw_clock_mono_ns();
    m.h.real_ns = bw_clock_real_ns();
    uint8_t buf[BW_PROTO_HEADER_SIZE + 8 + BW_PROTO_MAX_ERRMSG];
    long n = bw_proto_encode(&m, buf, sizeof(buf));
    if (n > 0) s->publish(s->ctx, buf, (size_t)n);
}

void bw_sched_submit(bw_sched *s, const bw_proto_msg *m)
{
    const bw_proto_submit *x = &m->u.submit;
    if (find_active(s, m->h.job_id, NULL)) {
        bw_log_warn("%s: duplicate SUBMIT ignored", m->h.job_id);
        return;
    }
    job *j = calloc(1, sizeof(*j));
    if (!j) {
        bw_log_error("%s: out of memory", m->h.job_id);
        return;
    }
    memcpy(j->id, m->h.job_id, sizeof(j->id));
    j->slot = -1;
    j->seed = x->seed;
    j->first_index = x->resume_index;
    /* a job with the id of a retired one replaces it: its history must not answer REPLAYs any more */
    job *old = find_retired(s, j->id);
    if (old) old->id[0] = '\0';

    char err[256];
    if (atomic_load_explicit(&s->queued, memory_order_relaxed) >= QUEUE_MAX) {
        finish_error(s, j, BW_PERR_QUEUE_FULL, "the engine's wait queue is full");
        return;
    }
    size_t n = 0;
    int32_t *ids = prompt_tokens(s, x, &n, err, sizeof(err));
    if (!ids) {
        finish_error(s, j, BW_PERR_TOKENIZE, err);
        return;
    }
    if (n + x->n_resume >= (size_t)s->n_ctx) {
        snprintf(err, sizeof(err), "the prompt is %zu tokens (%u of them resumed output); the context holds %d",
                 n + x->n_resume, x->n_resume, s->n_ctx);
        free(ids);
        finish_error(s, j, BW_PERR_BAD_REQUEST, err);
        return;
    }
    bw_gen_params gp;
    bw_gen_params_defaults(&gp);
    gp.sampling.temperature = x->temperature;
    gp.sampling.top_p = x->top_p;
    gp.sampling.top_k = x->top_k;
    gp.sampling.min_p = x->min_p;
    gp.sampling.repetition_penalty = x->repetition_penalty;
    if (x->repeat_last_n > 0) gp.sampling.repeat_last_n = x->repeat_last_n;
    gp.sampling.seed = x->seed;
    /* every generated token but the last is fed back, so the context bounds the count */
    int64_t room = (int64_t)s->n_ctx - (int64_t)n;
    gp.max_tokens = x->max_tokens < room ? x->max_tokens : (int32_t)room;
    gp.n_stop = (int)x->n_stop;
    for (uint32_t i = 0; i < x->n_stop; i++) {
        memcpy(gp.stop[i], x->stop[i].s, x->stop[i].len);
        gp.stop[i][x->stop[i].len] = '\0';
    }
    j->max_tokens = gp.max_tokens;
    j->gen = bw_gen_create(s->e->tok, &gp, ids, n, 0);
    free(ids);
    if (!j->gen || spec_init(s, j, x) != 0) {
        finish_error(s, j, BW_PERR_GENERATION, "out of memory creating the job");
        return;
    }
    bw_gen_token last;
    if (replay_output(s, j, x, &last) != 0) {
        finish_error(s, j, BW_PERR_BAD_REQUEST, "the resume tokens are not an output this job can have produced");
        return;
    }
    j->toks = bw_gen_tokens(j->gen, &j->n_prompt);

    bw_proto_msg a;
    bw_proto_init(&a, BW_MSG_ACCEPTED, 0, NULL, 0);
    a.u.accepted.seed = x->seed;
    a.u.accepted.n_prompt = (uint32_t)j->n_prompt;
    a.u.accepted.first_index = x->resume_index;
    emit(s, j, &a);
    if (last.stop != BW_STOP_NONE) {
        /* the interrupted run had produced its last token; only its DONE was lost */
        finish_done(s, j, last.stop, last.stop == BW_STOP_SEQUENCE ? last.stop_matched : NULL);
        return;
    }
    if (s->q_tail) s->q_tail->next = j;
    else s->q_head = j;
    s->q_tail = j;
    atomic_fetch_add_explicit(&s->queued, 1, memory_order_relaxed);
}

void bw_sched_cancel(bw_sched *s, const char *job_id)
{
    job *prev = NULL;
    job *j = find_active(s, job_id, &prev);
    if (!j) return; /* finished already, or never seen: nothing to stop */
    if (j->slot < 0) {
        unqueue(s, j, prev);
        finish_done(s, j, BW_STOP_CANCELLED, NULL);
    } else {
        j->cancelled = 1; /* ended at the start of the next step, before any more compute */
    }
}

void bw_sched_replay(bw_sched *s, const char *job_id, uint64_t from_seq)
{
    job *j = find_active(s, job_id, NULL);
    if (!j) j = find_retired(s, job_id);
    if (!j) {
        bw_log_warn("%s: REPLAY for a job whose history is gone", job_id);
        bw_sched_refuse(s, job_id, BW_PERR_REPLAY_GONE, "this engine no longer keeps the job's messages");
        return;
    }
    for (size_t i = (size_t)(from_seq < j->hist.n ? from_seq : j->hist.n); i < j->hist.n; i++)
        s->publish(s->ctx, j->hist.msg[i], j->hist.len[i]);
}

/* ---- step ---- */

static void admit(bw_sched *s)
{
    for (int i = 0; i < s->n_slots && s->q_head; i++) {
        if (s->slots[i]) continue;
        job *j = s->q_head;
        unqueue(s, j, NULL);
        j->slot = i;
        j->n_fed = 0;
        j->t_admit = bw_clock_mono_ns();
        s->slots[i] = j;
        atomic_fetch_add_explicit(&s->busy, 1, memory_order_relaxed);
    }
}

/* ---- speculation ----
 *
 * A decoding job may carry draft tokens after its next token: guesses of what it will sample next. They
 * are fed in the same step at the following positions, each with its logits. Then the job samples its
 * rows in order exactly as plain decoding would (its random stream depends only on seed and index, and
 * a token's logits do not depend on the batch around it): as long as the sampled token equals the draft
 * fed after it, the next row holds the logits plain decoding would have computed, so sampling goes on.
 * The first sampled token that differs is the job's next token, and the cache positions of the drafts
 * after it are simply overwritten by later steps (a token attends only to positions up to its own). */

/* Where the last n tokens of h[0..nh) occur in src, ending at e (src[e - n .. e) == tail) with a token
 * src[e] after them, e < e_max. Prefers the first e >= prefer; otherwise the last one. 0 when none. */
static size_t ngram_find(const int32_t *src, size_t e_max, const int32_t *h, size_t nh, size_t n, size_t prefer)
{
    size_t best = 0;
    for (size_t e = n; e < e_max; e++) {
        if (memcmp(src + e - n, h + nh - n, n * sizeof(*h)) != 0) continue;
        if (e >= prefer) return e;
        best = e;
    }
    return best;
}

/* Continues h from src, trying the longest n-gram first; returns the tokens written (at most k). */
static int draft_from(const int32_t *src, size_t n_src, size_t e_max, const int32_t *h, size_t nh, size_t min_n,
                      size_t prefer, int32_t *out, int k, size_t *end)
{
    for (size_t n = SPEC_MAX_NGRAM; n >= min_n && n > 0; n--) {
        if (nh < n) continue;
        size_t e = ngram_find(src, e_max, h, nh, n, prefer);
        if (e == 0) continue;
        int d = 0;
        while (d < k && e + (size_t)d < n_src) out[d] = src[e + (size_t)d], d++;
        *end = e;
        return d;
    }
    return 0;
}

/* Time of a decode-only step of n tokens (ns), from the steps of that size measured so far. A step's cost
 * does not fall as it grows, so a size is never estimated above a larger one's measured cost (one step
 * slowed by the machine must not rule its size out for good). A size not yet measured gets the cost of
 * the largest measured one below it, plus 1% per token: optimistic, so that it is tried once and then
 * known. The CPU's cost is a staircase (a tile of 16 tokens costs about the same for 5 of them as for
 * 16), which no straight line fits. 0 when no step has been measured. */
static double step_cost(const bw_sched *s, int n)
{
    if (n < 1) n = 1;
    if (n > s->max_batch) n = s->max_batch;
    return s->cost_est[n];
}

/* Rebuilds cost_est from the measured sizes: upwards, each size its own average or, unmeasured, the last
 * measured one below plus 1% per token; downwards, never above a larger size's estimate. */
static void note_step(bw_sched *s, int n, double ns)
{
    if (n < 1 || n > s->max_batch) return;
    s->cost_w[n] = s->cost_w[n] * STEP_COST_MEMORY + 1;
    s->cost_t[n] = s->cost_t[n] * STEP_COST_MEMORY + ns;
    double below = 0;
    int n_below = 0;
    for (int k = 1; k <= s->max_batch; k++) {
        if (s->cost_w[k] > 0) below = s->cost_t[k] / s->cost_w[k], n_below = k;
        s->cost_est[k] = n_below == k ? below : below * (1.0 + 0.01 * (k - n_below));
    }
    for (int k = s->max_batch - 1; k >= 1; k--)
        if (s->cost_est[k + 1] > 0 && s->cost_est[k + 1] < s->cost_est[k]) s->cost_est[k] = s->cost_est[k + 1];
}

/* How many of the L drafted tokens job j should send, given that the step already holds `tokens` decode
 * tokens for `m` jobs: the d that maximizes the step's tokens per second,
 *     (m + p + p^2 + ... + p^d) / cost(tokens + d),
 * with p the job's acceptance per draft token (a run is accepted up to its first miss) and cost the
 * measured cost of a step of that size (step_cost). When no d > 0 pays, the job decodes plainly and sends a one-token probe now and
 * then, so that its acceptance is measured again (text that became predictable is noticed). */
static int choose_draft(bw_sched *s, job *j, int L, int m, int tokens)
{
    const int src = j->draft_src == SRC_PRED ? 0 : 1;
    const double prior = src == 0 ? SPEC_PRIOR_PRED : SPEC_PRIOR_LOOKUP;
    const double p = (j->acc_hit[src] + prior * SPEC_PRIOR_WEIGHT) / (j->acc_try[src] + SPEC_PRIOR_WEIGHT);
    const double c0 = step_cost(s, tokens);
    if (c0 <= 0) return L; /* nothing measured yet */
    double best = m / c0, gain = 0, pk = 1;
    int d_best = 0;
    for (int d = 1; d <= L; d++) {
        pk *= p;
        gain += pk;
        const double r = (m + gain) / step_cost(s, tokens + d);
        if (r > best) best = r, d_best = d;
    }
    if (d_best > 0) {
        j->probe_in = SPEC_PROBE_EVERY;
        return d_best;
    }
    if (--j->probe_in > 0) return 0;
    j->probe_in = SPEC_PROBE_EVERY;
    return 1;
}

/* Fills j->draft (at most k tokens) from the job's prediction, else (no match there, or a draft from it
 * would not pay) from its own prompt and output. m and tokens: see choose_draft. */
static void draft(bw_sched *s, job *j, int k, int m, int tokens)
{
    j->n_draft = 0;
    j->draft_src = SRC_NONE;
    if (k <= 0) return;
    size_t nh, end;
    const int32_t *h = bw_gen_tokens(j->gen, &nh);
    if (j->pred) {
        int d = draft_from(j->pred, j->n_pred, j->n_pred, h, nh, SPEC_PRED_NGRAM, j->pred_pos, j->draft, k, &end);
        j->draft_src = SRC_PRED;
        if (d > 0 && !s->spec_fixed) d = choose_draft(s, j, d, m, tokens);
        if (d > 0) {
            j->n_draft = d;
            j->pred_pos = end;
            return;
        }
    }
    /* the tail itself ends at nh: only earlier occurrences count */
    int d = draft_from(h, nh, nh, h, nh, SPEC_LOOKUP_NGRAM, nh, j->draft, k, &end);
    j->draft_src = SRC_LOOKUP;
    if (d > 0 && !s->spec_fixed) d = choose_draft(s, j, d, m, tokens);
    j->n_draft = d;
    if (d == 0) j->draft_src = SRC_NONE;
}

/* Learns from a verification: the tokens of a run up to and including its first miss were tried. */
static void adapt(bw_sched *s, job *j, int accepted)
{
    (void)s;
    const int src = j->draft_src == SRC_PRED ? 0 : 1;
    const int tried = accepted + (accepted < j->n_draft);
    j->acc_hit[src] = j->acc_hit[src] * SPEC_MEMORY + accepted;
    j->acc_try[src] = j->acc_try[src] * SPEC_MEMORY + tried;
    if (j->draft_src == SRC_PRED) j->pred_pos += (size_t)accepted;
}

/* Counts drafted and accepted tokens for the job and the engine, by the draft's source. */
static void count_draft(bw_sched *s, job *j, int drafted, int accepted)
{
    if (drafted == 0 && accepted == 0) return;
    const int i = j->draft_src == SRC_PRED ? 0 : 1;
    if (i == 0) {
        j->pred_drafted += (uint32_t)drafted;
        j->pred_accepted += (uint32_t)accepted;
    } else {
        j->lookup_drafted += (uint32_t)drafted;
        j->lookup_accepted += (uint32_t)accepted;
    }
    atomic_fetch_add_explicit(&s->stats[i].drafted, (uint64_t)drafted, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->stats[i].accepted, (uint64_t)accepted, memory_order_relaxed);
}

/* How many drafts job j may add: within spec_max, the context (every draft takes a position), its
 * max_tokens (a draft is worth something only if a token may still follow it), and room tokens of the
 * batch. */
static int draft_room(const bw_sched *s, const job *j, int room)
{
    int k = s->spec_max;
    const int64_t ctx_left = (int64_t)s->n_ctx - 1 - (int64_t)j->n_fed;
    const int64_t tok_left = (int64_t)j->max_tokens - bw_gen_n_generated(j->gen) - 1;
    if (ctx_left < k) k = (int)(ctx_left > 0 ? ctx_left : 0);
    if (tok_left < k) k = (int)(tok_left > 0 ? tok_left : 0);
    if (room < k) k = room > 0 ? room : 0;
    return k;
}

static int add_tok(bw_sched *s, int n, job *j, int32_t tok, size_t pos, int want)
{
    s->b_tok[n] = tok;
    s->b_pos[n] = (int32_t)pos;
    s->b_slot[n] = j->slot;
    s->b_want[n] = (uint8_t)want;
    return n + 1;
}

/* Takes job j's next token, publishes it, and ends the job if it is over. The token is id when the
 * device sampled it; otherwise it is drawn here from the logits row (for BW_CUDA_SAMPLE_HOST_PENALISED
 * the device already applied the repetition penalty to that row). Returns the token, or -1 when sampling
 * failed. */
static int32_t publish_next(bw_sched *s, job *j, int32_t id, float *row)
{
    bw_gen_token t;
    int rc;
    if (id >= 0) {
        rc = bw_gen_accept(j->gen, id, &t);
    } else if (id == BW_CUDA_SAMPLE_HOST_PENALISED) {
        const bw_sampler_params *p = bw_gen_sampling(j->gen);
        rc = bw_gen_accept(j->gen, bw_sample(s->sampler, p, row, NULL, 0, bw_gen_draw_index(j->gen)), &t);
    } else {
        rc = bw_gen_next(j->gen, s->sampler, row, &t);
    }
    if (rc != 0) {
        finish_error(s, j, BW_PERR_GENERATION, "sampling failed (out of memory)");
        return -1;
    }
    if (!j->t_first) j->t_first = bw_clock_mono_ns();
    /* an end-of-generation token or a matched stop string carries no text of its own */
    int silent = (t.stop == BW_STOP_EOS || t.stop == BW_STOP_SEQUENCE) && t.text_len == 0;
    if (!silent) {
        bw_proto_msg m;
        bw_proto_init(&m, BW_MSG_TOKEN, 0, NULL, 0);
        m.u.token.index = j->first_index + (int32_t)j->n_published;
        m.u.token.token_id = t.id;
        m.u.token.text = t.text;
        m.u.token.text_len = (uint32_t)(t.text_len < BW_PROTO_MAX_TEXT ? t.text_len : BW_PROTO_MAX_TEXT);
        emit(s, j, &m);
        j->n_published++;
    }
    if (t.stop != BW_STOP_NONE) finish_done(s, j, t.stop, t.stop == BW_STOP_SEQUENCE ? t.stop_matched : NULL);
    else if (j->n_fed >= (size_t)s->n_ctx) finish_done(s, j, BW_STOP_MAX_TOKENS, NULL);
    else j->next_tok = t.id;
    return t.id;
}

int bw_sched_step(bw_sched *s)
{
    for (int i = 0; i < s->n_slots; i++)
        if (s->slots[i] && s->slots[i]->cancelled) finish_done(s, s->slots[i], BW_STOP_CANCELLED, NULL);
    admit(s);

    int n = 0, rows = 0, n_logits = 0, decoding = 0;
    for (int i = 0; i < s->n_slots; i++)
        if (s->slots[i] && s->slots[i]->prefilled) decoding++;
    for (int i = 0; i < s->n_slots; i++) {
        job *j = s->slots[i];
        if (j && j->prefilled) {
            /* the jobs after this one keep one batch token each */
            /* device sampling returns one id per job: no drafts to verify there */
            const int spec = s->spec_max && !s->device_sampling;
            draft(s, j, spec ? draft_room(s, j, s->max_batch - n - (decoding - rows)) : 0, decoding,
                  n + (decoding - rows));
            j->row0 = (size_t)n_logits;
            n = add_tok(s, n, j, j->next_tok, j->n_fed, 1);
            for (int d = 0; d < j->n_draft; d++) n = add_tok(s, n, j, j->draft[d], j->n_fed + 1 + (size_t)d, 1);
            n_logits += 1 + j->n_draft;
            s->b_rows[rows++] = j;
        }
    }
    const int n_decoding = n, limit = n + prefill_budget(s, n_decoding, s->max_batch - n);
    for (int i = 0; i < s->n_slots && n < limit; i++) {
        job *j = s->slots[i];
        if (!j || j->prefilled) continue;
        size_t left = j->n_prompt - j->n_fed, room = (size_t)(limit - n);
        j->chunk = left < room ? left : room;
        for (size_t k = 0; k < j->chunk; k++) {
            size_t pos = j->n_fed + k;
            n = add_tok(s, n, j, j->toks[pos], pos, pos == j->n_prompt - 1);
        }
        if (j->n_fed + j->chunk == j->n_prompt) {
            j->row0 = (size_t)n_logits++;
            j->n_draft = 0;
            s->b_rows[rows++] = j;
        }
    }
    if (n == 0) return (int)(bw_sched_busy(s) + bw_sched_queued(s));

    bw_batch b = {.n_tokens = n, .token = s->b_tok, .pos = s->b_pos, .slot = s->b_slot, .want_logits = s->b_want};
    for (int r = 0; s->device_sampling && r < rows; r++) {
        bw_cuda_sample_req *q = &s->req[r];
        q->p = *bw_gen_sampling(s->b_rows[r]->gen);
        q->history = bw_gen_history(s->b_rows[r]->gen, &q->n_history);
        q->index = bw_gen_draw_index(s->b_rows[r]->gen);
    }
    const uint64_t t0 = bw_clock_mono_ns();
    int rc = s->device_sampling ? bw_backend_cuda_forward_sample(s->e->backend, &b, s->req, s->ids, s->logits)
                                : bw_backend_forward(s->e->backend, &b, s->logits);
    const double took = (double)(bw_clock_mono_ns() - t0);
    if (rc == 0 && n >= PREFILL_MIN_TOKENS) { /* cost per token of a batch this size; smoothed */
        const double per = took / n;
        s->ns_per_token = s->ns_per_token > 0 ? 0.75 * s->ns_per_token + 0.25 * per : per;
    }
    if (rc == 0 && n == n_logits && s->spec_max > 0) note_step(s, n, took); /* decode tokens only */
    if (rc != 0) {
        bw_log_error("backend forward failed on a batch of %d tokens", n);
        for (int i = 0; i < s->n_slots; i++)
            if (s->slots[i]) finish_error(s, s->slots[i], BW_PERR_GENERATION, "the backend failed");
        return -1;
    }
    for (int i = 0; i < s->n_slots; i++) {
        job *j = s->slots[i];
        if (!j) continue;
        if (j->prefilled) {
            j->n_fed++; /* the drafts count once they are accepted */
        } else {
            j->n_fed += j->chunk;
            j->chunk = 0;
        }
    }
    /* logits rows are in batch order: decode jobs (each its token's row, then its drafts' rows) first,
     * then jobs whose prefill completed in this step */
    for (int r = 0; r < rows; r++) {
        job *j = s->b_rows[r];
        j->prefilled = 1;
        const int n_draft = j->n_draft; /* 0 with device sampling: one row per job, row r */
        int accepted = 0;
        count_draft(s, j, n_draft, 0);
        for (int d = 0;; d++) {
            int32_t t = publish_next(s, j, s->device_sampling ? s->ids[r] : BW_CUDA_SAMPLE_HOST_RAW,
                                     s->logits + (j->row0 + (size_t)d) * (size_t)s->n_vocab);
            if (j->slot < 0 || d == n_draft || t != j->draft[d]) break;
            accepted++;
            count_draft(s, j, 0, 1); /* before the next token, whose DONE may carry the counts */
            j->n_fed++;              /* the draft at this position is what plain decoding would have fed */
        }
        if (n_draft > 0 && j->slot >= 0) adapt(s, j, accepted);
    }
    return (int)(bw_sched_busy(s) + bw_sched_queued(s));
}

void bw_sched_abort_all(bw_sched *s, uint16_t code, const char *message)
{
    for (int i = 0; i < s->n_slots; i++)
        if (s->slots[i]) finish_error(s, s->slots[i], code, message);
    while (s->q_head) {
        job *j = s->q_head;
        unqueue(s, j, NULL);
        finish_error(s, j, code, message);
    }
}

void bw_sched_spec_stats(bw_sched *s, bw_sched_spec *out)
{
    out->pred_drafted = atomic_load_explicit(&s->stats[0].drafted, memory_order_relaxed);
    out->pred_accepted = atomic_load_explicit(&s->stats[0].accepted, memory_order_relaxed);
    out->lookup_drafted = atomic_load_explicit(&s->stats[1].drafted, memory_order_relaxed);
    out->lookup_accepted = atomic_load_explicit(&s->stats[1].accepted, memory_order_relaxed);
}

unsigned bw_sched_busy(const bw_sched *s) { return atomic_load_explicit(&s->busy, memory_order_relaxed); }
unsigned bw_sched_queued(const bw_sched *s) { return atomic_load_explicit(&s->queued, memory_order_relaxed); }
unsigned bw_sched_active(const bw_sched *s) { return bw_sched_busy(s) + bw_sched_queued(s); }
