/* beeworker-engine as a daemon (SPEC §1, §2): dials the front's ipc sockets in --rundir, announces itself
 * with HELLO beacons, loads the model, and serves jobs through the scheduler until SIGTERM.
 *
 * Owns: the engine's nng sockets, the epoch, the beacon thread, message validation on the way in,
 * and the shutdown sequence (error events for running jobs, BYE, exit within 2 s without nng_close). */
#ifndef BW_ENGINE_DAEMON_H
#define BW_ENGINE_DAEMON_H

#include "engine/loader.h"

/* --drain: on the first SIGTERM/SIGINT, finish running jobs for up to `seconds` (0 = stop at once). */
void bw_daemon_set_drain(double seconds);

/* Runs until SIGTERM/SIGINT; returns the process exit status (it may also _exit directly). */
int bw_daemon_main(const bw_engine_opts *o);

#endif
