/* Engine child supervision; see supervisor.h. Backoff doubles from 100 ms to 5 s and resets after the
 * engine has stayed up for 30 s, so a crash loop does not spin while a rare crash restarts at once. */
#include "frontend/supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/notify.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define STABLE_MS 30000
#define MAX_TRACKED_EXITS 1000 /* the upper bound of --engine-max-crashes */
#define MAX_ENV 1024

struct bw_sup {
    char bin[PATH_MAX];
    char *argv[32];
    char numbuf[5][16];
    pid_t pid;
    uint64_t started_ms, restart_at_ms;
    unsigned backoff_ms, restarts;
    int pending; /* a restart is scheduled */
    int gave_up;
    int max_crashes;
    uint64_t crash_window_ms;
    uint64_t exit_ms[MAX_TRACKED_EXITS]; /* ring of the last max_crashes exit times */
    unsigned n_exits;
    char *envp[MAX_ENV]; /* ours minus the service-manager variables, built before fork */
};

static uint64_t now_ms(void) { return bw_clock_mono_ns() / 1000000ull; }

static int find_engine(const bw_front_opts *o, char *out, size_t cap, char *err, size_t errlen)
{
    if (o->engine_bin) {
        if (access(o->engine_bin, X_OK) != 0) {
            snprintf(err, errlen, "--engine-bin '%s' is not executable: %s", o->engine_bin, strerror(errno));
            return -1;
        }
        snprintf(out, cap, "%s", o->engine_bin);
        return 0;
    }
    char self[PATH_MAX - 64]; /* leaves room for the suffix in `out` */
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        snprintf(err, errlen, "cannot find my own binary to locate beeworker-engine; pass --engine-bin");
        return -1;
    }
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash) *slash = '\0';
    /* the build tree (build/frontend → build/engine), then an installed layout (same directory) */
    const char *cands[] = {"%s/../engine/beeworker-engine", "%s/beeworker-engine"};
    for (size_t i = 0; i < 2; i++) {
        int w = snprintf(out, cap, cands[i], self);
        if (w > 0 && (size_t)w < cap && access(out, X_OK) == 0) return 0;
    }
    snprintf(err, errlen, "beeworker-engine not found next to %s; pass --engine-bin PATH", self);
    return -1;
}

/* Under a Type=notify unit the front's NOTIFY_SOCKET and WATCHDOG_* would reach the engine child; its
 * READY=1 and pings would then be refused by systemd (or, with NotifyAccess=all, be taken for the
 * front's). Only the front speaks for its unit. */
static void child_environment(bw_sup *s)
{
    static const char *drop[] = {
        "NOTIFY_SOCKET=", "WATCHDOG_PID=", "WATCHDOG_USEC=", "LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES="};
    extern char **environ;
    size_t k = 0;
    for (char **e = environ; *e && k + 1 < MAX_ENV; e++) {
        int keep = 1;
        for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
            if (strncmp(*e, drop[i], strlen(drop[i])) == 0) keep = 0;
        if (keep) s->envp[k++] = *e;
    }
    s->envp[k] = NULL;
}

/* Records an unexpected exit; 1 when max_crashes of them fall within the window. */
static int crash_limit_reached(bw_sup *s, uint64_t t)
{
    if (s->max_crashes <= 0) return 0;
    unsigned n = (unsigned)s->max_crashes;
    s->exit_ms[s->n_exits % n] = t;
    s->n_exits++;
    if (s->n_exits < n) return 0;
    uint64_t oldest = s->exit_ms[s->n_exits % n]; /* the n-th most recent exit */
    return t - oldest <= s->crash_window_ms;
}

bw_sup *bw_sup_create(const bw_front_opts *o, const char *rundir, char *err, size_t errlen)
{
    bw_sup *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (find_engine(o, s->bin, sizeof(s->bin), err, errlen)) {
        free(s);
        return NULL;
    }
    int k = 0;
    s->argv[k++] = s->bin;
    s->argv[k++] = "--model", s->argv[k++] = (char *)o->model;
    s->argv[k++] = "--backend", s->argv[k++] = (char *)o->backend;
    s->argv[k++] = "--rundir", s->argv[k++] = (char *)rundir;
    snprintf(s->numbuf[0], sizeof(s->numbuf[0]), "%d", o->device);
    s->argv[k++] = "--device", s->argv[k++] = s->numbuf[0];
    if (o->slots) {
        snprintf(s->numbuf[1], sizeof(s->numbuf[1]), "%d", o->slots);
        s->argv[k++] = "--slots", s->argv[k++] = s->numbuf[1];
    }
    if (o->threads) {
        snprintf(s->numbuf[2], sizeof(s->numbuf[2]), "%d", o->threads);
        s->argv[k++] = "--threads", s->argv[k++] = s->numbuf[2];
    }
    if (o->ctx) {
        snprintf(s->numbuf[3], sizeof(s->numbuf[3]), "%d", o->ctx);
        s->argv[k++] = "--ctx", s->argv[k++] = s->numbuf[3];
    }
    if (o->spec_max >= 0) {
        snprintf(s->numbuf[4], sizeof(s->numbuf[4]), "%d", o->spec_max);
        s->argv[k++] = "--spec-max", s->argv[k++] = s->numbuf[4];
    }
    s->argv[k] = NULL;
    s->backoff_ms = BACKOFF_MIN_MS;
    s->max_crashes = o->engine_max_crashes;
    s->crash_window_ms = (uint64_t)o->engine_crash_window_s * 1000u;
    child_environment(s);
    return s;
}

int bw_sup_start(bw_sup *s)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        bw_log_error("cannot start the engine: fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        /* the child must not outlive a front killed with SIGKILL */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(1);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        execve(s->bin, s->argv, s->envp);
        /* only async-signal-safe calls between fork and exec: the front has nng threads */
        static const char msg[] = "beeworker-front: cannot execute the engine binary\n";
        ssize_t w = write(2, msg, sizeof(msg) - 1);
        (void)w;
        _exit(127);
    }
    s->pid = pid;
    s->started_ms = now_ms();
    s->pending = 0;
    bw_log_info("started engine pid %d: %s", (int)pid, s->bin);
    return 0;
}

void bw_sup_reap(bw_sup *s, int stopping)
{
    if (!s->pid) return;
    int status;
    pid_t r = waitpid(s->pid, &status, WNOHANG);
    if (r != s->pid) return;
    if (WIFSIGNALED(status)) bw_log_warn("engine pid %d killed by signal %d", (int)s->pid, WTERMSIG(status));
    else bw_log_warn("engine pid %d exited with status %d", (int)s->pid, WEXITSTATUS(status));
    s->pid = 0;
    if (stopping) return;
    uint64_t t = now_ms();
    if (crash_limit_reached(s, t)) {
        s->gave_up = 1;
        s->pending = 0;
        bw_log_error("the engine exited %d times within %llu s: giving up (the front stays up and reports the "
                     "engine down; fix the cause, then restart beeworker-front)",
                     s->max_crashes, (unsigned long long)(s->crash_window_ms / 1000));
        bw_notify_status("engine down: it crashed %d times within %llu s", s->max_crashes,
                         (unsigned long long)(s->crash_window_ms / 1000));
        return;
    }
    if (t - s->started_ms > STABLE_MS) s->backoff_ms = BACKOFF_MIN_MS;
    s->restart_at_ms = t + s->backoff_ms;
    bw_log_info("restarting the engine in %u ms", s->backoff_ms);
    s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
    s->pending = 1;
}

void bw_sup_tick(bw_sup *s)
{
    if (s->pending && !s->pid && now_ms() >= s->restart_at_ms) {
        s->restarts++;
        if (bw_sup_start(s) != 0) {
            s->restart_at_ms = now_ms() + BACKOFF_MAX_MS;
            s->pending = 1;
        }
    }
}

void bw_sup_terminate(bw_sup *s)
{
    s->pending = 0;
    if (s->pid) kill(s->pid, SIGTERM);
}

void bw_sup_kill(bw_sup *s)
{
    if (!s->pid) return;
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

void bw_sup_kill_hung(bw_sup *s)
{
    if (!s->pid) return;
    bw_log_warn("killing the unresponsive engine pid %d; it will be restarted", (int)s->pid);
    kill(s->pid, SIGKILL); /* reaped (and restarted) through SIGCHLD like any other exit */
}

pid_t bw_sup_pid(const bw_sup *s) { return s->pid; }
unsigned bw_sup_restarts(const bw_sup *s) { return s->restarts; }
int bw_sup_gave_up(const bw_sup *s) { return s->gave_up; }
