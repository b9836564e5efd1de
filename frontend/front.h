/* The front's composition root: built and wired in main.c, and what the HTTP side (server, handlers,
 * heartbeat, CORS) reaches the modules through. It holds pointers only; each module keeps its own state
 * behind an opaque type. The core modules (link, metrics, jobs, sse) never see it: each is created with
 * the plain values and callbacks it needs.
 *
 * Everything here runs on the single event-loop thread except where a module says otherwise
 * (link.c's nng pipe callbacks). */
#ifndef BW_FRONT_FRONT_H
#define BW_FRONT_FRONT_H

#ifndef H2O_USE_LIBUV
#define H2O_USE_LIBUV 0 /* h2o's own event loop (libh2o-evloop) */
#endif
#include <h2o.h>
#include <stdint.h>

#include "frontend/opts.h"

typedef struct bw_auth bw_auth;
typedef struct bw_jobs bw_jobs;
typedef struct bw_link bw_link;
typedef struct bw_sup bw_sup;
typedef struct bw_metrics bw_metrics;
typedef struct bw_heartbeat bw_heartbeat;

typedef struct bw_front {
    const bw_front_opts *opts;
    const char *rundir;
    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_loop_t *loop;
    bw_auth *auth;
    bw_jobs *jobs;
    bw_link *link;
    bw_sup *sup; /* NULL unless --spawn-engine */
    bw_metrics *metrics;
    bw_heartbeat *heartbeat; /* NULL unless --hive-url */
    int port;                /* the bound port (resolves --port 0) */
    int stopping;
} bw_front;

#endif
