/* The engine daemon; see daemon.h.
 *
 * Threads: the main thread loads the model, then runs the scheduler and reads jobs; a beacon thread
 * publishes HELLO every 200 ms and at once when a pipe to the front comes up, from the start (so the
 * front sees `loading` with progress) to the end. nng sockets are thread-safe for send. Signals only
 * count in a flag and write to a self-pipe that the main loop polls.
 *
 * Drain (--drain S): the first SIGTERM turns the state to `draining`; running and queued jobs go on for up
 * to S seconds while every new SUBMIT is answered NOT_TAKEN, so the front holds it for the next engine.
 * Whatever is still running at the limit (or at a second signal) ends with ENGINE_SHUTDOWN, which the
 * front resumes elsewhere. The PULL socket stays open meanwhile: CANCEL and REPLAY must still reach us.
 * Since the front's PUSH reaches every engine that dials it, a replacement started during the drain may
 * receive messages meant for us and we may receive its: every front message carries the epoch it is
 * meant for, and one for another epoch is refused (SUBMIT) or ignored (CANCEL, REPLAY). */
#include "engine/daemon.h"

#include <errno.h>
#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pubsub0/pub.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/notify.h"
#include "common/quit.h"
#include "common/signals.h"
#include "engine/scheduler.h"
#include "proto/bw_proto.h"

#define BEACON_MS 200
#define BUFFER_MSGS 8192
#define LINGER_MS 20 /* PUB has no linger in nng 1.5.2: give the last messages time to leave */

static struct {
    nng_socket pub, pull;
    uint64_t epoch;
    atomic_int pub_pipes, pull_pipes;
    atomic_int state; /* enum bw_proto_engine_state */
    atomic_uint progress_milli;
    atomic_uint slots_total, n_ctx;
    atomic_int stop; /* signals received */
    double drain_s;
    int draining;
    atomic_int wake; /* a pipe came up: beacon now */
    atomic_uint_fast64_t hello_seq;
    bw_sched *sched; /* set once loaded; busy/queued are read through atomics */
    char model_id[BW_PROTO_MAX_NAME + 1];
    char backend[BW_PROTO_MAX_NAME + 1];
    char arch[BW_PROTO_MAX_NAME + 1];
    char weight_types[BW_PROTO_MAX_NAME + 1];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int sig_fds[2];
} d;

static void on_signal(int sig)
{
    (void)sig;
    int saved = errno;
    atomic_fetch_add(&d.stop, 1);
    ssize_t w = write(d.sig_fds[1], "x", 1);
    (void)w;
    errno = saved;
}

static void publish(void *ctx, const uint8_t *buf, size_t len)
{
    (void)ctx;
    nng_msg *m;
    if (nng_msg_alloc(&m, len) != 0) return;
    memcpy(nng_msg_body(m), buf, len);
    /* PUB never blocks: with no subscriber the message is dropped, which REPLAY and engine-loss cover */
    if (nng_sendmsg(d.pub, m, NNG_FLAG_NONBLOCK) != 0) nng_msg_free(m);
}

static void send_simple(uint16_t type)
{
    bw_proto_msg m;
    bw_proto_init(&m, type, d.epoch, NULL, atomic_fetch_add(&d.hello_seq, 1));
    if (type == BW_MSG_HELLO) {
        bw_proto_hello *h = &m.u.hello;
        h->state = (uint8_t)atomic_load(&d.state);
        h->progress = (float)atomic_load(&d.progress_milli) / 1000.0f;
        h->slots_total = atomic_load(&d.slots_total);
        h->n_ctx = atomic_load(&d.n_ctx);
        h->pid = (uint32_t)getpid();
        if (d.sched) {
            h->slots_busy = bw_sched_busy(d.sched);
            h->queue_depth = bw_sched_queued(d.sched);
            if (h->slots_busy > h->slots_total) h->slots_busy = h->slots_total;
        }
        snprintf(h->model_id, sizeof(h->model_id), "%s", d.model_id);
        snprintf(h->backend, sizeof(h->backend), "%s", d.backend);
        snprintf(h->arch, sizeof(h->arch), "%s", d.arch);
        snprintf(h->weight_types, sizeof(h->weight_types), "%s", d.weight_types);
    }
    m.h.mono_ns = bw_clock_mono_ns();
    m.h.real_ns = bw_clock_real_ns();
    uint8_t buf[1024]; /* a HELLO with four names of BW_PROTO_MAX_NAME is under 700 bytes */
    long n = bw_proto_encode(&m, buf, sizeof(buf));
    if (n > 0) publish(NULL, buf, (size_t)n);
}

static void on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    atomic_int *count = arg;
    (void)p;
    if (ev == NNG_PIPE_EV_ADD_POST) {
        atomic_fetch_add(count, 1);
        pthread_mutex_lock(&d.mu);
        atomic_store(&d.wake, 1);
        pthread_cond_signal(&d.cv);
        pthread_mutex_unlock(&d.mu);
    } else if (ev == NNG_PIPE_EV_REM_POST) {
        atomic_fetch_sub(count, 1);
    }
}

static void *beacon_thread(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&d.mu);
        if (!atomic_load(&d.wake)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += BEACON_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&d.cv, &d.mu, &ts);
        }
        atomic_store(&d.wake, 0);
        pthread_mutex_unlock(&d.mu);
        /* the front may only submit once its jobs can reach us: both pipes must be up */
        if (atomic_load(&d.pub_pipes) > 0 && atomic_load(&d.pull_pipes) > 0) send_simple(BW_MSG_HELLO);
        if (atomic_load(&d.stop) && atomic_load(&d.state) == BW_ENGINE_LOADING) {
            /* SIGTERM while the main thread is still inside the model load: leave now */
            atomic_store(&d.state, BW_ENGINE_DRAINING);
            send_simple(BW_MSG_HELLO);
            send_simple(BW_MSG_BYE);
            usleep(LINGER_MS * 1000);
            bw_quit(0);
        }
    }
    return NULL;
}

static void on_progress(float v, void *ctx)
{
    (void)ctx;
    if (v < 0) v = 0;
    if (v > 1) v = 1;
    atomic_store(&d.progress_milli, (unsigned)(v * 1000.0f));
}

static int open_sockets(const char *rundir, char *err, size_t errlen)
{
    char url[160];
    int rv;
    const char *what = "opening sockets";
    if ((rv = nng_pub0_open(&d.pub)) || (rv = nng_pull0_open(&d.pull))) goto fail;
    what = "setting socket options";
    nng_socket socks[2] = {d.pub, d.pull};
    for (int i = 0; i < 2; i++)
        if ((rv = nng_socket_set_ms(socks[i], NNG_OPT_RECONNMINT, 10)) ||
            (rv = nng_socket_set_ms(socks[i], NNG_OPT_RECONNMAXT, 100)))
            goto fail;
    if ((rv = nng_socket_set_int(d.pub, NNG_OPT_SENDBUF, BUFFER_MSGS)) ||
        (rv = nng_socket_set_int(d.pull, NNG_OPT_RECVBUF, BUFFER_MSGS)) ||
        (rv = nng_socket_set_size(d.pull, NNG_OPT_RECVMAXSZ, BW_PROTO_MAX_MSG)))
        goto fail;
    what = "registering pipe callbacks";
    if ((rv = nng_pipe_notify(d.pub, NNG_PIPE_EV_ADD_POST, on_pipe, &d.pub_pipes)) ||
        (rv = nng_pipe_notify(d.pub, NNG_PIPE_EV_REM_POST, on_pipe, &d.pub_pipes)) ||
        (rv = nng_pipe_notify(d.pull, NNG_PIPE_EV_ADD_POST, on_pipe, &d.pull_pipes)) ||
        (rv = nng_pipe_notify(d.pull, NNG_PIPE_EV_REM_POST, on_pipe, &d.pull_pipes)))
        goto fail;
    /* non-blocking dials retry in the background, so the front may start before or after us */
    what = "dialing jobs.ipc";
    snprintf(url, sizeof(url), "ipc://%s/jobs.ipc", rundir);
    if ((rv = nng_dial(d.pull, url, NULL, NNG_FLAG_NONBLOCK))) goto fail;
    what = "dialing tokens.ipc";
    snprintf(url, sizeof(url), "ipc://%s/tokens.ipc", rundir);
    if ((rv = nng_dial(d.pub, url, NULL, NNG_FLAG_NONBLOCK))) goto fail;
    return 0;
fail:
    snprintf(err, errlen, "front sockets in %s: %s: %s", rundir, what, nng_strerror(rv));
    return -1;
}

void bw_daemon_set_drain(double seconds) { d.drain_s = seconds > 0 ? seconds : 0; }

static void handle_message(nng_msg *msg)
{
    bw_proto_msg m;
    char err[200];
    int rc = bw_proto_decode(nng_msg_body(msg), nng_msg_len(msg), &m, err, sizeof(err));
    if (rc != BW_PROTO_OK) {
        bw_log_warn("dropped an invalid message from the front: %s", err);
        return;
    }
    int mine = m.h.epoch == 0 || m.h.epoch == d.epoch; /* 0: a sender that does not address engines */
    switch (m.h.type) {
    case BW_MSG_SUBMIT:
        if (!mine) bw_sched_refuse(d.sched, m.h.job_id, BW_PERR_NOT_TAKEN, "the job was meant for another engine");
        else if (d.draining || atomic_load(&d.stop))
            bw_sched_refuse(d.sched, m.h.job_id, BW_PERR_NOT_TAKEN, "the engine is draining");
        else bw_sched_submit(d.sched, &m);
        break;
    case BW_MSG_CANCEL:
        if (mine) bw_sched_cancel(d.sched, m.h.job_id);
        break;
    case BW_MSG_REPLAY:
        if (mine) bw_sched_replay(d.sched, m.h.job_id, m.u.replay.from_seq);
        break;
    default: bw_log_warn("dropped a %s message: engines do not take it", bw_proto_type_name(m.h.type));
    }
}

/* Reads every message waiting; with timeout_ms > 0, first waits that long for one (or a signal). */
static void read_messages(int recv_fd, int timeout_ms)
{
    if (timeout_ms > 0) {
        struct pollfd p[2] = {{.fd = recv_fd, .events = POLLIN}, {.fd = d.sig_fds[0], .events = POLLIN}};
        if (poll(p, 2, timeout_ms) > 0 && (p[1].revents & POLLIN)) {
            char c[16]; /* consumed, or a drain that waits for jobs would spin on it */
            while (read(d.sig_fds[0], c, sizeof(c)) > 0) {
            }
        }
    }
    for (int i = 0; i < 4096; i++) {
        nng_msg *msg;
        int rv = nng_recvmsg(d.pull, &msg, NNG_FLAG_NONBLOCK);
        if (rv != 0) break;
        handle_message(msg);
        nng_msg_free(msg);
    }
}

static void shutdown_now(void)
{
    bw_log_info("shutting down: ending running jobs");
    bw_notify_stopping("draining");
    atomic_store(&d.state, BW_ENGINE_DRAINING);
    send_simple(BW_MSG_HELLO);
    if (d.sched) bw_sched_abort_all(d.sched, BW_PERR_SHUTDOWN, "the engine is shutting down");
    send_simple(BW_MSG_BYE);
    usleep(LINGER_MS * 1000);
    /* no nng_close: it can hang in nng 1.5.2; the kernel closes the sockets with the process */
    bw_quit(0);
}

int bw_daemon_main(const bw_engine_opts *o)
{
    char err[512];
    if (!o->rundir || strlen(o->rundir) > 80) {
        fprintf(stderr, "beeworker-engine: --rundir must name a directory of at most 80 bytes\n");
        return 2;
    }
    pthread_mutex_init(&d.mu, NULL);
    pthread_cond_init(&d.cv, NULL);
    if (getrandom(&d.epoch, sizeof(d.epoch), 0) != (ssize_t)sizeof(d.epoch) || d.epoch == 0)
        d.epoch = bw_clock_real_ns() ^ ((uint64_t)getpid() << 32) ^ 1;
    static const int sigs[] = {SIGTERM, SIGINT};
    if (bw_signals_pipe(d.sig_fds, on_signal, sigs, (int)(sizeof sigs / sizeof sigs[0])) != 0) {
        fprintf(stderr, "beeworker-engine: pipe: %s\n", strerror(errno));
        return 1;
    }

    atomic_store(&d.state, BW_ENGINE_LOADING);
    snprintf(d.backend, sizeof(d.backend), "%s", o->backend ? o->backend : "cpu");
    if (open_sockets(o->rundir, err, sizeof(err)) != 0) {
        fprintf(stderr, "beeworker-engine: %s\n", err);
        return 1;
    }
    pthread_t beacon;
    if (pthread_create(&beacon, NULL, beacon_thread, NULL) != 0) {
        fprintf(stderr, "beeworker-engine: cannot start the beacon thread\n");
        return 1;
    }
    bw_log_info("engine epoch %016llx dialing %s", (unsigned long long)d.epoch, o->rundir);

    static bw_engine e;
    if (bw_engine_load(&e, o, on_progress, NULL, err, sizeof(err)) != 0) {
        bw_log_error("%s", err);
        fprintf(stderr, "beeworker-engine: %s\n", err);
        atomic_store(&d.state, BW_ENGINE_DRAINING);
        send_simple(BW_MSG_BYE);
        usleep(LINGER_MS * 1000);
        bw_quit(1);
    }
    bw_sched *sched = bw_sched_create(&e, d.epoch, publish, NULL, err, sizeof(err));
    if (!sched) {
        fprintf(stderr, "beeworker-engine: %s\n", err);
        bw_quit(1);
    }
    if (o->prefill_step_ms >= 0) bw_sched_set_prefill_step_ms(sched, o->prefill_step_ms);
    if (bw_sched_set_spec_max(sched, o->spec_max) != 0) {
        fprintf(stderr, "beeworker-engine: out of memory for --spec-max %d\n", o->spec_max);
        bw_quit(1);
    }
    bw_sched_set_spec_fixed(sched, o->spec_fixed);
    snprintf(d.model_id, sizeof(d.model_id), "%s", e.model.id);
    snprintf(d.backend, sizeof(d.backend), "%s", e.backend->ops->name);
    snprintf(d.arch, sizeof(d.arch), "%s", e.model.cfg.arch);
    snprintf(d.weight_types, sizeof(d.weight_types), "%s", e.model.weight_types);
    atomic_store(&d.slots_total, (unsigned)e.n_slots);
    atomic_store(&d.n_ctx, (unsigned)e.n_ctx);
    d.sched = sched;
    atomic_store(&d.state, BW_ENGINE_READY);
    /* READY only now: a unit that other units order after must not count as up while the model loads */
    bw_log_info("model loaded: %s on %s, %d slots, context %d", d.model_id, d.backend, e.n_slots, e.n_ctx);
    bw_notify_ready("serving");
    pthread_mutex_lock(&d.mu);
    atomic_store(&d.wake, 1); /* announce `ready` now rather than at the next beacon */
    pthread_cond_signal(&d.cv);
    pthread_mutex_unlock(&d.mu);

    int recv_fd;
    if (nng_socket_get_int(d.pull, NNG_OPT_RECVFD, &recv_fd) != 0) {
        fprintf(stderr, "beeworker-engine: cannot get the receive fd\n");
        bw_quit(1);
    }
    int active = 0;
    uint64_t drain_until = 0;
    for (;;) {
        bw_notify_watchdog(); /* from the scheduler loop itself: a stuck step stops the pings */
        int sigs = atomic_load(&d.stop);
        if (sigs && !d.draining) {
            if (d.drain_s <= 0 || sigs > 1 || bw_sched_active(sched) == 0) break;
            d.draining = 1;
            drain_until = bw_clock_mono_ns() + (uint64_t)(d.drain_s * 1e9);
            bw_log_info("draining: finishing %u jobs within %.1f s; new jobs go to the next engine",
                        bw_sched_active(sched), d.drain_s);
            bw_notify_stopping("draining");
            atomic_store(&d.state, BW_ENGINE_DRAINING);
            send_simple(BW_MSG_HELLO);
        }
        if (d.draining) {
            if (bw_sched_active(sched) == 0) {
                bw_log_info("drained: every job finished");
                break;
            }
            if (sigs > 1 || bw_clock_mono_ns() >= drain_until) {
                bw_log_warn("drain ended with %u jobs unfinished; the front resumes them elsewhere",
                            bw_sched_active(sched));
                break;
            }
        }
        read_messages(recv_fd, active ? 0 : BEACON_MS);
        active = bw_sched_step(sched);
        if (active < 0) active = (int)bw_sched_active(sched);
        /* The step's tokens woke the threads that carry them to the front (nng's, and the front's own
         * when it shares this CPU). The kernel lets a busy thread finish its slice before a woken one
         * runs, which held whole steps of tokens back by up to a scheduler tick (4 ms at 250 Hz;
         * tests/bench/bench_stream.py); yielding here hands the CPU over as soon as they are sent. */
        if (active > 0) sched_yield();
    }
    shutdown_now();
    return 0;
}
