/* The front's job table (frontend/jobs.c) against a fake engine link and a fake reader: no sockets, no
 * processes, only h2o's event loop for the table's timers (short ones here). Each case drives one piece
 * of the job life cycle of SPEC §3.2/§3.3 and issue 5 (submission, tokens in and out of order,
 * duplicates, gaps and REPLAY, engine loss and resume, drain, cancel, slow client, reconnect with
 * Last-Event-ID, retention) and checks what the engine was sent, what the reader was told and how the
 * job ended. */
#include "frontend/jobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "check.h"

/* ---- the fake link: records what the table sends, plays the engine's messages ---- */

#define MAX_SENT 512

typedef struct {
    uint16_t type;
    uint64_t epoch;
    char job[BW_PROTO_JOB_ID_MAX + 1];
    uint64_t from_seq;     /* REPLAY */
    int32_t resume_index;  /* SUBMIT */
    int32_t resume_ids[8]; /* SUBMIT: the first resume token ids */
    char text[64];         /* SUBMIT: the prompt's start */
} sent_msg;

static struct {
    uint64_t ready_epoch; /* 0: no engine ready */
    bw_proto_hello hello;
    int refuse_sends; /* the push queue is full */
    sent_msg sent[MAX_SENT];
    int n_sent;
} eng;

static int fake_send(void *ctx, bw_proto_msg *m)
{
    (void)ctx;
    if (eng.refuse_sends || eng.n_sent == MAX_SENT) return -1;
    sent_msg *s = &eng.sent[eng.n_sent++];
    memset(s, 0, sizeof(*s));
    s->type = m->h.type;
    s->epoch = m->h.epoch;
    snprintf(s->job, sizeof(s->job), "%s", m->h.job_id);
    if (m->h.type == BW_MSG_REPLAY) s->from_seq = m->u.replay.from_seq;
    if (m->h.type == BW_MSG_SUBMIT) {
        const bw_proto_submit *sub = &m->u.submit;
        s->resume_index = sub->resume_index;
        for (uint32_t i = 0; i < sub->n_resume && i < 8; i++) s->resume_ids[i] = bw_proto_token_at(sub->resume_le, i);
        snprintf(s->text, sizeof(s->text), "%.*s", (int)sub->text_len, sub->text);
    }
    return 0;
}

static uint64_t fake_ready_epoch(void *ctx) { return (void)ctx, eng.ready_epoch; }
static const bw_proto_hello *fake_hello(void *ctx) { return (void)ctx, &eng.hello; }
static const char *fake_model_id(void *ctx) { return (void)ctx, "test-model"; }

/* How many messages of a type went to the job (and, unless 0, to that engine). */
static int n_sent(uint16_t type, const bw_job *j, uint64_t epoch)
{
    int n = 0;
    for (int i = 0; i < eng.n_sent; i++)
        if (eng.sent[i].type == type && strcmp(eng.sent[i].job, bw_job_id(j)) == 0 &&
            (!epoch || eng.sent[i].epoch == epoch))
            n++;
    return n;
}

static const sent_msg *last_sent(uint16_t type, const bw_job *j)
{
    for (int i = eng.n_sent - 1; i >= 0; i--)
        if (eng.sent[i].type == type && strcmp(eng.sent[i].job, bw_job_id(j)) == 0) return &eng.sent[i];
    return NULL;
}

static void engine_up(uint64_t epoch)
{
    eng.ready_epoch = epoch;
    eng.hello.n_ctx = 2048;
    snprintf(eng.hello.arch, sizeof(eng.hello.arch), "llama");
    snprintf(eng.hello.weight_types, sizeof(eng.hello.weight_types), "Q4_1,F32");
}

/* ---- the engine's side of one job (its seed is the engine's epoch, to tell runs apart) ---- */

static void accepted(bw_jobs *js, const bw_job *j, uint64_t epoch, uint64_t seq, int32_t first_index)
{
    bw_proto_msg m;
    bw_proto_init(&m, BW_MSG_ACCEPTED, epoch, bw_job_id(j), seq);
    m.h.real_ns = 1700000000ull * 1000000000ull;
    m.u.accepted = (bw_proto_accepted){.seed = epoch, .n_prompt = 7, .first_index = first_index};
    bw_jobs_on_msg(js, &m);
}

/* Token `index` with text "t<index>" and id 100 + index. */
static void token(bw_jobs *js, const bw_job *j, uint64_t epoch, uint64_t seq, int32_t index)
{
    static char text[16];
    bw_proto_msg m;
    bw_proto_init(&m, BW_MSG_TOKEN, epoch, bw_job_id(j), seq);
    m.h.real_ns = 1000000ull * (uint64_t)(index + 1);
    snprintf(text, sizeof(text), "t%d", (int)index);
    m.u.token =
        (bw_proto_token){.index = index, .token_id = 100 + index, .text = text, .text_len = (uint32_t)strlen(text)};
    bw_jobs_on_msg(js, &m);
}

static void done(bw_jobs *js, const bw_job *j, uint64_t epoch, uint64_t seq, uint8_t stop)
{
    bw_proto_msg m;
    bw_proto_init(&m, BW_MSG_DONE, epoch, bw_job_id(j), seq);
    m.u.done = (bw_proto_done){.stop = stop, .decode_ns = 30000000ull};
    if (stop == BW_STOP_SEQUENCE) m.u.done.stop_matched = "END", m.u.done.stop_matched_len = 3;
    bw_jobs_on_msg(js, &m);
}

static void engine_error(bw_jobs *js, const bw_job *j, uint64_t epoch, uint64_t seq, uint16_t code)
{
    bw_proto_msg m;
    bw_proto_init(&m, BW_MSG_ERROR, epoch, bw_job_id(j), seq);
    m.u.error = (bw_proto_error){.code = code, .message = "engine says no", .message_len = 14};
    bw_jobs_on_msg(js, &m);
}

/* ---- the fake reader: reads every new token when told, claims a backlog ---- */

typedef struct {
    bw_job_reader r;
    bw_job *j;
    int notified;
    size_t read;     /* tokens read so far */
    char text[1024]; /* their texts, in the order read */
    size_t backlog;  /* what it says its client has not taken */
    uint64_t delivered;
    int saw_end;
} reader;

static void reader_notify(bw_job_reader *r)
{
    reader *rd = (reader *)r;
    rd->notified++;
    for (size_t n = bw_job_n_tokens(rd->j); rd->read < n; rd->read++) {
        const char *t;
        size_t len;
        uint64_t ts;
        bw_job_token(rd->j, rd->read, &t, &len, &ts);
        size_t have = strlen(rd->text);
        snprintf(rd->text + have, sizeof(rd->text) - have, "%.*s|", (int)len, t);
    }
    if (bw_job_outcome_of(rd->j)) rd->saw_end++;
}

static size_t reader_backlog(const bw_job_reader *r) { return ((const reader *)r)->backlog; }
static uint64_t reader_delivered(const bw_job_reader *r) { return ((const reader *)r)->delivered; }
static const bw_job_reader_ops reader_ops = {reader_notify, reader_backlog, reader_delivered};

static void reader_init(reader *rd, bw_job *j)
{
    memset(rd, 0, sizeof(*rd));
    rd->r.ops = &reader_ops;
    rd->j = j;
}

/* ---- the table under test ---- */

static h2o_loop_t *loop;

static bw_jobs *table(void)
{
    memset(&eng, 0, sizeof(eng));
    bw_jobs_config c = {
        .loop = loop,
        .engine_wait_s = 0.3,
        .reconnect_grace_s = 0.2,
        .retain_s = 1,
        .open_timeout_s = 1,
        .queue_size = 3,
        .stream_buffer = 64,
        .engine = {NULL, fake_send, fake_ready_epoch, fake_hello, fake_model_id},
    };
    return bw_jobs_create(&c);
}

static bw_job *submit(bw_jobs *js, const char *prompt)
{
    bw_job_params p = {.prompt = prompt,
                       .prompt_len = strlen(prompt),
                       .max_tokens = 16,
                       .temperature = 1.0f,
                       .top_p = 1.0f,
                       .repetition_penalty = 1.0f,
                       .seed = 42};
    bw_job *j = NULL;
    CHECK(bw_jobs_submit(js, &p, &j) == BW_JOBS_OK);
    return j;
}

/* Runs the loop for ms milliseconds: the table's timers fire as they would in the front. */
static void spin(unsigned ms)
{
    uint64_t end = bw_clock_mono_ns() + (uint64_t)ms * 1000000ull;
    while (bw_clock_mono_ns() < end) h2o_evloop_run(loop, 10);
}

static const bw_job_outcome *outcome(const bw_job *j) { return bw_job_outcome_of(j); }

static int failed_with(const bw_job *j, const char *code)
{
    const bw_job_outcome *o = outcome(j);
    return o && o->end == BW_JOB_FAILED && strcmp(o->code, code) == 0;
}

static int ended_with(const bw_job *j, uint8_t stop)
{
    const bw_job_outcome *o = outcome(j);
    return o && o->end == BW_JOB_ENDED && o->stop == stop;
}

/* ---- cases ---- */

/* A job goes to the ready engine at once; started, tokens and the end reach its reader in order. */
static void test_submit_tokens_end(void)
{
    bw_jobs *js = table();
    engine_up(0x11);
    bw_job *j = submit(js, "hello there");
    CHECK(n_sent(BW_MSG_SUBMIT, j, 0x11) == 1, "the job is submitted to the ready engine at once");
    CHECK(strcmp(last_sent(BW_MSG_SUBMIT, j)->text, "hello there") == 0);
    CHECK(bw_jobs_running(js) == 1 && bw_jobs_queued(js) == 0);
    reader rd;
    reader_init(&rd, j);
    CHECK(bw_job_attach(j, &rd.r) == 0);
    CHECK(bw_jobs_streams(js) == 1);
    CHECK(bw_job_started(j) == NULL && outcome(j) == NULL);
    accepted(js, j, 0x11, 0, 0);
    const bw_job_start *st = bw_job_started(j);
    CHECK(st && st->seed == 0x11 && st->started_at == 1700000000ll && strcmp(st->model, "test-model") == 0 &&
              strcmp(st->arch, "llama") == 0 && strcmp(st->weight_types, "Q4_1,F32") == 0 &&
              strcmp(st->job_id, bw_job_id(j)) == 0,
          "the start record carries ACCEPTED's seed and the model");
    CHECK(bw_job_n_prompt(j) == 7);
    for (int i = 0; i < 3; i++) token(js, j, 0x11, (uint64_t)i + 1, i);
    CHECK(strcmp(rd.text, "t0|t1|t2|") == 0, "reader read: %s", rd.text);
    done(js, j, 0x11, 4, BW_STOP_SEQUENCE);
    const bw_job_outcome *o = outcome(j);
    CHECK(ended_with(j, BW_STOP_SEQUENCE), "the job ends with the engine's stop reason");
    CHECK(o && o->tokens_out == 3 && o->decode_ns == 30000000ull && o->has_matched && o->matched_len == 3 &&
          memcmp(o->matched, "END", 3) == 0);
    CHECK(rd.saw_end == 1, "the reader is told once that the job ended");
    CHECK(bw_jobs_running(js) == 0);
    token(js, j, 0x11, 5, 3);
    CHECK(bw_job_n_tokens(j) == 3, "nothing is stored after the end");
    bw_job_detach(j, &rd.r);
    bw_jobs_free(js);
}

/* Messages that arrive twice, from an old engine, or before ACCEPTED are dropped and counted. */
static void test_duplicates_and_stale(void)
{
    bw_jobs *js = table();
    engine_up(0x21);
    bw_job *j = submit(js, "p");
    reader rd;
    reader_init(&rd, j);
    bw_job_attach(j, &rd.r);
    accepted(js, j, 0x21, 0, 0);
    token(js, j, 0x21, 1, 0);
    token(js, j, 0x21, 1, 0);    /* the same message again (a REPLAY after it had arrived) */
    accepted(js, j, 0x21, 0, 0); /* likewise: ACCEPTED again must not restart the job at index 0 */
    CHECK(outcome(j) == NULL, "a replayed ACCEPTED is dropped");
    token(js, j, 0x99, 2, 1); /* another engine's */
    bw_jobs_stats st;
    bw_jobs_stats_get(js, &st);
    CHECK(bw_job_n_tokens(j) == 1, "a repeated or stale token is not stored: %zu", bw_job_n_tokens(j));
    CHECK(st.duplicates_suppressed == 2, "both are counted: %llu", (unsigned long long)st.duplicates_suppressed);
    token(js, j, 0x21, 2, 0); /* a new message for an index already held */
    bw_jobs_stats_get(js, &st);
    CHECK(bw_job_n_tokens(j) == 1 && st.duplicates_suppressed == 3);
    token(js, j, 0x21, 3, 1);
    CHECK(bw_job_n_tokens(j) == 2 && outcome(j) == NULL && strcmp(rd.text, "t0|t1|") == 0, "read: %s", rd.text);
    bw_job_detach(j, &rd.r);
    bw_jobs_free(js);
}

/* A gap in the engine's sequence asks for a REPLAY from the first missing message; the replayed messages
 * fill it in order, and one that skips an index is an error. */
static void test_gap_and_replay(void)
{
    bw_jobs *js = table();
    engine_up(0x31);
    bw_job *j = submit(js, "p");
    reader rd;
    reader_init(&rd, j);
    bw_job_attach(j, &rd.r);
    accepted(js, j, 0x31, 0, 0);
    token(js, j, 0x31, 1, 0);
    token(js, j, 0x31, 3, 2); /* seq 2 (token 1) was lost */
    const sent_msg *r = last_sent(BW_MSG_REPLAY, j);
    CHECK(r && r->from_seq == 2 && r->epoch == 0x31, "a gap asks the job's engine for a replay from seq 2");
    CHECK(bw_job_n_tokens(j) == 1, "nothing past the gap is stored before it is filled");
    int replays = n_sent(BW_MSG_REPLAY, j, 0);
    spin(250);
    CHECK(n_sent(BW_MSG_REPLAY, j, 0) > replays, "a replay that brought nothing is asked again");
    token(js, j, 0x31, 2, 1); /* the replay */
    token(js, j, 0x31, 3, 2);
    token(js, j, 0x31, 4, 3);
    bw_jobs_stats st;
    bw_jobs_stats_get(js, &st);
    CHECK(strcmp(rd.text, "t0|t1|t2|t3|") == 0, "read in order after the repair: %s", rd.text);
    CHECK(st.tokens_replayed == 2, "tokens that came through the replay: %llu", (unsigned long long)st.tokens_replayed);
    token(js, j, 0x31, 5, 5); /* index 4 skipped by the engine itself */
    CHECK(failed_with(j, "GENERATION_ERROR"), "an engine that skips an index ends the job");
    CHECK(n_sent(BW_MSG_CANCEL, j, 0x31) == 1, "and the engine is told to stop it");
    bw_job_detach(j, &rd.r);
    bw_jobs_free(js);
}

/* The engine's REPLAY_GONE: history lost for a job it ran is an explicit error; for a SUBMIT it never saw
 * the job is sent again. */
static void test_replay_gone(void)
{
    bw_jobs *js = table();
    engine_up(0x41);
    bw_job *a = submit(js, "a"), *b = submit(js, "b");
    accepted(js, a, 0x41, 0, 0);
    token(js, a, 0x41, 1, 0);
    engine_error(js, a, 0x41, 9, BW_PERR_REPLAY_GONE);
    CHECK(failed_with(a, "REPLAY_UNAVAILABLE"));
    engine_error(js, b, 0x41, 0, BW_PERR_REPLAY_GONE); /* b's SUBMIT went astray */
    CHECK(outcome(b) == NULL && n_sent(BW_MSG_SUBMIT, b, 0x41) == 2, "a lost SUBMIT is sent again");
    bw_jobs_free(js);
}

/* An engine lost with a job half done: the job waits, then resumes on the next engine from its delivered
 * output (resume point = the ids it has), without a second `started`, and the old engine's late messages
 * are dropped. */
static void test_engine_lost_and_resume(void)
{
    bw_jobs *js = table();
    engine_up(0x51);
    bw_job *j = submit(js, "p");
    reader rd;
    reader_init(&rd, j);
    bw_job_attach(j, &rd.r);
    accepted(js, j, 0x51, 0, 0);
    token(js, j, 0x51, 1, 0);
    token(js, j, 0x51, 2, 1);
    eng.ready_epoch = 0;
    bw_jobs_engine_lost(js, 0x51);
    CHECK(bw_jobs_queued(js) == 1 && bw_jobs_running(js) == 0 && outcome(j) == NULL, "the job waits, no error");
    token(js, j, 0x51, 3, 2);
    CHECK(bw_job_n_tokens(j) == 2, "a lost engine's late token is dropped");
    engine_up(0x52);
    bw_jobs_engine_ready(js);
    const sent_msg *s = last_sent(BW_MSG_SUBMIT, j);
    CHECK(s && s->epoch == 0x52 && s->resume_index == 2 && s->resume_ids[0] == 100 && s->resume_ids[1] == 101,
          "resubmitted to the new engine with its output as the resume point");
    const bw_job_start before = *bw_job_started(j);
    accepted(js, j, 0x52, 0, 2);
    CHECK(bw_job_started(j)->seed == before.seed && rd.read == 2, "the resumed run keeps the first start");
    token(js, j, 0x52, 1, 2);
    done(js, j, 0x52, 2, BW_STOP_MAX_TOKENS);
    CHECK(ended_with(j, BW_STOP_MAX_TOKENS) && strcmp(rd.text, "t0|t1|t2|") == 0, "read: %s", rd.text);
    bw_jobs_stats st;
    bw_jobs_stats_get(js, &st);
    CHECK(st.engine_losses == 1 && st.jobs_resumed == 1 && st.tokens_resumed == 2);
    bw_job_detach(j, &rd.r);
    bw_jobs_free(js);
}

/* A resumed run that starts at the wrong index is an error, not a silent repeat. */
static void test_resume_wrong_index(void)
{
    bw_jobs *js = table();
    engine_up(0x61);
    bw_job *j = submit(js, "p");
    accepted(js, j, 0x61, 0, 0);
    token(js, j, 0x61, 1, 0);
    bw_jobs_engine_lost(js, 0x61);
    engine_up(0x62);
    bw_jobs_engine_ready(js);
    accepted(js, j, 0x62, 0, 0);
    CHECK(failed_with(j, "GENERATION_ERROR"));
    bw_jobs_free(js);
}

/* No engine comes back within --engine-wait: ENGINE_LOST for a job that ran, QUEUE_TIMEOUT for one that
 * never reached an engine; a full wait queue refuses new jobs. */
static void test_engine_wait(void)
{
    bw_jobs *js = table();
    engine_up(0x71);
    bw_job *ran = submit(js, "p");
    accepted(js, ran, 0x71, 0, 0);
    eng.ready_epoch = 0;
    bw_jobs_engine_lost(js, 0x71);
    bw_job *never = submit(js, "q");
    CHECK(n_sent(BW_MSG_SUBMIT, never, 0) == 0, "nothing is sent while no engine is ready");
    bw_job *third = submit(js, "r");
    bw_job_params p = {.prompt = "s", .prompt_len = 1, .max_tokens = 1};
    bw_job *full;
    CHECK(bw_jobs_submit(js, &p, &full) == BW_JOBS_FULL, "the fourth waiting job is refused (queue of 3)");
    spin(450);
    CHECK(failed_with(ran, "ENGINE_LOST"), "a job whose engine did not come back");
    CHECK(failed_with(never, "QUEUE_TIMEOUT") && failed_with(third, "QUEUE_TIMEOUT"), "jobs no engine took");
    bw_jobs_stats st;
    bw_jobs_stats_get(js, &st);
    CHECK(st.jobs_engine_lost == 1);
    bw_jobs_free(js);
}

/* Waiting jobs go to the next ready engine, resumed ones first; a full push queue keeps them waiting. */
static void test_waiting_jobs_submitted_when_ready(void)
{
    bw_jobs *js = table();
    bw_job *a = submit(js, "a");
    engine_up(0x81);
    eng.refuse_sends = 1;
    bw_jobs_engine_ready(js);
    CHECK(bw_jobs_queued(js) == 1, "a refused send leaves the job waiting");
    eng.refuse_sends = 0;
    bw_jobs_engine_ready(js);
    CHECK(n_sent(BW_MSG_SUBMIT, a, 0x81) == 1 && bw_jobs_queued(js) == 0);
    bw_jobs_free(js);
}

/* A draining engine answers ENGINE_SHUTDOWN: its jobs wait for the next engine instead of failing, and
 * nothing goes back to it. During the front's own shutdown the same answer ends the job. */
static void test_drain(void)
{
    bw_jobs *js = table();
    engine_up(0x91);
    bw_job *j = submit(js, "p");
    accepted(js, j, 0x91, 0, 0);
    token(js, j, 0x91, 1, 0);
    eng.ready_epoch = 0; /* the link marks the engine draining before the message reaches the table */
    engine_error(js, j, 0x91, 2, BW_PERR_SHUTDOWN);
    CHECK(outcome(j) == NULL && bw_jobs_queued(js) == 1, "the job waits for the next engine");
    CHECK(n_sent(BW_MSG_SUBMIT, j, 0x91) == 1, "and is not sent back to the draining engine");
    engine_up(0x92);
    bw_jobs_engine_ready(js);
    CHECK(last_sent(BW_MSG_SUBMIT, j)->epoch == 0x92 && last_sent(BW_MSG_SUBMIT, j)->resume_index == 1);
    bw_jobs_shutdown(js);
    accepted(js, j, 0x92, 0, 1);
    engine_error(js, j, 0x92, 1, BW_PERR_SHUTDOWN);
    CHECK(failed_with(j, "ENGINE_SHUTDOWN"), "while the front stops, ENGINE_SHUTDOWN ends the job");
    bw_jobs_free(js);
}

/* NOT_TAKEN: a SUBMIT that reached an engine that does not run it goes to the ready engine again. */
static void test_not_taken(void)
{
    bw_jobs *js = table();
    engine_up(0xa1);
    bw_job *j = submit(js, "p");
    engine_error(js, j, 0xa0, 0, BW_PERR_NOT_TAKEN); /* any engine may answer */
    CHECK(outcome(j) == NULL && n_sent(BW_MSG_SUBMIT, j, 0xa1) == 2, "sent again: %d", n_sent(BW_MSG_SUBMIT, j, 0));
    accepted(js, j, 0xa1, 0, 0);
    engine_error(js, j, 0xa0, 0, BW_PERR_NOT_TAKEN); /* a late refusal for a running job says nothing */
    CHECK(outcome(j) == NULL && n_sent(BW_MSG_SUBMIT, j, 0) == 2);
    bw_jobs_free(js);
}

/* DELETE: the job ends CANCELLED at once, its engine is told, later messages are ignored. */
static void test_cancel(void)
{
    bw_jobs *js = table();
    engine_up(0xb1);
    bw_job *j = submit(js, "p");
    reader rd;
    reader_init(&rd, j);
    bw_job_attach(j, &rd.r);
    accepted(js, j, 0xb1, 0, 0);
    token(js, j, 0xb1, 1, 0);
    bw_jobs_cancel(js, j);
    CHECK(ended_with(j, BW_STOP_CANCELLED) && rd.saw_end == 1);
    CHECK(n_sent(BW_MSG_CANCEL, j, 0xb1) == 1, "the engine is told to stop the job");
    token(js, j, 0xb1, 2, 1);
    done(js, j, 0xb1, 3, BW_STOP_EOS);
    CHECK(bw_job_n_tokens(j) == 1 && ended_with(j, BW_STOP_CANCELLED), "the first end stands");
    bw_jobs_cancel(js, j);
    CHECK(n_sent(BW_MSG_CANCEL, j, 0) == 1, "a second cancel sends nothing");
    bw_job_detach(j, &rd.r);
    bw_jobs_free(js);
}

/* A client that does not read: past --stream-buffer (64 bytes here) the job ends with SLOW_CLIENT, measured
 * by the reader's backlog, or estimated from the text when no reader is attached. */
static void test_slow_client(void)
{
    bw_jobs *js = table();
    engine_up(0xc1);
    bw_job *j = submit(js, "p");
    reader rd;
    reader_init(&rd, j);
    bw_job_attach(j, &rd.r);
    accepted(js, j, 0xc1, 0, 0);
    rd.backlog = 64;
    token(js, j, 0xc1, 1, 0);
    CHECK(outcome(j) == NULL, "at the bound the job goes on");
    rd.backlog = 65;
    token(js, j, 0xc1, 2, 1);
    CHECK(failed_with(j, "SLOW_CLIENT") && n_sent(BW_MSG_CANCEL, j, 0xc1) == 1, "past it the job ends");
    bw_job_detach(j, &rd.r);

    bw_job *k = submit(js, "q"); /* nobody reads it: each token is its text plus ~40 bytes of event */
    accepted(js, k, 0xc1, 0, 0);
    token(js, k, 0xc1, 1, 0);
    CHECK(outcome(k) == NULL);
    token(js, k, 0xc1, 2, 1);
    CHECK(failed_with(k, "SLOW_CLIENT"), "two unread token events exceed 64 bytes");
    bw_jobs_stats st;
    bw_jobs_stats_get(js, &st);
    CHECK(st.slow_client_cancels == 2);
    bw_jobs_free(js);
}

/* One reader at a time; a reconnect (Last-Event-ID) takes the job from a reader that is still attached,
 * without cancelling it; a reader that leaves gives the job --reconnect-grace to be read again. */
static void test_readers_and_reconnect(void)
{
    bw_jobs *js = table();
    engine_up(0xd1);
    bw_job *j = submit(js, "p");
    reader a, b;
    reader_init(&a, j);
    reader_init(&b, j);
    CHECK(bw_job_attach(j, &a.r) == 0 && bw_job_attach(j, &b.r) == -1, "a second reader is refused");
    accepted(js, j, 0xd1, 0, 0);
    token(js, j, 0xd1, 1, 0);
    token(js, j, 0xd1, 2, 1);
    a.delivered = 2; /* its client got started and token 0 */
    CHECK(bw_job_take_reader(j) == &a.r && bw_jobs_streams(js) == 0, "a reconnect takes the job over");
    int a_told = a.notified;
    CHECK(bw_job_attach(j, &b.r) == 0);
    spin(300);
    CHECK(outcome(j) == NULL, "taking over neither cancels nor starts the grace");
    token(js, j, 0xd1, 3, 2);
    CHECK(b.notified > 0 && a.notified == a_told && strcmp(b.text, "t0|t1|t2|") == 0,
          "only the attached reader is told");
    bw_job_detach(j, &b.r);
    spin(100);
    reader c;
    reader_init(&c, j);
    CHECK(bw_job_attach(j, &c.r) == 0, "a reader back within the grace keeps the job");
    spin(300);
    CHECK(outcome(j) == NULL);
    bw_job_detach(j, &c.r);
    spin(300);
    CHECK(ended_with(j, BW_STOP_CANCELLED), "no reader back within --reconnect-grace: cancelled");
    bw_jobs_free(js);
}

/* Reconnecting after the end: a finished job stays readable for --retain, everything it produced in it,
 * and is freed afterwards, but never while a reader still holds it. */
static void test_retention(void)
{
    bw_jobs *js = table();
    engine_up(0xe1);
    bw_job *j = submit(js, "p"), *k = submit(js, "q");
    char id[BW_PROTO_JOB_ID_MAX + 1], kid[BW_PROTO_JOB_ID_MAX + 1];
    snprintf(id, sizeof(id), "%s", bw_job_id(j));
    snprintf(kid, sizeof(kid), "%s", bw_job_id(k));
    reader rk;
    reader_init(&rk, k);
    bw_job_attach(k, &rk.r);
    for (bw_job *x = j; x; x = x == j ? k : NULL) {
        accepted(js, x, 0xe1, 0, 0);
        token(js, x, 0xe1, 1, 0);
        done(js, x, 0xe1, 2, BW_STOP_EOS);
    }
    CHECK(bw_jobs_find(js, id, strlen(id)) == j, "a finished job is found");
    bw_job_set_all_sent(j);
    CHECK(bw_job_all_sent(j) && bw_job_n_tokens(j) == 1);
    reader late;
    reader_init(&late, j);
    CHECK(bw_job_attach(j, &late.r) == 0, "and can be read again from the start");
    bw_job_detach(j, &late.r);
    spin(1300);
    CHECK(bw_jobs_find(js, id, strlen(id)) == NULL, "after --retain it is gone");
    CHECK(bw_jobs_find(js, kid, strlen(kid)) == k, "unless a reader still holds it");
    bw_job_detach(k, &rk.r);
    CHECK(bw_jobs_find(js, kid, strlen(kid)) == NULL, "freed when that reader leaves");
    bw_jobs_free(js);
}

/* A job whose stream is never opened is cancelled after --open-timeout. */
static void test_never_opened(void)
{
    bw_jobs *js = table();
    engine_up(0xf1);
    bw_job *j = submit(js, "p");
    accepted(js, j, 0xf1, 0, 0);
    spin(1200);
    CHECK(ended_with(j, BW_STOP_CANCELLED) && n_sent(BW_MSG_CANCEL, j, 0xf1) == 1);
    bw_jobs_free(js);
}

/* The context: max_tokens beyond what is left after the prompt is clamped (and said so in the outcome),
 * or, when the request asks for OpenAI's answer, refused before the first token. */
static void test_context_fit(void)
{
    bw_jobs *js = table();
    engine_up(0x101);
    eng.hello.n_ctx = 10; /* 7 prompt tokens: room for 3 */
    bw_job *clamped = submit(js, "p");
    bw_job_params p = {.prompt = "q", .prompt_len = 1, .max_tokens = 16, .refuse_over_context = 1};
    bw_job *refused;
    CHECK(bw_jobs_submit(js, &p, &refused) == BW_JOBS_OK);
    accepted(js, clamped, 0x101, 0, 0);
    accepted(js, refused, 0x101, 0, 0);
    CHECK(failed_with(refused, "context_length_exceeded") && bw_job_started(refused) == NULL);
    done(js, clamped, 0x101, 1, BW_STOP_MAX_TOKENS);
    CHECK(ended_with(clamped, BW_STOP_MAX_TOKENS) && outcome(clamped)->clamped_to == 3);
    bw_jobs_free(js);
}

/* The front's shutdown ends every job, waiting or running, with the given error. */
static void test_fail_all(void)
{
    bw_jobs *js = table();
    engine_up(0x111);
    bw_job *running = submit(js, "p");
    accepted(js, running, 0x111, 0, 0);
    eng.ready_epoch = 0;
    bw_job *waiting = submit(js, "q");
    bw_jobs_fail_all(js, "SHUTTING_DOWN", "the worker is shutting down");
    CHECK(failed_with(running, "SHUTTING_DOWN") && failed_with(waiting, "SHUTTING_DOWN"));
    CHECK(strcmp(outcome(waiting)->message, "the worker is shutting down") == 0);
    CHECK(bw_jobs_queued(js) == 0 && bw_jobs_running(js) == 0);
    bw_jobs_free(js);
}

int main(void)
{
    loop = h2o_evloop_create();
    static const struct {
        const char *name;
        void (*fn)(void);
    } cases[] = {
        {"submit, tokens, end", test_submit_tokens_end},
        {"duplicates and stale engines", test_duplicates_and_stale},
        {"gap and REPLAY", test_gap_and_replay},
        {"REPLAY_GONE", test_replay_gone},
        {"engine lost and resume", test_engine_lost_and_resume},
        {"resume at the wrong index", test_resume_wrong_index},
        {"engine wait, queue full", test_engine_wait},
        {"waiting jobs go when ready", test_waiting_jobs_submitted_when_ready},
        {"drain (ENGINE_SHUTDOWN)", test_drain},
        {"NOT_TAKEN", test_not_taken},
        {"cancel", test_cancel},
        {"slow client", test_slow_client},
        {"readers and reconnect (Last-Event-ID)", test_readers_and_reconnect},
        {"retention", test_retention},
        {"stream never opened", test_never_opened},
        {"context fit", test_context_fit},
        {"fail all", test_fail_all},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int before = check_failed;
        cases[i].fn();
        printf("%-42s %s\n", cases[i].name, check_failed == before ? "ok" : "FAILED");
    }
    printf("test_jobs: %d checks, %d failed\n", check_count, check_failed);
    return check_failed ? 1 : 0;
}
