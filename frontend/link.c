/* nng sockets of the front and engine liveness; see link.h.
 *
 * Threading: nng calls on_pipe() on its own threads. It only updates the live-pipe set under `mu` and
 * wakes the loop through an eventfd; every decision (engine lost, jobs resumed) is made on the loop.
 *
 * Engines: one current engine (the one new jobs go to) and at most one draining engine, which finishes
 * the jobs it has while a replacement starts (a rolling upgrade). Each is bound to the SUB pipe its HELLO
 * came on; that pipe closing, a BYE, or (for the current engine) a new epoch loses it. A lost epoch is
 * remembered so that its late HELLOs cannot bring it back. An engine that stops sending HELLO for
 * --engine-hello-timeout is lost too (a process stopped or stuck keeps its pipes open).
 *
 * Events: a loss found while the link changes its state is queued (`pending`) and reported by report()
 * when the entry point that found it (a message, a pipe event, the watch timer) is done, so that the job
 * table, which may send at once, never sees the link half-way through a change. */
#include "frontend/link.h"

#include <errno.h>
#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/pubsub0/sub.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"

#define MAX_PIPES 64
#define BUFFER_MSGS 8192 /* SPEC §2: PUB/SUB drop silently when full; nng's defaults are 16/128 */
#define GONE_EPOCHS 16
#define WATCH_MS 100 /* how often HELLO silence is checked */

struct bw_link {
    h2o_loop_t *loop;
    bw_link_events ev;
    double hello_timeout_s;
    int supervised, stopping;
    nng_socket push, sub;
    int evfd;
    h2o_socket_t *rx_sock, *ev_sock;

    pthread_mutex_t mu; /* guards the fields up to `engine_pipe_lost` */
    uint32_t live[MAX_PIPES];
    int n_live;
    uint32_t push_live[MAX_PIPES]; /* PUSH pipes, to cut those of a hung engine */
    int n_push;
    uint32_t engine_pipe; /* SUB pipe that delivered the current engine's HELLO; 0 = none */
    uint32_t drain_pipe;  /* the draining engine's */
    int engine_pipe_lost, drain_pipe_lost;

    enum bw_link_state state;
    uint64_t epoch;       /* current engine */
    uint64_t drain_epoch; /* draining engine; 0 = none */
    uint64_t gone[GONE_EPOCHS];
    unsigned n_gone;
    bw_proto_hello hello;
    uint64_t hello_ms, drain_hello_ms; /* when the current (draining) engine last said HELLO */
    uint32_t drain_pid;
    h2o_timeout_t watch_to;
    h2o_timeout_entry_t watch;
    unsigned epochs_seen;
    unsigned long bad;
    uint64_t last_bad_log_ns;
    char jobs_path[128], tokens_path[128];
    uint64_t pending[GONE_EPOCHS]; /* losses not reported yet */
    unsigned n_pending;
    int pending_ready;
};

static void on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    bw_link *l = arg;
    uint32_t id = nng_pipe_id(p);
    int wake = 0;
    pthread_mutex_lock(&l->mu);
    if (ev == NNG_PIPE_EV_ADD_POST) {
        if (l->n_live < MAX_PIPES) l->live[l->n_live++] = id;
    } else if (ev == NNG_PIPE_EV_REM_POST) {
        for (int i = 0; i < l->n_live; i++)
            if (l->live[i] == id) {
                l->live[i] = l->live[--l->n_live];
                break;
            }
        if (id == l->engine_pipe) {
            l->engine_pipe_lost = 1;
            wake = 1;
        }
        if (id == l->drain_pipe) {
            l->drain_pipe_lost = 1;
            wake = 1;
        }
    }
    pthread_mutex_unlock(&l->mu);
    if (wake) {
        uint64_t one = 1;
        ssize_t w = write(l->evfd, &one, sizeof(one));
        (void)w; /* a full eventfd counter still wakes the loop */
    }
}

static void on_push_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    bw_link *l = arg;
    uint32_t id = nng_pipe_id(p);
    pthread_mutex_lock(&l->mu);
    if (ev == NNG_PIPE_EV_ADD_POST) {
        if (l->n_push < MAX_PIPES) l->push_live[l->n_push++] = id;
    } else {
        for (int i = 0; i < l->n_push; i++)
            if (l->push_live[i] == id) {
                l->push_live[i] = l->push_live[--l->n_push];
                break;
            }
    }
    pthread_mutex_unlock(&l->mu);
}

static uint64_t now_ms(void) { return bw_clock_mono_ns() / 1000000ull; }

static int is_gone(const bw_link *l, uint64_t epoch)
{
    for (unsigned i = 0; i < l->n_gone && i < GONE_EPOCHS; i++)
        if (l->gone[i] == epoch) return 1;
    return 0;
}

/* Tells the rest of the front what the last entry point changed: losses first (their jobs then wait for
 * an engine), then that waiting work may go. */
static void report(bw_link *l)
{
    while (l->n_pending) {
        uint64_t epoch = l->pending[0];
        memmove(l->pending, l->pending + 1, --l->n_pending * sizeof(l->pending[0]));
        l->pending_ready = 1; /* a draining engine left while its replacement is up */
        l->ev.lost(l->ev.ctx, epoch);
    }
    if (l->pending_ready) {
        l->pending_ready = 0;
        l->ev.ready(l->ev.ctx);
    }
}

/* Engine `epoch` is gone for good: its unfinished jobs wait for (or go straight to) the current engine
 * once report() tells them. */
static void lose(bw_link *l, uint64_t epoch, const char *why)
{
    if (!epoch || is_gone(l, epoch)) return;
    l->gone[l->n_gone++ % GONE_EPOCHS] = epoch;
    int was_current = epoch == l->epoch && l->state != BW_LINK_NONE && l->state != BW_LINK_LOST;
    bw_log_warn("engine (epoch %016llx%s) lost: %s", (unsigned long long)epoch,
                epoch == l->drain_epoch ? ", draining" : "", why);
    pthread_mutex_lock(&l->mu);
    if (epoch == l->drain_epoch) l->drain_pipe = 0;
    if (was_current) l->engine_pipe = 0;
    pthread_mutex_unlock(&l->mu);
    if (epoch == l->drain_epoch) l->drain_epoch = 0;
    if (was_current) {
        l->state = BW_LINK_LOST;
        l->hello.slots_busy = 0;
        l->hello.queue_depth = 0;
    }
    if (l->n_pending < GONE_EPOCHS) l->pending[l->n_pending++] = epoch;
}

/* The current engine finishes what it has and takes nothing new. */
static void start_drain(bw_link *l)
{
    if (l->drain_epoch == l->epoch) return;
    if (l->drain_epoch) lose(l, l->drain_epoch, "a second engine began to drain");
    bw_log_info("engine (epoch %016llx) is draining: new jobs wait for the next engine", (unsigned long long)l->epoch);
    l->drain_pid = l->hello.pid;
    l->drain_hello_ms = l->hello_ms;
    pthread_mutex_lock(&l->mu);
    l->drain_pipe = l->engine_pipe;
    pthread_mutex_unlock(&l->mu);
    l->drain_epoch = l->epoch;
    l->state = BW_LINK_DRAINING;
}

/* Closes our end of every pipe to the engine process `pid` (and the SUB pipe its HELLO came on), so
 * that nothing more is pushed into the buffers of an engine that no longer reads them. */
static void cut_pipes(bw_link *l, uint32_t sub_pipe, uint32_t pid)
{
    uint32_t ids[MAX_PIPES];
    int n = 0;
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < l->n_push; i++) ids[n++] = l->push_live[i];
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < n; i++) {
        nng_pipe p = NNG_PIPE_INITIALIZER;
        p.id = ids[i];
        int peer;
        if (pid && nng_pipe_get_int(p, NNG_OPT_IPC_PEER_PID, &peer) == 0 && (uint32_t)peer == pid) nng_pipe_close(p);
    }
    if (sub_pipe) {
        nng_pipe p = NNG_PIPE_INITIALIZER;
        p.id = sub_pipe;
        nng_pipe_close(p);
    }
}

/* An engine whose HELLO beacons (every 200 ms, from a thread of their own) stopped is stopped, stuck or
 * starved: it is lost like a crashed one, its jobs resume elsewhere, and a spawned one is killed so that
 * the supervisor starts a fresh one. */
static void engine_hung(bw_link *l, uint64_t epoch, uint32_t pid, uint64_t silent_ms)
{
    char why[96];
    snprintf(why, sizeof(why), "no HELLO for %.1f s (stopped or hung)", (double)silent_ms / 1000.0);
    pthread_mutex_lock(&l->mu);
    uint32_t sub = epoch == l->epoch ? l->engine_pipe : l->drain_pipe;
    pthread_mutex_unlock(&l->mu);
    lose(l, epoch, why);
    cut_pipes(l, sub, pid);
    if (pid) l->ev.hung(l->ev.ctx, pid);
}

static void on_watch(h2o_timeout_entry_t *e)
{
    bw_link *l = H2O_STRUCT_FROM_MEMBER(bw_link, watch, e);
    uint64_t limit = (uint64_t)(l->hello_timeout_s * 1000.0), now = now_ms();
    if (limit && !l->stopping) {
        if (l->drain_epoch && l->drain_epoch != l->epoch && now - l->drain_hello_ms > limit)
            engine_hung(l, l->drain_epoch, l->drain_pid, now - l->drain_hello_ms);
        int up = l->state == BW_LINK_LOADING || l->state == BW_LINK_READY || l->state == BW_LINK_DRAINING;
        if (up && now - l->hello_ms > limit) engine_hung(l, l->epoch, l->hello.pid, now - l->hello_ms);
    }
    h2o_timeout_link(l->loop, &l->watch_to, &l->watch);
    report(l);
}

static void on_pipe_event(h2o_socket_t *sock, const char *err)
{
    bw_link *l = sock->data;
    (void)err;
    uint64_t v;
    ssize_t r = read(l->evfd, &v, sizeof(v));
    (void)r;
    pthread_mutex_lock(&l->mu);
    int lost = l->engine_pipe_lost, drain_lost = l->drain_pipe_lost;
    l->engine_pipe_lost = l->drain_pipe_lost = 0;
    pthread_mutex_unlock(&l->mu);
    if (drain_lost) lose(l, l->drain_epoch, "its connection closed");
    if (lost) lose(l, l->epoch, "its connection closed");
    report(l);
}

static void on_hello(bw_link *l, const bw_proto_msg *m, nng_pipe p)
{
    uint32_t id = nng_pipe_id(p);
    if (is_gone(l, m->h.epoch)) return;
    if (l->drain_epoch && m->h.epoch == l->drain_epoch && m->h.epoch != l->epoch) {
        l->drain_hello_ms = now_ms(); /* a draining engine that has been replaced only finishes its jobs */
        return;
    }
    int alive = 0;
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < l->n_live; i++) alive |= l->live[i] == id;
    pthread_mutex_unlock(&l->mu);
    if (!alive) return; /* queued before its pipe died: that engine is gone already */

    if (m->h.epoch != l->epoch) {
        /* a draining engine stays; a current one that did not drain was restarted under us */
        if (l->epoch && l->epoch != l->drain_epoch) lose(l, l->epoch, "a new engine epoch appeared");
        l->epoch = m->h.epoch;
        l->epochs_seen++;
        bw_log_info("engine epoch %016llx (pid %u, %s, model %s) connected", (unsigned long long)m->h.epoch,
                    m->u.hello.pid, m->u.hello.backend, m->u.hello.model_id);
    }
    pthread_mutex_lock(&l->mu);
    l->engine_pipe = id;
    pthread_mutex_unlock(&l->mu);
    l->hello_ms = now_ms();
    if (l->drain_epoch == l->epoch) l->drain_hello_ms = l->hello_ms;
    enum bw_link_state prev = l->state;
    l->hello = m->u.hello;
    switch (m->u.hello.state) {
    case BW_ENGINE_LOADING: l->state = BW_LINK_LOADING; break;
    case BW_ENGINE_READY: l->state = l->drain_epoch == l->epoch ? BW_LINK_DRAINING : BW_LINK_READY; break;
    default: start_drain(l); break;
    }
    if (l->state == BW_LINK_READY) {
        if (prev != BW_LINK_READY)
            bw_log_info("engine ready: %u slots, context %u", l->hello.slots_total, l->hello.n_ctx);
        l->pending_ready = 1;
    }
}

/* An engine that answers a job with ENGINE_SHUTDOWN is exiting: it is sent nothing new from here on, as
 * if it had announced a drain (its HELLO saying so may come later). */
static void note_shutdown(bw_link *l, const bw_proto_msg *m)
{
    if (m->h.type != BW_MSG_ERROR || m->u.error.code != BW_PERR_SHUTDOWN || l->stopping) return;
    if (m->h.epoch == l->epoch && l->state == BW_LINK_READY) start_drain(l);
}

static void dispatch(bw_link *l, const uint8_t *body, size_t len, nng_pipe p)
{
    bw_proto_msg m;
    char err[200];
    int rc = bw_proto_decode(body, len, &m, err, sizeof(err));
    if (rc == BW_PROTO_OK && m.h.type >= BW_MSG_SUBMIT) {
        rc = BW_PROTO_ETYPE;
        snprintf(err, sizeof(err), "%s is a front-to-engine message", bw_proto_type_name(m.h.type));
    }
    if (rc != BW_PROTO_OK) {
        l->bad++;
        uint64_t now = bw_clock_mono_ns();
        if (now - l->last_bad_log_ns > 1000000000ull) { /* one line a second at most */
            bw_log_warn("dropped an invalid engine message (%lu so far): %s", l->bad, err);
            l->last_bad_log_ns = now;
        }
        return;
    }
    if (m.h.type == BW_MSG_HELLO) {
        on_hello(l, &m, p);
        return;
    }
    if (m.h.type == BW_MSG_BYE) {
        if (m.h.epoch == l->epoch || m.h.epoch == l->drain_epoch) lose(l, m.h.epoch, "it said BYE");
        return;
    }
    note_shutdown(l, &m);
    l->ev.msg(l->ev.ctx, &m);
}

static void on_readable(h2o_socket_t *sock, const char *err)
{
    bw_link *l = sock->data;
    (void)err;
    /* Bounded so a flood cannot starve HTTP; the fd stays readable while messages remain. */
    for (int i = 0; i < 4096; i++) {
        nng_msg *msg;
        int rv = nng_recvmsg(l->sub, &msg, NNG_FLAG_NONBLOCK);
        if (rv == NNG_EAGAIN) break;
        if (rv != 0) {
            bw_log_error("receiving from the engine: %s", nng_strerror(rv));
            break;
        }
        dispatch(l, nng_msg_body(msg), nng_msg_len(msg), nng_msg_get_pipe(msg));
        nng_msg_free(msg);
        report(l);
    }
}

static h2o_socket_t *watch_fd(bw_link *l, int fd, h2o_socket_cb cb)
{
    h2o_socket_t *s = h2o_evloop_socket_create(l->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    s->data = l;
    h2o_socket_read_start(s, cb);
    return s;
}

/* Listens on ipc://path with the socket file 0600: only our own user (the engine's) may connect. */
static int listen_private(nng_socket sock, const char *path)
{
    char url[160];
    nng_listener lst;
    int rv;
    snprintf(url, sizeof(url), "ipc://%s", path);
    if ((rv = nng_listener_create(&lst, sock, url)) ||
        (rv = nng_listener_set_int(lst, NNG_OPT_IPC_PERMISSIONS, 0600)) || (rv = nng_listener_start(lst, 0)))
        return rv;
    return 0;
}

bw_link *bw_link_create(const bw_link_config *c, char *err, size_t errlen)
{
    bw_link *l = calloc(1, sizeof(*l));
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->loop = c->loop;
    l->ev = c->ev;
    l->hello_timeout_s = c->hello_timeout_s;
    l->supervised = c->supervised;
    pthread_mutex_init(&l->mu, NULL);
    snprintf(l->jobs_path, sizeof(l->jobs_path), "%s/jobs.ipc", c->rundir);
    snprintf(l->tokens_path, sizeof(l->tokens_path), "%s/tokens.ipc", c->rundir);
    int rv, fd;
    const char *what = "opening sockets";
    if ((rv = nng_push0_open(&l->push)) || (rv = nng_sub0_open(&l->sub))) goto fail;
    what = "setting socket options";
    int recvbuf = c->sub_buffer > 0 ? c->sub_buffer : BUFFER_MSGS;
    /* A full SUB queue drops the newest message rather than the oldest: a REPLAY burst then delivers its
     * first messages, which are the ones a repair needs, so repair makes progress under any loss. */
    if ((rv = nng_socket_set_int(l->push, NNG_OPT_SENDBUF, BUFFER_MSGS)) ||
        (rv = nng_socket_set_int(l->sub, NNG_OPT_RECVBUF, recvbuf)) ||
        (rv = nng_socket_set_bool(l->sub, NNG_OPT_SUB_PREFNEW, false)) ||
        (rv = nng_socket_set_size(l->sub, NNG_OPT_RECVMAXSZ, BW_PROTO_MAX_MSG)) ||
        (rv = nng_socket_set(l->sub, NNG_OPT_SUB_SUBSCRIBE, "", 0)))
        goto fail;
    what = "registering pipe callbacks";
    if ((rv = nng_pipe_notify(l->sub, NNG_PIPE_EV_ADD_POST, on_pipe, l)) ||
        (rv = nng_pipe_notify(l->sub, NNG_PIPE_EV_REM_POST, on_pipe, l)) ||
        (rv = nng_pipe_notify(l->push, NNG_PIPE_EV_ADD_POST, on_push_pipe, l)) ||
        (rv = nng_pipe_notify(l->push, NNG_PIPE_EV_REM_POST, on_push_pipe, l)))
        goto fail;
    what = l->jobs_path;
    if ((rv = listen_private(l->push, l->jobs_path))) goto fail;
    what = l->tokens_path;
    if ((rv = listen_private(l->sub, l->tokens_path))) goto fail;
    what = "getting the receive fd";
    if ((rv = nng_socket_get_int(l->sub, NNG_OPT_RECVFD, &fd))) goto fail;
    l->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->evfd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        return NULL;
    }
    l->rx_sock = watch_fd(l, fd, on_readable);
    l->ev_sock = watch_fd(l, l->evfd, on_pipe_event);
    h2o_timeout_init(l->loop, &l->watch_to, WATCH_MS);
    l->watch.cb = on_watch;
    h2o_timeout_link(l->loop, &l->watch_to, &l->watch);
    return l;
fail:
    snprintf(err, errlen, "engine sockets: %s: %s", what, nng_strerror(rv));
    /* the sockets are left open: closing them is what nng 1.5.2 may hang on, and we are about to exit */
    return NULL;
}

void bw_link_shutdown(bw_link *l) { l->stopping = 1; }

void bw_link_remove_paths(bw_link *l)
{
    unlink(l->jobs_path);
    unlink(l->tokens_path);
}

int bw_link_send(bw_link *l, bw_proto_msg *m)
{
    if (!m->h.epoch) m->h.epoch = l->epoch;
    m->h.mono_ns = bw_clock_mono_ns();
    m->h.real_ns = bw_clock_real_ns();
    size_t n = bw_proto_encoded_size(m);
    nng_msg *msg;
    if (n == 0 || nng_msg_alloc(&msg, n) != 0) return -1;
    if (bw_proto_encode(m, nng_msg_body(msg), n) != (long)n || nng_sendmsg(l->push, msg, NNG_FLAG_NONBLOCK) != 0) {
        nng_msg_free(msg);
        return -1;
    }
    return 0;
}

enum bw_link_state bw_link_state(const bw_link *l) { return l->state; }

const char *bw_link_state_name(const bw_link *l)
{
    switch (l->state) {
    case BW_LINK_NONE: return l->supervised ? "starting" : "down";
    case BW_LINK_LOADING: return "loading";
    case BW_LINK_READY: return "ready";
    case BW_LINK_DRAINING: return "draining";
    case BW_LINK_LOST: return l->supervised && !l->stopping ? "restarting" : "down";
    }
    return "down";
}

uint64_t bw_link_epoch(const bw_link *l) { return l->epoch; }
const bw_proto_hello *bw_link_hello(const bw_link *l) { return &l->hello; }
unsigned bw_link_epochs_seen(const bw_link *l) { return l->epochs_seen; }
unsigned long bw_link_bad_messages(const bw_link *l) { return l->bad; }

struct json_t *bw_link_model_json(const bw_link *l)
{
    const bw_proto_hello *h = bw_link_hello(l);
    json_t *types = json_array();
    for (const char *p = h->weight_types; types && *p;) {
        size_t n = strcspn(p, ",");
        if (n) json_array_append_new(types, json_stringn(p, n));
        p += n + (p[n] == ',');
    }
    return json_pack("{s:s,s:o}", "architecture", h->arch, "weight_types", types);
}
