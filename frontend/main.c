/* beeworker-front: wires the modules together, runs the one event loop, and shuts down in bounded time.
 *
 * Wiring: the modules depend on each other one way (link and metrics at the bottom, then jobs, then sse,
 * then the handlers and the server). What a lower module reports upwards goes through callbacks set here:
 * the link's engine events reach the job table, and the job table reaches the engine through the link.
 *
 * Shutdown (SIGTERM/SIGINT): stop accepting, SIGTERM the supervised engine (its running jobs end with an
 * error event and it says BYE), end what is left, give the last events ~100 ms to reach the clients,
 * remove the ipc files and exit. nng sockets are never closed (SPEC §2: nng_close can hang). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/notify.h"
#include "common/quit.h"
#include "common/signals.h"
#include "frontend/auth.h"
#include "frontend/front.h"
#include "frontend/heartbeat.h"
#include "frontend/jobs.h"
#include "frontend/link.h"
#include "frontend/metrics.h"
#include "frontend/model_id.h"
#include "frontend/routes.h"
#include "frontend/server.h"
#include "frontend/sse.h"
#include "frontend/supervisor.h"

#define TICK_MS 50
#define ENGINE_EXIT_GRACE_MS 2400 /* the engine exits within 2 s of SIGTERM; the pair within 3 s */
#define FLUSH_MS 100

static int sig_fds[2] = {-1, -1};

static struct {
    bw_front f;
    h2o_timeout_t tick_to;
    h2o_timeout_entry_t tick;
    h2o_socket_t *sig_sock; /* the evloop refers to it only from the kernel's epoll set */
    char rundir[128];
    int rundir_is_temp;
    uint64_t stop_deadline_ms, flush_until_ms;
    int jobs_ended, done;
} g;

static uint64_t now_ms(void) { return bw_clock_mono_ns() / 1000000ull; }

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char c = (unsigned char)sig;
    ssize_t w = write(sig_fds[1], &c, 1);
    (void)w;
    errno = saved;
}

static void end_remaining_jobs(void)
{
    if (g.jobs_ended) return;
    g.jobs_ended = 1;
    bw_jobs_fail_all(g.f.jobs, "SHUTTING_DOWN", "the worker is shutting down");
    g.flush_until_ms = now_ms() + FLUSH_MS;
}

static void begin_shutdown(void)
{
    if (g.f.stopping) {
        /* a second signal: do not wait any longer */
        if (g.f.sup) bw_sup_kill(g.f.sup);
        g.done = 1;
        return;
    }
    bw_log_info("shutting down");
    bw_notify_stopping("draining");
    g.f.stopping = 1;
    bw_jobs_shutdown(g.f.jobs);
    bw_link_shutdown(g.f.link);
    bw_server_stop_listening(&g.f);
    g.stop_deadline_ms = now_ms() + ENGINE_EXIT_GRACE_MS;
    if (g.f.sup && bw_sup_pid(g.f.sup)) bw_sup_terminate(g.f.sup);
    else end_remaining_jobs();
}

static void on_signal_readable(h2o_socket_t *sock, const char *err)
{
    (void)sock, (void)err;
    unsigned char buf[64];
    ssize_t n;
    while ((n = read(sig_fds[0], buf, sizeof(buf))) > 0)
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == SIGCHLD) {
                if (g.f.sup) bw_sup_reap(g.f.sup, g.f.stopping);
            } else {
                begin_shutdown();
            }
        }
}

static void on_tick(h2o_timeout_entry_t *e)
{
    uint64_t t = now_ms();
    bw_notify_watchdog(); /* from this timer: a blocked event loop stops the pings */
    if (g.f.sup) {
        bw_sup_reap(g.f.sup, g.f.stopping); /* SIGCHLD can coalesce; polling by PID is cheap */
        if (!g.f.stopping) bw_sup_tick(g.f.sup);
    }
    if (g.f.stopping) {
        if (g.f.sup && bw_sup_pid(g.f.sup) && t >= g.stop_deadline_ms) {
            bw_log_warn("engine did not exit in time; killing pid %d", (int)bw_sup_pid(g.f.sup));
            bw_sup_kill(g.f.sup);
        }
        if (!g.f.sup || !bw_sup_pid(g.f.sup)) end_remaining_jobs();
        if (g.jobs_ended && t >= g.flush_until_ms) g.done = 1;
    }
    h2o_timeout_link(g.f.loop, &g.tick_to, e);
}

/* Whoever can write the run directory can replace jobs.ipc or tokens.ipc and have the front adopt an
 * engine of their own: it must be a real directory (not a symlink) owned by us and writable by no one
 * else. */
static int check_rundir(const char *dir, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(dir, &st) != 0) {
        snprintf(err, errlen, "cannot use run directory '%s': %s", dir, strerror(errno));
        return -1;
    }
    const char *why = NULL;
    if (S_ISLNK(st.st_mode)) why = "it is a symbolic link";
    else if (!S_ISDIR(st.st_mode)) why = "it is not a directory";
    else if (st.st_uid != geteuid()) why = "it is owned by another user";
    else if (st.st_mode & (S_IWGRP | S_IWOTH)) why = "it is writable by group or others";
    if (why) {
        snprintf(err, errlen,
                 "refusing run directory '%s': %s (it must be a directory of uid %u with mode 0700 "
                 "or 0750)",
                 dir, why, (unsigned)geteuid());
        return -1;
    }
    return 0;
}

static int setup_rundir(const bw_front_opts *o, char *err, size_t errlen)
{
    if (o->rundir) {
        snprintf(g.rundir, sizeof(g.rundir), "%s", o->rundir);
        if (mkdir(g.rundir, 0700) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create --rundir '%s': %s", g.rundir, strerror(errno));
            return -1;
        }
        return check_rundir(g.rundir, err, errlen);
    }
    const char *base = getenv("RUNTIME_DIRECTORY"); /* systemd RuntimeDirectory= */
    if (base && base[0] && strlen(base) < 60 && !strchr(base, ':')) {
        snprintf(g.rundir, sizeof(g.rundir), "%s", base);
        return check_rundir(g.rundir, err, errlen);
    }
    snprintf(g.rundir, sizeof(g.rundir), "/tmp/beeworker-XXXXXX");
    if (!mkdtemp(g.rundir)) {
        snprintf(err, errlen, "cannot create a run directory in /tmp: %s", strerror(errno));
        return -1;
    }
    g.rundir_is_temp = 1;
    return 0;
}

static void cleanup_rundir(void)
{
    if (g.f.link) bw_link_remove_paths(g.f.link);
    if (g.rundir_is_temp) rmdir(g.rundir);
}

/* ---- the job table's engine: the link ---- */

static int engine_send(void *ctx, bw_proto_msg *m) { return bw_link_send(((bw_front *)ctx)->link, m); }

static uint64_t engine_ready_epoch(void *ctx)
{
    const bw_link *l = ((bw_front *)ctx)->link;
    return bw_link_state(l) == BW_LINK_READY ? bw_link_epoch(l) : 0;
}

static const bw_proto_hello *engine_hello(void *ctx) { return bw_link_hello(((bw_front *)ctx)->link); }
static const char *engine_model_id(void *ctx) { return bw_model_id(ctx); }

/* ---- the link's events: to the job table, and a hung engine to the supervisor ---- */

static void on_engine_msg(void *ctx, const bw_proto_msg *m) { bw_jobs_on_msg(((bw_front *)ctx)->jobs, m); }
static void on_engine_lost(void *ctx, uint64_t epoch) { bw_jobs_engine_lost(((bw_front *)ctx)->jobs, epoch); }
static void on_engine_ready(void *ctx) { bw_jobs_engine_ready(((bw_front *)ctx)->jobs); }

static void on_engine_hung(void *ctx, uint32_t pid)
{
    bw_front *f = ctx;
    if (f->sup && bw_sup_pid(f->sup) == (pid_t)pid) bw_sup_kill_hung(f->sup);
}

/* Metrics, the job table, the streams and the link, each with the values and callbacks it needs. */
static int create_core(bw_front *f, char *err, size_t errlen)
{
    const bw_front_opts *o = f->opts;
    size_t n_labels;
    const char *const *labels = bw_route_labels(&n_labels);
    f->metrics = bw_metrics_create(labels, n_labels); /* NULL (out of memory) only loses the counters */
    bw_sse_init(f->loop, f->metrics, o->reconnect_grace_s);
    bw_jobs_config jc = {
        .loop = f->loop,
        .engine_wait_s = o->engine_wait_s,
        .reconnect_grace_s = o->reconnect_grace_s,
        .retain_s = o->retain_s,
        .open_timeout_s = o->open_timeout_s,
        .queue_size = o->queue_size,
        .stream_buffer = o->stream_buffer,
        .metrics = f->metrics,
        .engine = {f, engine_send, engine_ready_epoch, engine_hello, engine_model_id},
    };
    if (!(f->jobs = bw_jobs_create(&jc))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    bw_link_config lc = {
        .loop = f->loop,
        .rundir = f->rundir,
        .hello_timeout_s = o->engine_hello_timeout_s,
        .sub_buffer = o->test_sub_buffer,
        .supervised = f->sup != NULL,
        .ev = {f, on_engine_msg, on_engine_lost, on_engine_ready, on_engine_hung},
    };
    f->link = bw_link_create(&lc, err, errlen);
    return f->link ? 0 : -1;
}

int main(int argc, char **argv)
{
    static bw_front_opts opts;
    bw_log_init("front");
    int rc = bw_opts_parse(argc, argv, &opts);
    if (rc) return rc > 0 ? 0 : 2;

    char err[512];
    bw_front *f = &g.f;
    f->opts = &opts;
    f->auth = bw_auth_create(&opts, err, sizeof(err));
    if (!f->auth) {
        fprintf(stderr, "beeworker-front: %s\n", err);
        return 2;
    }
    static const int sigs[] = {SIGTERM, SIGINT, SIGCHLD};
    if (bw_signals_pipe(sig_fds, on_signal, sigs, (int)(sizeof sigs / sizeof sigs[0])) != 0) {
        fprintf(stderr, "beeworker-front: cannot set up signal handling: %s\n", strerror(errno));
        return 1;
    }
    if (setup_rundir(&opts, err, sizeof(err)) != 0) {
        fprintf(stderr, "beeworker-front: %s\n", err);
        return 1;
    }
    f->rundir = g.rundir;
    f->loop = h2o_evloop_create();
    if (opts.spawn_engine && !(f->sup = bw_sup_create(&opts, g.rundir, err, sizeof(err)))) {
        fprintf(stderr, "beeworker-front: %s\n", err);
        cleanup_rundir();
        return 1;
    }
    if (create_core(f, err, sizeof(err)) != 0) {
        fprintf(stderr, "beeworker-front: %s\n", err);
        cleanup_rundir();
        bw_quit(1);
    }
    if (bw_server_start(f, err, sizeof(err)) != 0) {
        fprintf(stderr, "beeworker-front: %s\n", err);
        cleanup_rundir();
        bw_quit(1);
    }
    if (opts.hive_url && !(f->heartbeat = bw_heartbeat_start(f, err, sizeof(err)))) {
        fprintf(stderr, "beeworker-front: %s\n", err);
        cleanup_rundir();
        bw_quit(1);
    }
    g.sig_sock = h2o_evloop_socket_create(f->loop, sig_fds[0], H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(g.sig_sock, on_signal_readable);
    h2o_timeout_init(f->loop, &g.tick_to, TICK_MS);
    g.tick.cb = on_tick;
    h2o_timeout_link(f->loop, &g.tick_to, &g.tick);

    bw_log_info("beeworker-front %s listening on %s:%d (%s, HTTP/1.1%s), run directory %s", BW_VERSION,
                opts.bind ? opts.bind : (opts.local_mode ? "127.0.0.1" : "0.0.0.0"), f->port,
                opts.local_mode ? "local mode, no auth" : "bearer token required", opts.http2 ? " + h2c" : "",
                g.rundir);
    bw_notify_ready("listening");
    if (f->sup && bw_sup_start(f->sup) != 0) bw_log_error("the engine did not start; retrying on the next tick");

    while (!g.done) h2o_evloop_run(f->loop, TICK_MS);

    cleanup_rundir();
    bw_log_info("stopped");
    /* no nng_close, no h2o teardown: nng 1.5.2 may hang closing a SUB socket with live pipes */
    bw_quit(0);
}
