/* The front's side of the engine protocol (SPEC §2): the two listening nng sockets in the run
 * directory, their receive fd wired into the h2o loop, and what the front knows about the engine.
 *
 * Owns: the sockets, the engine's epoch and last HELLO, engine liveness (HELLO on a live pipe; pipe
 * removal, BYE or a new epoch is an engine loss), and the draining engine of a rolling upgrade (announced
 * by a HELLO, or by an ERROR ENGINE_SHUTDOWN for one of its jobs).
 * It knows nothing of jobs beyond their ids: what happens to the engines is reported through the
 * callbacks it was created with (wired in main.c), on the loop thread, once the link's own state is
 * settled, and never from inside a call into the link. */
#ifndef BW_FRONT_LINK_H
#define BW_FRONT_LINK_H

#include <h2o.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/bw_proto.h"

typedef struct bw_link bw_link;

enum bw_link_state {
    BW_LINK_NONE,    /* no engine has said HELLO yet */
    BW_LINK_LOADING, /* HELLO with state loading */
    BW_LINK_READY,
    BW_LINK_DRAINING, /* the engine is exiting */
    BW_LINK_LOST,     /* an engine was there and is gone */
};

/* What the link reports; ctx is passed back to each. */
typedef struct {
    void *ctx;
    /* A job message (ACCEPTED, TOKEN, DONE, ERROR) from any engine: each job knows which engine runs it,
     * and a refusal may come from any engine. */
    void (*msg)(void *ctx, const bw_proto_msg *m);
    /* The engine with this epoch is gone (crash, BYE, hung, replaced). */
    void (*lost)(void *ctx, uint64_t epoch);
    /* New work may go to the current engine now: it said HELLO ready (every beacon), or an engine was lost
     * (a draining one may leave while its replacement is up). */
    void (*ready)(void *ctx);
    /* An engine stopped sending HELLO; it has been lost. pid: its process, for a supervisor to kill. */
    void (*hung)(void *ctx, uint32_t pid);
} bw_link_events;

typedef struct {
    h2o_loop_t *loop;
    const char *rundir;
    double hello_timeout_s; /* an engine silent this long is lost (0 = never) */
    int sub_buffer;         /* SUB receive buffer in messages (tests only; 0 = the normal 8192) */
    int supervised;         /* --spawn-engine: no engine yet reads "starting", a lost one "restarting" */
    bw_link_events ev;
} bw_link_config;

bw_link *bw_link_create(const bw_link_config *c, char *err, size_t errlen);
/* Unlinks the ipc files (the sockets themselves are left to process exit: nng_close can hang). */
void bw_link_remove_paths(bw_link *l);
/* The front is shutting down: no more hung-engine checks or drains; state names read "down" after a loss. */
void bw_link_shutdown(bw_link *l);

/* Stamps (times, and the current engine's epoch unless m names one) and sends a front → engine message
 * without blocking; -1 if it could not be queued. The epoch addresses the message: PUSH reaches every
 * engine that dials us, and an engine drops what is meant for another. */
int bw_link_send(bw_link *l, bw_proto_msg *m);

enum bw_link_state bw_link_state(const bw_link *l);
const char *bw_link_state_name(const bw_link *l); /* "starting|loading|ready|restarting|down|draining" */
uint64_t bw_link_epoch(const bw_link *l);
const bw_proto_hello *bw_link_hello(const bw_link *l); /* last HELLO (zeroed before the first) */
/* The served model's description from the last HELLO, for /info and /v1/models:
 * {"architecture":"gemma3","weight_types":["Q4_K","Q6_K","F32"]} (empty before the first HELLO). */
struct json_t *bw_link_model_json(const bw_link *l);
unsigned bw_link_epochs_seen(const bw_link *l);
unsigned long bw_link_bad_messages(const bw_link *l);

#endif
