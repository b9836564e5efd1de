/* The heartbeat to the hive (SPEC §3.5): POST <hive>/v1/heartbeat with the /info document and a health
 * status, first when the engine is first ready, then every --heartbeat-interval seconds, and at once when
 * the status changes (degraded while the engine is down or restarting), so the hive need not poll.
 *
 * Owns: the schedule (on the loop thread) and the HTTP client (libcurl on a thread of its own, so a hive
 * that is down or slow can never stall the event loop). Only the latest beat waits to be sent: a slow
 * hive gets fresh news, never a backlog. Never fatal: failures are logged and the next beat retries. */
#ifndef BW_FRONT_HEARTBEAT_H
#define BW_FRONT_HEARTBEAT_H

#include <stddef.h>

#include "frontend/front.h"

/* Starts the schedule and the sender thread for f->opts->hive_url; NULL with a reason when the thread
 * or libcurl cannot be set up. */
bw_heartbeat *bw_heartbeat_start(bw_front *f, char *err, size_t errlen);

#endif
