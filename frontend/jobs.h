/* The front's job table: every job from POST until it has been finished and retained for resume
 * (SPEC §3.2), the events it has produced so far, and its life cycle against the engine.
 *
 * Owns: job ids, the wait queue for an absent engine (bounded, QUEUE_TIMEOUT), submission and
 * cancellation over the link, per-job sequence checking and gap repair (REPLAY), the buffered event
 * history a stream reads from, the per-job bound on what a client has not read yet (SLOW_CLIENT), and
 * the timers (engine wait, never-opened stream, reconnect grace, retention).
 *
 * Resume (issue 5): a job keeps its prompt, sampling parameters and every token id it has delivered until
 * it is finished. When its engine is lost (crash, kill, drain limit), the job waits for the next engine
 * and is submitted again with that output as its resume point; the engine re-prefills prompt + output and
 * continues at the next index, drawing what the lost engine would have drawn. The client sees a pause, no
 * error; ENGINE_LOST only when no engine takes the job back within --engine-wait.
 * Exactly once: token i is stored once, in order; a message from another epoch or an index already held
 * is dropped (counted), a gap in the engine's per-job sequence is repaired with REPLAY, and a gap that
 * cannot be repaired ends the job with an explicit error.
 * It writes no HTTP and no SSE: a reader (the stream, sse.c) registers with a job through bw_job_reader
 * and is told when there is something new; a job's start and its end are plain records
 * (bw_job_start, bw_job_outcome) that the stream renders. It reaches the engine through bw_jobs_engine,
 * wired to the link in main.c and to a fake in tests/unit/test_jobs.c. */
#ifndef BW_FRONT_JOBS_H
#define BW_FRONT_JOBS_H

#include <h2o.h>
#include <stddef.h>
#include <stdint.h>

#include "frontend/metrics.h"
#include "proto/bw_proto.h"

typedef struct bw_jobs bw_jobs;
typedef struct bw_job bw_job;

typedef struct {
    const char *prompt; /* copied by bw_jobs_submit */
    size_t prompt_len;
    uint32_t submit_flags; /* BW_SUBMIT_CHAT (| BW_SUBMIT_MESSAGES: prompt is a packed conversation) */
    int32_t max_tokens;
    float temperature, top_p, min_p, repetition_penalty;
    int32_t top_k;
    uint64_t seed;
    int n_stop;
    char stop[BW_PROTO_MAX_STOP][BW_PROTO_MAX_STOP_LEN + 1];
    const char *prediction; /* predicted output (draft tokens for the engine), or NULL; copied */
    size_t prediction_len;
    /* When the prompt (counted by the engine) and max_tokens do not fit the context together: 0 clamps
     * max_tokens to the room left and says so in `end` (max_tokens_clamped_to); 1 ends the job before its
     * first token with error context_length_exceeded (OpenAI's answer, a 400 on the OpenAI routes). */
    int refuse_over_context;
    /* The stream omits id: lines unless asked (?ids=1): set for rbee's {"operation":"infer"} form, whose
     * job client forwards every non-empty line it does not recognise to its own clients. */
    int no_ids;
} bw_job_params;

/* The engine as the job table sees it. Every call is made on the loop thread and returns without calling
 * back into the job table. */
typedef struct {
    void *ctx;
    /* Sends a front → engine message (to the engine m->h.epoch names); -1 if it could not be queued. */
    int (*send)(void *ctx, bw_proto_msg *m);
    /* The epoch of the engine new jobs go to, 0 while none is ready. */
    uint64_t (*ready_epoch)(void *ctx);
    /* The last HELLO: the context per slot, and the model description `started` carries. */
    const bw_proto_hello *(*hello)(void *ctx);
    /* The model's public id (model_id.h), for `started`. */
    const char *(*model_id)(void *ctx);
} bw_jobs_engine;

typedef struct {
    h2o_loop_t *loop;
    double engine_wait_s;     /* a job waits this long for an engine (QUEUE_TIMEOUT, or ENGINE_LOST once it ran) */
    double reconnect_grace_s; /* a running job whose reader left waits this long for it to come back */
    int retain_s;             /* a finished job is kept this long for resume */
    int open_timeout_s;       /* a job whose stream is not opened in time is cancelled */
    int queue_size;           /* jobs that may wait for an engine */
    size_t stream_buffer;     /* bytes a client may leave unread before SLOW_CLIENT */
    bw_jobs_engine engine;
    bw_metrics *metrics; /* may be NULL */
} bw_jobs_config;

bw_jobs *bw_jobs_create(const bw_jobs_config *c);
/* The front is shutting down: nothing more is submitted, and an engine's ENGINE_SHUTDOWN ends a job. */
void bw_jobs_shutdown(bw_jobs *js);
/* Frees the table and every job in it, readers or not (the front itself exits without; tests free). */
void bw_jobs_free(bw_jobs *js);

enum bw_jobs_submit_result { BW_JOBS_OK = 0, BW_JOBS_FULL, BW_JOBS_NOMEM };
enum bw_jobs_submit_result bw_jobs_submit(bw_jobs *js, const bw_job_params *p, bw_job **out);
bw_job *bw_jobs_find(bw_jobs *js, const char *id, size_t len);
/* DELETE, disconnect or an unopened stream: the job ends with stop_reason CANCELLED. */
void bw_jobs_cancel(bw_jobs *js, bw_job *j);

/* From the link (bw_link_events): a job message from any engine; the job itself knows which epoch it
 * listens to. */
void bw_jobs_on_msg(bw_jobs *js, const bw_proto_msg *m);
void bw_jobs_engine_ready(bw_jobs *js); /* submits waiting jobs, resumed ones first */
/* The engine with this epoch is gone: its unfinished jobs wait for the next engine to resume them. */
void bw_jobs_engine_lost(bw_jobs *js, uint64_t epoch);
/* Ends every unfinished job with an error event (front shutdown). */
void bw_jobs_fail_all(bw_jobs *js, const char *code, const char *message);

/* Counters for /info and /metrics; monotonic over the front's life. */
typedef struct {
    uint64_t engine_losses;         /* engines lost while they had jobs or not (crash, kill, BYE) */
    uint64_t jobs_resumed;          /* submissions of a job again after its engine was lost */
    uint64_t tokens_resumed;        /* delivered tokens those submissions carried (re-prefilled, not resent) */
    uint64_t tokens_replayed;       /* tokens that reached the front through REPLAY after a gap */
    uint64_t duplicates_suppressed; /* token messages dropped: index already delivered, or a stale engine */
    uint64_t gaps_unrepairable;     /* jobs ended because lost messages could not be replayed */
    uint64_t slow_client_cancels;   /* jobs cancelled because their client fell --stream-buffer behind */
    uint64_t jobs_engine_lost;      /* jobs ended with ENGINE_LOST: no engine came back in --engine-wait */
    /* speculative decoding, from the DONE of every finished job: draft tokens verified and accepted,
     * [0] from predicted outputs, [1] from prompt lookup */
    uint64_t spec_drafted[2], spec_accepted[2];
} bw_jobs_stats;
void bw_jobs_stats_get(const bw_jobs *js, bw_jobs_stats *out);

unsigned bw_jobs_queued(const bw_jobs *js);
unsigned bw_jobs_running(const bw_jobs *js);
unsigned bw_jobs_streams(const bw_jobs *js);

/* How a job began: the engine's ACCEPTED, and what was served, as the `started` event reports it. */
typedef struct {
    const char *job_id;
    const char *model;        /* the model's public id */
    const char *arch;         /* general.architecture of the engine's model */
    const char *weight_types; /* its tensor types, "Q4_1,Q8_0,F32" */
    uint64_t seed;
    long long started_at; /* unix seconds */
} bw_job_start;

/* How a job ended. */
enum bw_job_end { BW_JOB_RUNNING = 0, BW_JOB_ENDED, BW_JOB_FAILED };
typedef struct {
    enum bw_job_end end;
    /* BW_JOB_ENDED */
    uint8_t stop;        /* enum bw_stop_reason */
    int has_matched;     /* stop is a stop sequence the engine named */
    const char *matched; /* that sequence (not NUL-terminated) */
    size_t matched_len;
    size_t tokens_out;
    uint64_t decode_ns;                    /* summed over the job's runs */
    int has_prediction;                    /* the job carried a predicted output: */
    uint32_t pred_accepted, pred_rejected; /* its draft tokens, from the engine's DONE */
    int32_t clamped_to;                    /* max_tokens as the context allowed it, when less than asked (else 0) */
    /* BW_JOB_FAILED */
    char code[32];       /* ENGINE_LOST, QUEUE_TIMEOUT, an engine's GENERATION_ERROR, ... */
    const char *message; /* NUL-terminated */
    size_t message_len;
} bw_job_outcome;

/* Whoever reads a job's events (the stream of sse.c): told when the job has new events or has ended,
 * and asked how far its client is. */
typedef struct bw_job_reader bw_job_reader;
typedef struct {
    void (*notify)(bw_job_reader *r);
    /* Formatted bytes the client has not taken yet: what --stream-buffer bounds while r reads the job. */
    size_t (*backlog)(const bw_job_reader *r);
    /* Event id of the first event not yet written to the client's socket. */
    uint64_t (*delivered)(const bw_job_reader *r);
} bw_job_reader_ops;
struct bw_job_reader {
    const bw_job_reader_ops *ops;
};

/* For the stream that reads a job. Events are numbered as SSE ids: 0 = started, i + 1 = token i. */
const char *bw_job_id(const bw_job *j);
int bw_job_attach(bw_job *j, bw_job_reader *r); /* -1 when another reader is attached */
/* A reconnect (Last-Event-ID) takes the job from a reader whose client is presumably gone but not yet
 * noticed: returns that reader, now detached without grace or cancel, or NULL when there was none. */
bw_job_reader *bw_job_take_reader(bw_job *j);
/* The reader went away. An unfinished job goes on for --reconnect-grace seconds, so that a client can
 * reconnect with Last-Event-ID, and is cancelled if none does. */
void bw_job_detach(bw_job *j, bw_job_reader *r);
const bw_job_start *bw_job_started(const bw_job *j); /* NULL before the engine accepted the job */
size_t bw_job_n_tokens(const bw_job *j);
void bw_job_token(const bw_job *j, size_t i, const char **text, size_t *len, uint64_t *ts_ns);
const bw_job_outcome *bw_job_outcome_of(const bw_job *j); /* NULL while the job runs */
uint32_t bw_job_n_prompt(const bw_job *j); /* prompt tokens as the engine counted them (0 before ACCEPTED) */
int bw_job_no_ids(const bw_job *j);        /* the job's stream omits id: lines by default */
/* A stream has handed the job's terminal event to its client: every event has been sent. A reconnect
 * that has seen every token then gets 204, which tells a browser's EventSource to stop reconnecting. */
void bw_job_set_all_sent(bw_job *j);
int bw_job_all_sent(const bw_job *j);
uint64_t bw_job_created_ns(const bw_job *j); /* CLOCK_MONOTONIC at submission: time to first token starts here */

#endif
