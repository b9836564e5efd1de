/* --spawn-engine: the front starts beeworker-engine itself and restarts it with backoff when it exits
 * (SPEC §1), for a hive that spawns a single command. After --engine-max-crashes exits within
 * --engine-crash-window seconds it gives up, like systemd's start limit: the front stays up and reports
 * the engine down, so the hive sees it and no crash loop burns the GPU.
 *
 * Owns: the engine child process (by PID only), its argument list and the restart schedule. The child
 * gets PR_SET_PDEATHSIG so it cannot outlive a front that is killed. */
#ifndef BW_FRONT_SUPERVISOR_H
#define BW_FRONT_SUPERVISOR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "frontend/opts.h"

typedef struct bw_sup bw_sup;

/* Resolves the engine binary (--engine-bin, else next to argv0's binary); NULL with a reason. */
bw_sup *bw_sup_create(const bw_front_opts *o, const char *rundir, char *err, size_t errlen);
int bw_sup_start(bw_sup *s);
/* Reaps the child if it exited (call on SIGCHLD) and schedules a restart unless stopping. */
void bw_sup_reap(bw_sup *s, int stopping);
/* Restarts the engine when its backoff has passed (call periodically). */
void bw_sup_tick(bw_sup *s);
void bw_sup_terminate(bw_sup *s);  /* SIGTERM to the child */
void bw_sup_kill(bw_sup *s);       /* SIGKILL and wait: the last resort at shutdown */
void bw_sup_kill_hung(bw_sup *s);  /* SIGKILL an engine that stopped answering; reaped and restarted as a crash */
pid_t bw_sup_pid(const bw_sup *s); /* 0 when no child runs */
unsigned bw_sup_restarts(const bw_sup *s);
/* 1 once the supervisor stopped restarting a crashing engine: /health says the engine is down and the
 * heartbeat reports the worker unhealthy. */
int bw_sup_gave_up(const bw_sup *s);

#endif
