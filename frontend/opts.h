/* beeworker-front's command line (SPEC §3.6): every flag a hive passes when it spawns a worker, the
 * engine flags forwarded by --spawn-engine, and the front's own limits.
 *
 * Owns: flag names, defaults, validation and --help. Nothing here opens sockets or files other than
 * checking that the model and token file are readable. */
#ifndef BW_FRONT_OPTS_H
#define BW_FRONT_OPTS_H

#include <stddef.h>

typedef struct {
    const char *worker_id;
    const char *model;     /* GGUF path (forwarded to the engine) */
    const char *model_ref; /* the hive's name for the model */
    const char *backend;   /* auto (default) | cpu | cuda */
    int device;
    int port;
    const char *bind; /* NULL: 0.0.0.0, or 127.0.0.1 in local mode */
    const char *hive_url;
    int heartbeat_s;
    int local_mode;
    const char *api_token_file;
    int spawn_engine;
    const char *engine_bin; /* NULL: next to this binary */
    const char *rundir;     /* NULL: a private directory made at start */
    double engine_wait_s;
    double engine_hello_timeout_s; /* an engine silent this long is lost (0 = never) */
    size_t max_body;
    int queue_size;
    int open_timeout_s;        /* cancel a job whose stream is never opened */
    int retain_s;              /* keep a finished job for resume */
    double reconnect_grace_s;  /* a running job whose reader left waits this long for a Last-Event-ID reconnect */
    size_t stream_buffer;      /* bytes of events a client may leave unread before SLOW_CLIENT */
    int client_sndbuf;         /* SO_SNDBUF of client connections; 0 = the kernel's autotuning */
    int test_sub_buffer;       /* tests only: SUB receive buffer in messages (0 = the normal 8192) */
    int slots, threads, ctx;   /* forwarded to a spawned engine; 0 = its default */
    int spec_max;              /* forwarded to a spawned engine as --spec-max; -1 = its default */
    int engine_max_crashes;    /* --spawn-engine gives up after this many exits ... */
    int engine_crash_window_s; /* ... within this many seconds (0 crashes = never give up) */
    int http2;
    int metrics_auth;
    int request_timeout_s;   /* slow headers, slow bodies, idle keep-alive connections */
    int max_connections;     /* beyond it a connection gets 503 and is closed */
    size_t max_header_bytes; /* request line and headers together; beyond it 431 */
#define BW_MAX_CORS_ORIGINS 16
    const char *cors_origins[BW_MAX_CORS_ORIGINS]; /* --cors-origin, repeatable; none = no CORS */
    int n_cors_origins;
} bw_front_opts;

/* Returns 0 to run, 1 when --help/--version printed and the process should exit 0, -1 after printing a
 * one-line error. */
int bw_opts_parse(int argc, char **argv, bw_front_opts *o);

#endif
