/* The scheduler (engine/scheduler.c) against a fake backend: no model file, no sockets, no processes.
 *
 * The fake model is a rule, so greedy output is known in advance: the logits of the token at position p
 * peak at next(tok[p], tok[p-1]) (the next letter of the alphabet, or the one after it when tok[p-1] is
 * 'e'), falling off with the distance from it, so sampled output varies with the seed. Because the rule
 * reads the token before, a stale token left in the cache changes what follows. The fake keeps every
 * slot's cache (the token written at each position) and checks engine/backend.h's batch rules on every
 * call: tokens of a slot contiguous and increasing, no position skipped. The messages the scheduler publishes are decoded
 * and kept per job. The vocabulary is a byte-level tokenizer written as GGUF metadata in memory:
 * 'a'..'z', two spaces, and an end-of-generation token. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"
#include "engine/gguf.h"
#include "engine/loader.h"
#include "engine/scheduler.h"
#include "engine/tokenizer.h"
#include "proto/bw_proto.h"

#include "check.h"
#include "gguf_write.h"

#define N_LETTERS 26
#define TOK_EOS 28
#define N_VOCAB 29
#define MAX_SLOTS 4
#define N_CTX 256
#define MAX_CALLS 4096
#define MAX_OUT 256
#define MAX_PROMPT N_CTX

/* ---- the fake model ---- */

typedef struct {
    bw_backend base; /* first: the scheduler holds a bw_backend * */
    int32_t kv[MAX_SLOTS][N_CTX];
    int len[MAX_SLOTS]; /* positions the last batch of the slot left valid */
    int eos_after;      /* the letter after which EOS is the model's choice; -1: never */
    int fail_next;      /* the next forward call fails */
    int rule_breaks;    /* batches that broke engine/backend.h's rules */
    long rewritten;     /* positions fed again after later ones: drafts the scheduler rolled back */
    int n_calls;
    int per_slot[MAX_CALLS][MAX_SLOTS]; /* tokens of each slot in each call */
} fake_model;

static int32_t next_of(const fake_model *f, int32_t a, int32_t b)
{
    if (a == f->eos_after) return TOK_EOS;
    if (a < 0 || a >= N_LETTERS) return 0;
    return (a + 1 + (b == 4)) % N_LETTERS;
}

static void fake_row(const fake_model *f, int32_t a, int32_t b, float *row)
{
    const int32_t nx = next_of(f, a, b);
    for (int v = 0; v < N_VOCAB; v++) row[v] = -0.5f * (float)((v - nx + N_VOCAB) % N_VOCAB);
}

static int fake_forward(bw_backend *bb, const bw_batch *batch, float *logits)
{
    fake_model *f = (fake_model *)bb;
    if (f->fail_next) {
        f->fail_next = 0;
        return -1;
    }
    int first[MAX_SLOTS], last[MAX_SLOTS];
    for (int s = 0; s < MAX_SLOTS; s++) first[s] = last[s] = -1;
    int *rec = f->n_calls < MAX_CALLS ? f->per_slot[f->n_calls] : NULL;
    if (rec) memset(rec, 0, sizeof(f->per_slot[0]));
    for (int t = 0; t < batch->n_tokens; t++) {
        const int s = batch->slot[t], p = batch->pos[t];
        const int32_t tok = batch->token[t];
        if (s < 0 || s >= bb->params.n_slots || p < 0 || p >= N_CTX || tok < 0 || tok >= N_VOCAB) {
            f->rule_breaks++;
            return -1;
        }
        if (first[s] < 0) {
            if (p > f->len[s]) f->rule_breaks++; /* positions before p were never fed */
            if (p > 0 && p < f->len[s]) f->rewritten += f->len[s] - p;
            first[s] = p;
        } else if (p != last[s] + 1) {
            f->rule_breaks++;
        }
        last[s] = p;
        f->kv[s][p] = tok;
        if (rec) rec[s]++;
    }
    for (int s = 0; s < MAX_SLOTS; s++)
        if (first[s] >= 0) f->len[s] = last[s] + 1;
    size_t row = 0;
    for (int t = 0; t < batch->n_tokens; t++) {
        if (!batch->want_logits[t]) continue;
        const int s = batch->slot[t], p = batch->pos[t];
        fake_row(f, f->kv[s][p], p > 0 ? f->kv[s][p - 1] : -1, logits + row++ * N_VOCAB);
    }
    f->n_calls++;
    return 0;
}

static void fake_destroy(bw_backend *b) { (void)b; }

static const bw_backend_ops fake_ops = {"fake", fake_forward, fake_destroy};

/* Greedy output of the fake model after prompt: what a job must publish (EOS included when chosen). */
static int expect_greedy(const fake_model *f, const int32_t *prompt, int n, int max_tokens, int32_t *out)
{
    int32_t a = prompt[n - 1], b = n > 1 ? prompt[n - 2] : -1;
    int k = 0;
    while (k < max_tokens) {
        const int32_t t = next_of(f, a, b);
        out[k++] = t;
        if (t == TOK_EOS) break;
        b = a;
        a = t;
    }
    return k;
}

/* ---- the tokenizer and the engine around the fake ---- */

static unsigned char *gguf_file;
static bw_gguf *gguf;
static bw_tok *tok;

static int load_tokenizer(void)
{
    const char *tokens[N_VOCAB];
    int32_t types[N_VOCAB];
    static char letters[N_LETTERS][2];
    for (int i = 0; i < N_LETTERS; i++) {
        letters[i][0] = (char)('a' + i);
        tokens[i] = letters[i];
        types[i] = 1;
    }
    tokens[26] = "\xc4\xa0"; /* a space, as GPT-2's byte characters */
    tokens[27] = "\xc4\xa0\xc4\xa0";
    tokens[TOK_EOS] = "<|end|>";
    types[26] = types[27] = 1;
    types[TOK_EOS] = 3;
    const char *merges[] = {"\xc4\xa0 \xc4\xa0"}; /* no merge joins letters: text encodes letter by letter */
    gw w = {0};
    kv_str(&w, "tokenizer.ggml.model", "gpt2");
    kv_str(&w, "tokenizer.ggml.pre", "gpt-2");
    kv_strs(&w, "tokenizer.ggml.tokens", tokens, N_VOCAB);
    kv_i32s(&w, "tokenizer.ggml.token_type", types, N_VOCAB);
    kv_strs(&w, "tokenizer.ggml.merges", merges, 1);
    kv_u32(&w, "tokenizer.ggml.eos_token_id", TOK_EOS);
    size_t n;
    gguf_file = gw_file(&w, &n);
    char err[256] = "";
    gguf = bw_gguf_open_mem(gguf_file, n, err, sizeof err);
    tok = gguf ? bw_tok_load(gguf, err, sizeof err) : NULL;
    if (!tok) fprintf(stderr, "test_scheduler: cannot build the tokenizer: %s\n", err);
    return tok ? 0 : -1;
}

typedef struct {
    bw_engine e;
    fake_model f;
} rig;

static void rig_init(rig *r, int n_slots, int max_batch)
{
    memset(r, 0, sizeof *r);
    r->f.base.ops = &fake_ops;
    r->f.base.params = (bw_backend_params){.n_slots = n_slots, .n_ctx = N_CTX, .max_batch = max_batch};
    r->f.eos_after = -1;
    r->e.gguf = gguf;
    r->e.tok = tok;
    r->e.backend = &r->f.base;
    r->e.model.cfg.n_vocab = N_VOCAB;
    r->e.n_ctx = N_CTX;
    r->e.n_slots = n_slots;
}

/* ---- what the scheduler published ---- */

typedef struct {
    char id[BW_PROTO_JOB_ID_MAX + 1];
    int32_t prompt[MAX_PROMPT];
    int n_prompt;
    int accepted; /* ACCEPTED messages */
    int32_t first_index;
    uint64_t next_seq;
    int seq_breaks; /* a message whose seq is not the one after the previous */
    int n_tok;
    int32_t idx[MAX_OUT], ids[MAX_OUT];
    char text[4 * MAX_OUT + 1];
    size_t n_text;
    int ends;      /* DONE and ERROR messages */
    int after_end; /* messages after the first DONE or ERROR */
    uint8_t stop;
    char matched[BW_PROTO_MAX_STOP_LEN + 1];
    uint32_t n_generated;
    uint32_t pred_drafted, pred_accepted, lookup_drafted, lookup_accepted;
    uint16_t error;  /* the ERROR's code; 0: none */
    int kv_mismatch; /* at DONE, cache positions that do not hold the prompt and output */
} job_rec;

typedef struct {
    uint8_t *bytes;
    size_t len;
} raw_msg;

static struct {
    const fake_model *f; /* for the cache check at DONE */
    job_rec *jobs;
    int n_jobs, cap_jobs;
    raw_msg *log; /* every message in publish order */
    size_t n_log, cap_log;
    int replaying; /* messages are REPLAY copies: only logged */
    int bad_msgs;  /* messages that do not decode */
} cap;

static void cap_reset(const fake_model *f)
{
    for (size_t i = 0; i < cap.n_log; i++) free(cap.log[i].bytes);
    free(cap.log);
    free(cap.jobs);
    memset(&cap, 0, sizeof cap);
    cap.f = f;
}

static job_rec *rec_of(const char *id)
{
    for (int i = 0; i < cap.n_jobs; i++)
        if (strcmp(cap.jobs[i].id, id) == 0) return &cap.jobs[i];
    if (cap.n_jobs == cap.cap_jobs) {
        cap.cap_jobs = cap.cap_jobs ? 2 * cap.cap_jobs : 16;
        cap.jobs = realloc(cap.jobs, (size_t)cap.cap_jobs * sizeof *cap.jobs);
    }
    job_rec *j = &cap.jobs[cap.n_jobs++];
    memset(j, 0, sizeof *j);
    snprintf(j->id, sizeof j->id, "%s", id);
    return j;
}

/* At a job's DONE its slot's cache must hold its prompt and every token it fed: the output but the last
 * token (never fed). A draft the scheduler failed to roll back shows here. */
static void check_cache(job_rec *j)
{
    const fake_model *f = cap.f;
    for (int s = 0; s < f->base.params.n_slots; s++) {
        if (f->len[s] < j->n_prompt || memcmp(f->kv[s], j->prompt, (size_t)j->n_prompt * sizeof(int32_t)) != 0)
            continue;
        for (int i = 0; i + 1 < j->n_tok; i++)
            if (f->kv[s][j->n_prompt + i] != j->ids[i]) j->kv_mismatch++;
        return;
    }
}

static void on_publish(void *ctx, const uint8_t *buf, size_t len)
{
    (void)ctx;
    if (cap.n_log == cap.cap_log) {
        cap.cap_log = cap.cap_log ? 2 * cap.cap_log : 256;
        cap.log = realloc(cap.log, cap.cap_log * sizeof *cap.log);
    }
    raw_msg *r = &cap.log[cap.n_log++];
    r->bytes = malloc(len);
    memcpy(r->bytes, buf, len);
    r->len = len;
    bw_proto_msg m;
    if (bw_proto_decode(buf, len, &m, NULL, 0) != BW_PROTO_OK) {
        cap.bad_msgs++;
        return;
    }
    if (cap.replaying) return;
    job_rec *j = rec_of(m.h.job_id);
    if (m.h.seq != j->next_seq) j->seq_breaks++;
    j->next_seq = m.h.seq + 1;
    if (j->ends) j->after_end++;
    switch (m.h.type) {
    case BW_MSG_ACCEPTED:
        j->accepted++;
        j->first_index = m.u.accepted.first_index;
        break;
    case BW_MSG_TOKEN:
        if (j->n_tok < MAX_OUT) {
            j->idx[j->n_tok] = m.u.token.index;
            j->ids[j->n_tok++] = m.u.token.token_id;
        }
        if (j->n_text + m.u.token.text_len < sizeof j->text) {
            memcpy(j->text + j->n_text, m.u.token.text, m.u.token.text_len);
            j->n_text += m.u.token.text_len;
            j->text[j->n_text] = '\0';
        }
        break;
    case BW_MSG_DONE: {
        const bw_proto_done *d = &m.u.done;
        j->ends++;
        j->stop = d->stop;
        snprintf(j->matched, sizeof j->matched, "%.*s", (int)d->stop_matched_len,
                 d->stop_matched ? d->stop_matched : "");
        j->n_generated = d->n_generated;
        j->pred_drafted = d->pred_drafted;
        j->pred_accepted = d->pred_accepted;
        j->lookup_drafted = d->lookup_drafted;
        j->lookup_accepted = d->lookup_accepted;
        check_cache(j);
        break;
    }
    case BW_MSG_ERROR:
        j->ends++;
        j->error = m.u.error.code;
        break;
    default: break;
    }
}

/* ---- driving the scheduler ---- */

typedef struct {
    const int32_t *prompt;
    int n_prompt;
    int32_t max_tokens;
    float temperature;
    uint64_t seed;
    const char *stop[BW_PROTO_MAX_STOP];
    int n_stop;
    const char *prediction;
    const int32_t *resume; /* output tokens a resumed job already produced */
    int n_resume;
} job_spec;

static void put_le(uint8_t *le, const int32_t *v, int n)
{
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 4; k++) le[4 * i + k] = (uint8_t)((uint32_t)v[i] >> (8 * k));
}

/* Submits the job as the front would: encoded, decoded, handed over. */
static void submit(bw_sched *s, const char *id, const job_spec *js)
{
    bw_proto_msg m;
    bw_proto_init(&m, BW_MSG_SUBMIT, 0, id, 0);
    bw_proto_submit *x = &m.u.submit;
    uint8_t toks[4 * MAX_PROMPT], res[4 * MAX_OUT];
    put_le(toks, js->prompt, js->n_prompt);
    x->tokens_le = toks;
    x->n_tokens = (uint32_t)js->n_prompt;
    x->temperature = js->temperature;
    x->top_p = 1;
    x->repetition_penalty = 1;
    x->seed = js->seed;
    x->max_tokens = js->max_tokens;
    x->n_stop = (uint32_t)js->n_stop;
    for (int i = 0; i < js->n_stop; i++) {
        x->stop[i].s = js->stop[i];
        x->stop[i].len = (uint32_t)strlen(js->stop[i]);
    }
    if (js->prediction) {
        x->flags |= BW_SUBMIT_PREDICTION;
        x->prediction = js->prediction;
        x->prediction_len = (uint32_t)strlen(js->prediction);
    }
    if (js->n_resume) {
        put_le(res, js->resume, js->n_resume);
        x->resume_le = res;
        x->n_resume = (uint32_t)js->n_resume;
        x->resume_index = js->n_resume;
    }
    const size_t n = bw_proto_encoded_size(&m);
    uint8_t *wire = malloc(n);
    bw_proto_msg got;
    char err[128] = "";
    if (!wire || bw_proto_encode(&m, wire, n) != (long)n || bw_proto_decode(wire, n, &got, err, sizeof err) != 0) {
        CHECK(0, "%s: the SUBMIT does not encode: %s", id, err);
        free(wire);
        return;
    }
    /* what the slot's cache will hold before this run's first token: the prompt, then the resumed output */
    job_rec *j = rec_of(id);
    j->n_prompt = js->n_prompt + js->n_resume;
    memcpy(j->prompt, js->prompt, (size_t)js->n_prompt * sizeof(int32_t));
    if (js->n_resume) memcpy(j->prompt + js->n_prompt, js->resume, (size_t)js->n_resume * sizeof(int32_t));
    bw_sched_submit(s, &got);
    free(wire);
}

/* Steps until nothing is active; returns the steps taken, or -1 when a step failed. */
static int run_all(bw_sched *s)
{
    for (int steps = 1; steps <= 10000; steps++) {
        const int active = bw_sched_step(s);
        if (active < 0) return -1;
        if (active == 0) return steps;
    }
    CHECK(0, "the scheduler is still busy after 10000 steps");
    return -1;
}

static bw_sched *sched_new(rig *r)
{
    char err[256] = "";
    bw_sched *s = bw_sched_create(&r->e, 7, on_publish, NULL, err, sizeof err);
    CHECK(s != NULL, "bw_sched_create: %s", err);
    cap_reset(&r->f);
    return s;
}

static void letters_of(const int32_t *ids, int n, char *out)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] < N_LETTERS) out[k++] = (char)('a' + ids[i]);
    out[k] = '\0';
}

/* A finished job published exactly want (n ids, EOS included if the model chose it), ended with stop. */
static void check_output(const char *what, const job_rec *j, const int32_t *want, int n, int stop)
{
    const int n_pub = n > 0 && want[n - 1] == TOK_EOS ? n - 1 : n; /* EOS is never published */
    char text[MAX_OUT + 1];
    letters_of(want, n_pub, text);
    CHECK(j->accepted == 1 && j->ends == 1 && j->after_end == 0 && j->seq_breaks == 0,
          "%s: %d ACCEPTED, %d ends, %d after the end, %d seq breaks", what, j->accepted, j->ends, j->after_end,
          j->seq_breaks);
    CHECK(j->n_tok == n_pub && memcmp(j->ids, want, (size_t)n_pub * sizeof(int32_t)) == 0,
          "%s: %d tokens published, %d expected", what, j->n_tok, n_pub);
    for (int i = 0; i < j->n_tok; i++)
        CHECK(j->idx[i] == j->first_index + i, "%s: token %d has index %d", what, i, j->idx[i]);
    CHECK(strcmp(j->text, text) == 0, "%s: text '%s', expected '%s'", what, j->text, text);
    CHECK(j->error == 0 && j->stop == stop, "%s: ended with %s (error %u), expected %s", what,
          bw_stop_reason_name(j->stop), j->error, bw_stop_reason_name(stop));
    CHECK(j->n_generated == (uint32_t)(j->first_index + j->n_tok), "%s: DONE counts %u tokens, %d published", what,
          j->n_generated, j->first_index + j->n_tok);
    CHECK(j->kv_mismatch == 0, "%s: %d cache positions at DONE do not hold the job's tokens", what, j->kv_mismatch);
}

static void seq_ids(int32_t *out, int n, int from)
{
    for (int i = 0; i < n; i++) out[i] = (from + i) % N_LETTERS;
}

/* ---- the behaviours ---- */

static void greedy_output_follows_the_model(void)
{
    rig r;
    rig_init(&r, 2, 64);
    bw_sched *s = sched_new(&r);
    const int32_t prompt[] = {0, 1, 2};
    submit(s, "one", &(job_spec){prompt, 3, .max_tokens = 10});
    CHECK(run_all(s) > 0);
    int32_t want[MAX_OUT];
    const int n = expect_greedy(&r.f, prompt, 3, 10, want);
    check_output("greedy", rec_of("one"), want, n, BW_STOP_MAX_TOKENS);
    CHECK(strcmp(rec_of("one")->text, "defhijklmn") == 0, "greedy text '%s'", rec_of("one")->text);
    CHECK(r.f.rule_breaks == 0, "%d batches broke the backend's rules", r.f.rule_breaks);
    CHECK(r.f.n_calls == 10, "10 tokens took %d forward calls (prefill + 9 decode steps)", r.f.n_calls);
    bw_sched_free(s);
}

static void jobs_share_each_step(void)
{
    rig r;
    rig_init(&r, 4, 64);
    bw_sched *s = sched_new(&r);
    int32_t prompts[5][8];
    const int max[5] = {5, 9, 12, 7, 6}, len[5] = {3, 8, 1, 5, 2};
    char ids[5][8];
    for (int i = 0; i < 5; i++) {
        seq_ids(prompts[i], len[i], 3 * i);
        snprintf(ids[i], sizeof ids[i], "b%d", i);
        submit(s, ids[i], &(job_spec){prompts[i], len[i], .max_tokens = max[i]});
    }
    CHECK(bw_sched_queued(s) == 5 && bw_sched_busy(s) == 0);
    bw_sched_step(s);
    CHECK(bw_sched_busy(s) == 4 && bw_sched_queued(s) == 1, "after one step: %u busy, %u queued", bw_sched_busy(s),
          bw_sched_queued(s));
    for (int i = 0; i < 4; i++)
        CHECK(r.f.per_slot[0][i] == len[i], "the first call fed %d tokens of slot %d, its prompt has %d",
              r.f.per_slot[0][i], i, len[i]);
    bw_sched_step(s);
    for (int i = 0; i < 4; i++)
        CHECK(r.f.per_slot[1][i] == 1, "the second call fed %d tokens of slot %d", r.f.per_slot[1][i], i);
    CHECK(run_all(s) > 0);
    /* b0 ends after 5 tokens: its slot takes b4, whose prompt goes into the same call as the others' tokens */
    int admitted = 0;
    for (int c = 2; c < r.f.n_calls && c < MAX_CALLS; c++)
        if (r.f.per_slot[c][0] == len[4] && r.f.per_slot[c][1] == 1 && r.f.per_slot[c][2] == 1) admitted = 1;
    CHECK(admitted, "the queued job's prompt never shared a call with the running jobs");
    for (int i = 0; i < 5; i++) {
        int32_t want[MAX_OUT];
        const int n = expect_greedy(&r.f, prompts[i], len[i], max[i], want);
        check_output(ids[i], rec_of(ids[i]), want, n, BW_STOP_MAX_TOKENS);
    }
    CHECK(r.f.rule_breaks == 0, "%d batches broke the backend's rules", r.f.rule_breaks);
    CHECK(bw_sched_active(s) == 0);
    bw_sched_free(s);
}

static void max_tokens_and_context_bound_a_job(void)
{
    rig r;
    rig_init(&r, 2, 64);
    bw_sched *s = sched_new(&r);
    int32_t p[N_CTX];
    seq_ids(p, N_CTX, 0);
    submit(s, "one", &(job_spec){p, 2, .max_tokens = 1});
    submit(s, "full", &(job_spec){p, N_CTX, .max_tokens = 5});
    submit(s, "edge", &(job_spec){p + 1, N_CTX - 4, .max_tokens = 100});
    CHECK(run_all(s) > 0);
    int32_t want[MAX_OUT];
    int n = expect_greedy(&r.f, p, 2, 1, want);
    check_output("max_tokens 1", rec_of("one"), want, n, BW_STOP_MAX_TOKENS);
    const job_rec *full = rec_of("full");
    CHECK(full->error == BW_PERR_BAD_REQUEST && full->n_tok == 0 && full->accepted == 0,
          "a prompt that fills the context: error %u, %d tokens", full->error, full->n_tok);
    n = expect_greedy(&r.f, p + 1, N_CTX - 4, 4, want);
    check_output("context bound", rec_of("edge"), want, n, BW_STOP_MAX_TOKENS);
    bw_sched_free(s);
}

static void stops_on_eos_and_stop_strings(void)
{
    rig r;
    rig_init(&r, 2, 64);
    bw_sched *s = sched_new(&r);
    const int32_t prompt[] = {0};
    /* greedy text after 'a': "bcdefhijk..." */
    submit(s, "stop", &(job_spec){prompt, 1, .max_tokens = 20, .stop = {"zz", "hi"}, .n_stop = 2});
    CHECK(run_all(s) > 0);
    const job_rec *j = rec_of("stop");
    CHECK(j->stop == BW_STOP_SEQUENCE && strcmp(j->matched, "hi") == 0 && strcmp(j->text, "bcdef") == 0,
          "stop string: %s '%s', text '%s'", bw_stop_reason_name(j->stop), j->matched, j->text);
    CHECK(j->n_tok == 6 && j->n_generated == 6, "stop string: %d tokens published ('h' held back, 'i' silent)",
          j->n_tok);

    r.f.eos_after = 5; /* after 'f' */
    submit(s, "eos", &(job_spec){prompt, 1, .max_tokens = 20});
    CHECK(run_all(s) > 0);
    int32_t want[MAX_OUT];
    const int n = expect_greedy(&r.f, prompt, 1, 20, want);
    CHECK(n == 6 && want[5] == TOK_EOS);
    check_output("eos", rec_of("eos"), want, n, BW_STOP_EOS);
    bw_sched_free(s);
}

static void cancel_ends_running_and_queued_jobs(void)
{
    rig r;
    rig_init(&r, 1, 64);
    bw_sched *s = sched_new(&r);
    const int32_t prompt[] = {1, 2};
    submit(s, "run", &(job_spec){prompt, 2, .max_tokens = 50});
    submit(s, "wait", &(job_spec){prompt, 2, .max_tokens = 50});
    for (int i = 0; i < 3; i++) bw_sched_step(s);
    bw_sched_cancel(s, "wait");
    const job_rec *w = rec_of("wait");
    CHECK(w->ends == 1 && w->stop == BW_STOP_CANCELLED && w->n_tok == 0 && bw_sched_queued(s) == 0,
          "a queued job cancelled: %d ends, %s, %d tokens", w->ends, bw_stop_reason_name(w->stop), w->n_tok);
    bw_sched_cancel(s, "run");
    bw_sched_cancel(s, "nobody");
    const int calls = r.f.n_calls;
    const job_rec *j = rec_of("run");
    CHECK(j->n_tok == 3 && j->ends == 0, "before the next step a cancelled running job goes on");
    CHECK(bw_sched_step(s) == 0, "nothing is active after the cancel");
    j = rec_of("run");
    CHECK(j->ends == 1 && j->stop == BW_STOP_CANCELLED && j->n_tok == 3 && j->n_generated == 3,
          "a running job cancelled: %s after %d tokens", bw_stop_reason_name(j->stop), j->n_tok);
    CHECK(r.f.n_calls == calls, "a cancelled job was computed once more");
    CHECK(cap.n_jobs == 2, "a cancel of an unknown job published something");
    bw_sched_free(s);
}

static void duplicate_submit_is_ignored(void)
{
    rig r;
    rig_init(&r, 2, 64);
    bw_sched *s = sched_new(&r);
    const int32_t prompt[] = {4, 5};
    submit(s, "dup", &(job_spec){prompt, 2, .max_tokens = 6});
    bw_sched_step(s);
    submit(s, "dup", &(job_spec){prompt, 2, .max_tokens = 6});
    CHECK(bw_sched_active(s) == 1, "a duplicate SUBMIT added a job");
    CHECK(run_all(s) > 0);
    int32_t want[MAX_OUT];
    const int n = expect_greedy(&r.f, prompt, 2, 6, want);
    check_output("duplicate", rec_of("dup"), want, n, BW_STOP_MAX_TOKENS);
    bw_sched_free(s);
}

/* The messages of job id logged before index upto with seq >= from, in order. */
static int logged(const char *id, size_t upto, uint64_t from, raw_msg *out, int cap_out)
{
    int n = 0;
    for (size_t i = 0; i < upto && n < cap_out; i++) {
        bw_proto_msg m;
        if (bw_proto_decode(cap.log[i].bytes, cap.log[i].len, &m, NULL, 0) == 0 && strcmp(m.h.job_id, id) == 0 &&
            m.h.seq >= from)
            out[n++] = cap.log[i];
    }
    return n;
}

static void resume_and_replay_continue_a_job(void)
{
    rig r;
    rig_init(&r, 2, 64);
    bw_sched *s = sched_new(&r);
    const int32_t prompt[] = {7, 8, 9};
    const job_spec base = {prompt, 3, .max_tokens = 20, .temperature = 0.9f, .seed = 1234};
    submit(s, "orig", &base);
    CHECK(run_all(s) > 0);
    const job_rec o = *rec_of("orig");
    CHECK(o.n_tok > 8 && o.ends == 1, "the sampled job published %d tokens", o.n_tok);

    /* REPLAY from seq 3 republishes the very bytes published from there on */
    const size_t before = cap.n_log;
    cap.replaying = 1;
    bw_sched_replay(s, "orig", 3);
    cap.replaying = 0;
    raw_msg want_msgs[MAX_OUT + 2];
    const int n_want = logged("orig", before, 3, want_msgs, MAX_OUT + 2);
    CHECK(n_want > 0 && cap.n_log - before == (size_t)n_want, "REPLAY from 3 sent %zu messages, %d kept",
          cap.n_log - before, n_want);
    for (int i = 0; i < n_want && before + (size_t)i < cap.n_log; i++)
        CHECK(cap.log[before + i].len == want_msgs[i].len &&
                  memcmp(cap.log[before + i].bytes, want_msgs[i].bytes, want_msgs[i].len) == 0,
              "replayed message %d differs from the original", i);
    bw_sched_replay(s, "nobody", 0);
    CHECK(rec_of("nobody")->error == BW_PERR_REPLAY_GONE, "REPLAY of an unknown job: error %u",
          rec_of("nobody")->error);

    /* resumed at index 6 with the first 6 tokens, the job draws what it drew before */
    job_spec res = base;
    res.resume = o.ids;
    res.n_resume = 6;
    submit(s, "again", &res);
    CHECK(run_all(s) > 0);
    const job_rec *a = rec_of("again");
    CHECK(a->first_index == 6 && a->n_tok == o.n_tok - 6 &&
              memcmp(a->ids, o.ids + 6, (size_t)(o.n_tok - 6) * sizeof(int32_t)) == 0 && a->stop == o.stop &&
              a->n_generated == o.n_generated,
          "resumed at 6: first index %d, %d tokens (%d before), %s", a->first_index, a->n_tok, o.n_tok - 6,
          bw_stop_reason_name(a->stop));
    for (int i = 0; i < a->n_tok; i++) CHECK(a->idx[i] == 6 + i, "resumed token %d has index %d", i, a->idx[i]);

    /* every token already produced (only the DONE was lost): DONE at once, nothing computed */
    res.n_resume = o.n_tok;
    const int calls = r.f.n_calls;
    if (o.stop == BW_STOP_MAX_TOKENS) {
        submit(s, "over", &res);
        const job_rec *v = rec_of("over");
        CHECK(v->accepted == 1 && v->ends == 1 && v->stop == BW_STOP_MAX_TOKENS && v->n_tok == 0 &&
                  v->n_generated == o.n_generated && r.f.n_calls == calls,
              "a fully resumed job: %s, %d tokens, %d calls", bw_stop_reason_name(v->stop), v->n_tok,
              r.f.n_calls - calls);
    }
    /* resume tokens no run can have produced: EOS ends a job, nothing follows it */
    const int32_t impossible[] = {TOK_EOS, 3};
    res.resume = impossible;
    res.n_resume = 2;
    submit(s, "bad", &res);
    CHECK(rec_of("bad")->error == BW_PERR_BAD_REQUEST, "impossible resume tokens: error %u", rec_of("bad")->error);
    CHECK(bw_sched_active(s) == 0);
    bw_sched_free(s);
}

/* One run of the speculation jobs; out[i] receives job i's record. */
#define N_SPEC 5
static void spec_run(int spec_max, int fixed, job_rec *out, long *rewritten, int *breaks)
{
    static const int32_t pa[] = {0, 1, 2, 3, 9, 9, 9}, pb[] = {5, 6, 7}, pc[] = {10, 11}, pd[] = {3, 4},
                         pe[] = {20, 21, 22, 0, 1, 2};
    /* c's prediction is its exact output, d's is wrong from its 11th letter, b's is a greedy guess of a
     * sampled job; a and e find their drafts in their own prompt and output */
    static const char *pred_c = "mnopqrstuvwxyzabcdefhijklmnopq", *pred_d = "fhijklmnopxrstuvwxyzabcdefhijk";
    static const char *pred_b = "ijklmnopqrstuvwxyzabcdefhijklm";
    const job_spec js[N_SPEC] = {
        {pa, 7, .max_tokens = 60},
        {pb, 3, .max_tokens = 40, .temperature = 0.9f, .seed = 7, .prediction = pred_b},
        {pc, 2, .max_tokens = 30, .prediction = pred_c},
        {pd, 2, .max_tokens = 30, .prediction = pred_d},
        {pe, 6, .max_tokens = 50, .temperature = 0.5f, .seed = 99},
    };
    rig r;
    rig_init(&r, 3, 64);
    bw_sched *s = sched_new(&r);
    CHECK(bw_sched_set_spec_max(s, spec_max) == 0);
    bw_sched_set_spec_fixed(s, fixed);
    char id[8];
    for (int i = 0; i < N_SPEC; i++) {
        snprintf(id, sizeof id, "s%d", i);
        submit(s, id, &js[i]);
    }
    CHECK(run_all(s) > 0);
    for (int i = 0; i < N_SPEC; i++) {
        snprintf(id, sizeof id, "s%d", i);
        out[i] = *rec_of(id);
    }
    *rewritten = r.f.rewritten;
    *breaks = r.f.rule_breaks;
    bw_sched_free(s);
}

static void speculation_changes_no_token(void)
{
    static job_rec plain[N_SPEC], fixed[N_SPEC], adaptive[N_SPEC];
    long rw_plain, rw_fixed, rw_adaptive;
    int br_plain, br_fixed, br_adaptive;
    spec_run(0, 0, plain, &rw_plain, &br_plain);
    spec_run(8, 1, fixed, &rw_fixed, &br_fixed);
    spec_run(8, 0, adaptive, &rw_adaptive, &br_adaptive);
    uint32_t drafted = 0, accepted = 0;
    for (int i = 0; i < N_SPEC; i++) {
        const job_rec *p = &plain[i];
        CHECK(p->pred_drafted == 0 && p->lookup_drafted == 0, "job %d drafted with speculation off", i);
        const job_rec *runs[2] = {&fixed[i], &adaptive[i]};
        for (int k = 0; k < 2; k++) {
            const job_rec *q = runs[k];
            const char *how = k ? "adaptive" : "fixed";
            CHECK(q->n_tok == p->n_tok && memcmp(q->ids, p->ids, (size_t)p->n_tok * sizeof(int32_t)) == 0 &&
                      strcmp(q->text, p->text) == 0 && q->stop == p->stop && q->n_generated == p->n_generated,
                  "job %d with %s speculation: '%s' (%s), without: '%s' (%s)", i, how, q->text,
                  bw_stop_reason_name(q->stop), p->text, bw_stop_reason_name(p->stop));
            CHECK(q->kv_mismatch == 0 && q->seq_breaks == 0 && q->ends == 1, "job %d (%s): %d cache mismatches", i, how,
                  q->kv_mismatch);
        }
        drafted += fixed[i].pred_drafted + fixed[i].lookup_drafted;
        accepted += fixed[i].pred_accepted + fixed[i].lookup_accepted;
    }
    CHECK(accepted > 0 && accepted < drafted, "fixed drafts: %u of %u accepted (want some of both)", accepted, drafted);
    CHECK(fixed[2].pred_drafted > 0 && fixed[2].pred_accepted == fixed[2].pred_drafted,
          "an exact prediction: %u of %u accepted", fixed[2].pred_accepted, fixed[2].pred_drafted);
    CHECK(fixed[3].pred_accepted > 0 && fixed[3].pred_accepted < fixed[3].pred_drafted,
          "a prediction wrong in the middle: %u of %u accepted", fixed[3].pred_accepted, fixed[3].pred_drafted);
    CHECK(fixed[0].lookup_accepted > 0, "prompt lookup never drafted a right token");
    CHECK(rw_plain == 0 && rw_fixed > 0, "positions fed again: %ld without drafts, %ld with (rejected drafts)",
          rw_plain, rw_fixed);
    CHECK(br_plain == 0 && br_fixed == 0 && br_adaptive == 0, "batches broke the backend's rules: %d %d %d", br_plain,
          br_fixed, br_adaptive);
    CHECK(fixed[2].n_generated == 30 && plain[2].n_tok == 30);
}

/* A long prompt arriving beside a decoding job goes in PREFILL_MIN_TOKENS chunks when the step target is
 * tiny, one chunk per step, each beside the running job's token; alone it fills the batch. */
static void prefill_interleaves_with_decoding(void)
{
    for (int tiny = 1; tiny >= 0; tiny--) {
        rig r;
        rig_init(&r, 2, 64);
        bw_sched *s = sched_new(&r);
        bw_sched_set_prefill_step_ms(s, tiny ? 1e-6 : 0);
        const int32_t pa[] = {0, 1, 2};
        int32_t pb[100];
        seq_ids(pb, 100, 5);
        submit(s, "dec", &(job_spec){pa, 3, .max_tokens = 40});
        bw_sched_step(s);
        bw_sched_step(s);
        const int c0 = r.f.n_calls, tok0 = rec_of("dec")->n_tok;
        submit(s, "long", &(job_spec){pb, 100, .max_tokens = 5});
        int steps = 0;
        while (rec_of("long")->n_tok == 0 && steps < 20) bw_sched_step(s), steps++;
        const int want_chunks[2][4] = {{63, 37, 0, 0}, {32, 32, 32, 4}};
        const int n_chunks = tiny ? 4 : 2;
        CHECK(steps == n_chunks, "tiny=%d: the prompt took %d steps, expected %d", tiny, steps, n_chunks);
        for (int k = 0; k < steps && k < 4; k++) {
            const int *c = r.f.per_slot[c0 + k];
            CHECK(c[0] == 1 && c[1] == want_chunks[tiny][k], "tiny=%d step %d: %d decode tokens and a chunk of %d",
                  tiny, k, c[0], c[1]);
        }
        CHECK(rec_of("dec")->n_tok == tok0 + steps, "the decoding job published %d tokens in %d steps",
              rec_of("dec")->n_tok - tok0, steps);
        CHECK(run_all(s) > 0);
        int32_t want[MAX_OUT];
        int n = expect_greedy(&r.f, pa, 3, 40, want);
        check_output("decoding beside a prefill", rec_of("dec"), want, n, BW_STOP_MAX_TOKENS);
        n = expect_greedy(&r.f, pb, 100, 5, want);
        check_output("chunked prompt", rec_of("long"), want, n, BW_STOP_MAX_TOKENS);
        CHECK(r.f.rule_breaks == 0);
        bw_sched_free(s);
    }
}

static void failures_end_jobs_with_errors(void)
{
    rig r;
    rig_init(&r, 2, 64);
    bw_sched *s = sched_new(&r);
    const int32_t prompt[] = {1, 2, 3};
    submit(s, "x", &(job_spec){prompt, 3, .max_tokens = 20});
    submit(s, "y", &(job_spec){prompt + 1, 2, .max_tokens = 20});
    bw_sched_step(s);
    r.f.fail_next = 1;
    CHECK(bw_sched_step(s) == -1, "a failed forward call is not reported");
    CHECK(rec_of("x")->error == BW_PERR_GENERATION && rec_of("y")->error == BW_PERR_GENERATION &&
              rec_of("x")->ends == 1 && bw_sched_active(s) == 0,
          "after a backend failure: errors %u %u", rec_of("x")->error, rec_of("y")->error);

    /* a full wait queue refuses the next job; a shutdown ends every queued one */
    char id[16];
    for (int i = 0; i <= 1024; i++) {
        snprintf(id, sizeof id, "q%d", i);
        submit(s, id, &(job_spec){prompt, 3, .max_tokens = 5});
    }
    CHECK(bw_sched_queued(s) == 1024 && rec_of("q1024")->error == BW_PERR_QUEUE_FULL, "%u queued, the 1025th: error %u",
          bw_sched_queued(s), rec_of("q1024")->error);
    bw_sched_abort_all(s, BW_PERR_SHUTDOWN, "the engine is exiting");
    int shut = 0;
    for (int i = 0; i < 1024; i++) {
        snprintf(id, sizeof id, "q%d", i);
        shut += rec_of(id)->error == BW_PERR_SHUTDOWN && rec_of(id)->ends == 1;
    }
    CHECK(shut == 1024 && bw_sched_active(s) == 0, "%d of 1024 queued jobs ended with ENGINE_SHUTDOWN", shut);
    CHECK(cap.bad_msgs == 0, "%d published messages do not decode", cap.bad_msgs);
    bw_sched_free(s);
}

int main(void)
{
    if (load_tokenizer() != 0) return 1;
    greedy_output_follows_the_model();
    jobs_share_each_step();
    max_tokens_and_context_bound_a_job();
    stops_on_eos_and_stop_strings();
    cancel_ends_running_and_queued_jobs();
    duplicate_submit_is_ignored();
    resume_and_replay_continue_a_job();
    speculation_changes_no_token();
    prefill_interleaves_with_decoding();
    failures_end_jobs_with_errors();
    cap_reset(NULL);
    bw_tok_free(tok);
    bw_gguf_close(gguf);
    free(gguf_file);
    printf("scheduler: %d checks, %d failed (fake backend: batching, stops, cancel, resume, replay, speculation, "
           "prefill chunks)\n",
           check_count, check_failed);
    return check_failed ? 1 : 0;
}
