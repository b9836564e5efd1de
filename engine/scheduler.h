/* The engine's job scheduler: continuous batching over the backend's N slots (SPEC §1, §2).
 *
 * Owns: the wait queue, slot assignment, building ONE batch per step from every active job (a decode
 * token for each running job plus prefill chunks of newly admitted ones), the per-job message sequence,
 * the bounded per-job history that REPLAY serves, and speculative decoding (draft tokens verified in the
 * step, see bw_sched_set_spec_max). Every message is encoded here and handed to the
 * publish callback the moment it exists, so a token leaves the engine right after it is sampled.
 * It does not know about sockets or signals (engine/daemon.c does). Single-threaded; the counters read
 * by bw_sched_busy/queued may be read from another thread. */
#ifndef BW_ENGINE_SCHEDULER_H
#define BW_ENGINE_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "common/opts.h"
#include "engine/loader.h"
#include "proto/bw_proto.h"

typedef struct bw_sched bw_sched;

/* Sends one encoded message; called synchronously from the scheduler. */
typedef void (*bw_sched_publish_fn)(void *ctx, const uint8_t *msg, size_t len);

bw_sched *bw_sched_create(bw_engine *e, uint64_t epoch, bw_sched_publish_fn publish, void *ctx, char *err,
                          size_t errlen);
void bw_sched_free(bw_sched *s);

/* While other jobs are decoding, a prompt is fed in chunks sized to take about ms per step (from the
 * measured cost per token, at least PREFILL_MIN_TOKENS, at most --batch), so their tokens keep flowing
 * while it prefills; alone, a prompt goes in whole --batch chunks. 0 turns the limit off. A token's
 * result does not depend on how its prompt was chunked (the backends are batch-invariant). */
void bw_sched_set_prefill_step_ms(bw_sched *s, double ms);

/* Exact speculative decoding: each decoding job may verify up to k draft tokens (from its prediction or
 * from n-grams of its own prompt and output) together with its next token in one step, and keeps the
 * longest run its own sampler confirms; the tokens are exactly those of plain decoding. 0 (the default
 * here) turns it off. Returns -1 for k outside 0..BW_SCHED_SPEC_MAX or out of memory. */
#define BW_SCHED_SPEC_MAX BW_OPT_SPEC_MAX /* the --spec-max range of both command lines */
int bw_sched_set_spec_max(bw_sched *s, int k);
/* By default each job sends the number of its draft tokens that maximizes the step's expected tokens per
 * second (its measured acceptance against the measured cost of a step's tokens), so unpredictable text
 * costs almost nothing. Fixed: every draft is sent whole, up to the maximum (tests, measurements). */
void bw_sched_set_spec_fixed(bw_sched *s, int on);

/* Draft tokens verified and accepted since the start, by source; may be read from another thread. */
typedef struct {
    uint64_t pred_drafted, pred_accepted, lookup_drafted, lookup_accepted;
} bw_sched_spec;
void bw_sched_spec_stats(bw_sched *s, bw_sched_spec *out);

/* Takes a decoded SUBMIT / CANCEL / REPLAY. Problems are answered with ERROR messages, never crashes. */
void bw_sched_submit(bw_sched *s, const bw_proto_msg *m);
void bw_sched_cancel(bw_sched *s, const char *job_id);
void bw_sched_replay(bw_sched *s, const char *job_id, uint64_t from_seq);

/* Publishes an ERROR for a job that has no history here (seq 0, not kept): NOT_TAKEN for a SUBMIT the
 * engine will not run, REPLAY_UNAVAILABLE for a REPLAY of a job it does not know. */
void bw_sched_refuse(bw_sched *s, const char *job_id, uint16_t code, const char *message);

/* Runs one batched forward pass over every active job and publishes what it produced. Returns the
 * number of jobs still active or queued (0 = idle: wait for messages), or -1 if the backend failed (the
 * jobs of that step have been ended with GENERATION_ERROR). */
int bw_sched_step(bw_sched *s);

/* Ends every queued and running job with an ERROR (code, message): the engine is going away. */
void bw_sched_abort_all(bw_sched *s, uint16_t code, const char *message);

/* Jobs holding a slot or waiting for one. */
unsigned bw_sched_active(const bw_sched *s);

unsigned bw_sched_busy(const bw_sched *s);   /* slots in use */
unsigned bw_sched_queued(const bw_sched *s); /* jobs waiting for a slot */

#endif
