/* The front's side of the engine protocol (SPEC §2): the two listening nng sockets in the run
 * directory, their receive fd wired into the h2o loop, and what the front knows about the engine.
 *
 * Owns: the sockets, the engine's epoch and last HELLO, engine liveness (HELLO on a live pipe; pipe
 * removal, BYE or a new epoch is an engine loss), and the draining engine of a rolling upgrade. Messages for jobs go to bw_jobs; this module does not know
 * what a job is beyond its id. */
#ifndef BW_FRONT_LINK_H
#define BW_FRONT_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "frontend/front.h"
#include "proto/bw_proto.h"

enum bw_link_state {
    BW_LINK_NONE,     /* no engine has said HELLO yet */
    BW_LINK_LOADING,  /* HELLO with state loading */
    BW_LINK_READY,
    BW_LINK_DRAINING, /* the engine is exiting */
    BW_LINK_LOST,     /* an engine was there and is gone */
};

bw_link *bw_link_create(bw_front *f, const char *rundir, char *err, size_t errlen);
/* Unlinks the ipc files (the sockets themselves are left to process exit: nng_close can hang). */
void bw_link_remove_paths(bw_link *l);

/* Stamps (times, and the current engine's epoch unless m names one) and sends a front → engine message
 * without blocking; -1 if it could not be queued. The epoch addresses the message: PUSH reaches every
 * engine that dials us, and an engine drops what is meant for another. */
int bw_link_send(bw_link *l, bw_proto_msg *m);

/* The engine `epoch` said it is shutting down: send it nothing new (as if it had announced a drain). */
void bw_link_engine_stopping(bw_link *l, uint64_t epoch);

enum bw_link_state bw_link_state(const bw_link *l);
const char *bw_link_state_name(const bw_link *l); /* "starting|loading|ready|restarting|down|draining" */
uint64_t bw_link_epoch(const bw_link *l);
const bw_proto_hello *bw_link_hello(const bw_link *l); /* last HELLO (zeroed before the first) */
/* The served model's description from the last HELLO, for /info, /v1/models and `started`:
 * {"architecture":"gemma3","weight_types":["Q4_K","Q6_K","F32"]} (empty before the first HELLO). */
struct json_t *bw_link_model_json(const bw_link *l);
unsigned bw_link_epochs_seen(const bw_link *l);
unsigned long bw_link_bad_messages(const bw_link *l);

#endif
