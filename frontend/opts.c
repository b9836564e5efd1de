/* Command-line parsing for beeworker-front; see opts.h. */
#include "frontend/opts.h"

#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/opts.h"

#define PROG "beeworker-front"

static void usage(FILE *f)
{
    fputs("usage: beeworker-front [options]\n"
          "\n"
          "The HTTP side of a beeworker: job API, SSE streaming, auth. The model runs in beeworker-engine,\n"
          "which dials this process over ipc sockets in --rundir (or is started by --spawn-engine).\n"
          "\n"
          "Serving:\n"
          "  --port N               TCP port (default 8080)\n"
          "  --bind ADDR            listen address (default 0.0.0.0; 127.0.0.1 with --local-mode)\n"
          "  --local-mode           bind 127.0.0.1 only, no authentication (refused if a token is set)\n"
          "  --api-token-file PATH  bearer token file (else env LLORCH_API_TOKEN); required unless --local-mode\n"
          "  --http2                also serve HTTP/2 (h2c upgrade). Off by default: Debian's h2o 2.2.5 has no\n"
          "                         fix for the HTTP/2 rapid-reset attack (CVE-2023-44487); enable only behind\n"
          "                         a proxy that terminates HTTP/2\n"
          "  --metrics-auth         require the token for /metrics too\n"
          "  --cors-origin ORIGIN   let web pages from ORIGIN (scheme://host[:port], or * for any) call this\n"
          "                         worker from a browser; repeatable, up to 16 (default: none)\n"
          "\n"
          "Identity (as passed by a hive):\n"
          "  --worker-id ID  --model-ref REF  --hive-url URL (alias --queen-url)  --heartbeat-interval S\n"
          "\n"
          "Engine:\n"
          "  --rundir DIR           where jobs.ipc and tokens.ipc live (default: a private temporary dir)\n"
          "  --spawn-engine         start beeworker-engine and restart it (with backoff) when it dies\n"
          "  --engine-bin PATH      engine binary (default: ../engine/beeworker-engine next to this one,\n"
          "                         then beeworker-engine beside it)\n"
          "  --model PATH           GGUF model (for --spawn-engine)\n"
          "  --backend auto|cpu|cuda  --device N  --slots N  --threads N  --ctx N   forwarded to the engine\n"
          "                         (--backend auto, the default: cuda when built in and a GPU is visible)\n"
          "  --spec-max N           forwarded: draft tokens verified per job and step (0 = no speculation)\n"
          "  --engine-hello-timeout S\n"
          "                         an engine that sends no HELLO beacon (every 200 ms) for S seconds is stopped\n"
          "                         or hung: it is treated as lost, its jobs resume on the next engine, and a\n"
          "                         spawned one is killed and restarted (default 10; 0 = never)\n"
          "  --engine-max-crashes N, --engine-crash-window S\n"
          "                         stop restarting a spawned engine after N exits within S seconds\n"
          "                         (default 5 in 60; 0 = never give up); /health then says engine down\n"
          "\n"
          "Limits:\n"
          "  --engine-wait S        how long a job waits for an engine before QUEUE_TIMEOUT (default 30); a\n"
          "                         running job whose engine is lost waits as long to be resumed before\n"
          "                         ENGINE_LOST (0: ENGINE_LOST at once)\n"
          "  --queue-size N         jobs that may wait for an engine before 503 (default 256)\n"
          "  --max-body BYTES       request body limit (default 1048576)\n"
          "  --open-timeout S       cancel a job whose stream is not opened in S seconds (default 60)\n"
          "  --retain S             keep a finished job S seconds for resume (default 60)\n"
          "  --reconnect-grace S    a running job whose client disconnected goes on S seconds for a\n"
          "                         Last-Event-ID reconnect before it is cancelled (default 3; 0 = cancel at once);\n"
          "                         streams tell browsers to reconnect within a third of it (SSE retry:)\n"
          "  --stream-buffer BYTES  events a client may leave unread before its job is cancelled with\n"
          "                         SLOW_CLIENT (default 1048576)\n"
          "  --client-sndbuf BYTES  kernel send buffer of each client connection (default: autotuned, up to\n"
          "                         megabytes, which hides a client that stopped reading from --stream-buffer)\n"
          "  --request-timeout S    close a connection whose request headers or body take longer than S\n"
          "                         seconds, or that sits idle between requests (default 10)\n"
          "  --max-connections N    open client connections; more get 503 and are closed (default 4096;\n"
          "                         each takes a file descriptor: raise RLIMIT_NOFILE to match)\n"
          "  --max-header-bytes N   request line and headers together (default 16384; 431 beyond)\n"
          "\n"
          "Testing only (never for production):\n"
          "  --test-sub-buffer N    shrink the engine-message receive buffer to N messages so that messages\n"
          "                         are dropped and the gap repair (REPLAY) is exercised\n"
          "\n"
          "  --help, --version\n",
          f);
}

static int check_url(const char *u, const char *flag)
{
    if (strncmp(u, "http://", 7) && strncmp(u, "https://", 8)) {
        fprintf(stderr, "beeworker-front: %s wants an http:// or https:// URL, got '%s'\n", flag, u);
        return -1;
    }
    return 0;
}

/* An origin as browsers send it: scheme://host[:port], no path, no trailing slash; or "*". */
static int check_origin(const char *o)
{
    const char *host = strstr(o, "://");
    int ok = strcmp(o, "*") == 0;
    if (!ok && host && host > o && host[3] && !strchr(host + 3, '/')) {
        ok = 1;
        for (const char *c = o; *c; c++)
            if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 0x7f || *c == ',') ok = 0;
    }
    if (!ok) fprintf(stderr, "beeworker-front: --cors-origin wants scheme://host[:port] or *, got '%s'\n", o);
    return ok ? 0 : -1;
}

static int check_readable(const char *path, const char *what)
{
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "beeworker-front: cannot read %s '%s': %s\n", what, path, strerror(errno));
        return -1;
    }
    return 0;
}

enum {
    O_WORKER = 256,
    O_MODEL,
    O_MODELREF,
    O_BACKEND,
    O_DEVICE,
    O_PORT,
    O_BIND,
    O_HIVE,
    O_HB,
    O_LOCAL,
    O_TOKENF,
    O_SPAWN,
    O_ENGBIN,
    O_RUNDIR,
    O_WAIT,
    O_MAXBODY,
    O_QUEUE,
    O_OPENTO,
    O_RETAIN,
    O_SLOTS,
    O_THREADS,
    O_CTX,
    O_HTTP2,
    O_METRICSAUTH,
    O_HELP,
    O_VERSION,
    O_GRACE,
    O_STREAMBUF,
    O_TESTSUB,
    O_SNDBUF,
    O_MAXCRASH,
    O_CRASHWIN,
    O_REQTIMEOUT,
    O_MAXCONN,
    O_MAXHDR,
    O_HELLOTO,
    O_CORS,
    O_SPEC_MAX,
};

static const struct option long_opts[] = {
    {"worker-id", required_argument, 0, O_WORKER},
    {"model", required_argument, 0, O_MODEL},
    {"model-ref", required_argument, 0, O_MODELREF},
    {"backend", required_argument, 0, O_BACKEND},
    {"device", required_argument, 0, O_DEVICE},
    {"port", required_argument, 0, O_PORT},
    {"bind", required_argument, 0, O_BIND},
    {"hive-url", required_argument, 0, O_HIVE},
    {"queen-url", required_argument, 0, O_HIVE},
    {"heartbeat-interval", required_argument, 0, O_HB},
    {"local-mode", no_argument, 0, O_LOCAL},
    {"api-token-file", required_argument, 0, O_TOKENF},
    {"spawn-engine", no_argument, 0, O_SPAWN},
    {"engine-bin", required_argument, 0, O_ENGBIN},
    {"rundir", required_argument, 0, O_RUNDIR},
    {"engine-wait", required_argument, 0, O_WAIT},
    {"max-body", required_argument, 0, O_MAXBODY},
    {"queue-size", required_argument, 0, O_QUEUE},
    {"open-timeout", required_argument, 0, O_OPENTO},
    {"retain", required_argument, 0, O_RETAIN},
    {"slots", required_argument, 0, O_SLOTS},
    {"threads", required_argument, 0, O_THREADS},
    {"spec-max", required_argument, 0, O_SPEC_MAX},
    {"ctx", required_argument, 0, O_CTX},
    {"http2", no_argument, 0, O_HTTP2},
    {"metrics-auth", no_argument, 0, O_METRICSAUTH},
    {"help", no_argument, 0, O_HELP},
    {"reconnect-grace", required_argument, 0, O_GRACE},
    {"stream-buffer", required_argument, 0, O_STREAMBUF},
    {"test-sub-buffer", required_argument, 0, O_TESTSUB},
    {"client-sndbuf", required_argument, 0, O_SNDBUF},
    {"request-timeout", required_argument, 0, O_REQTIMEOUT},
    {"max-connections", required_argument, 0, O_MAXCONN},
    {"max-header-bytes", required_argument, 0, O_MAXHDR},
    {"version", no_argument, 0, O_VERSION},
    {"engine-max-crashes", required_argument, 0, O_MAXCRASH},
    {"engine-crash-window", required_argument, 0, O_CRASHWIN},
    {"engine-hello-timeout", required_argument, 0, O_HELLOTO},
    {"cors-origin", required_argument, 0, O_CORS},
    {0, 0, 0, 0},
};

static void set_defaults(bw_front_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->spec_max = -1;
    o->worker_id = "beeworker";
    o->backend = "auto";
    o->port = 8080;
    o->heartbeat_s = 30;
    o->engine_wait_s = 30;
    o->engine_hello_timeout_s = 10;
    o->max_body = 1 << 20;
    o->queue_size = 256;
    o->request_timeout_s = 10;
    o->max_connections = 4096;
    o->max_header_bytes = 16384;
    o->open_timeout_s = 60;
    o->retain_s = 60;
    o->reconnect_grace_s = 3;
    o->stream_buffer = 1 << 20;
    o->engine_max_crashes = 5;
    o->engine_crash_window_s = 60;
}

/* One flag c with its value; 1 when it asked to stop here (--help, --version), -1 on a bad value. */
/* The flags that take an integer in a range into an int of the options. */
static const struct {
    int code;
    const char *flag;
    long lo, hi;
    size_t field;
} int_flags[] = {
    {O_DEVICE, "--device", 0, BW_OPT_DEVICE_MAX, offsetof(bw_front_opts, device)},
    {O_PORT, "--port", 0, 65535, offsetof(bw_front_opts, port)},
    {O_HB, "--heartbeat-interval", 1, 3600, offsetof(bw_front_opts, heartbeat_s)},
    {O_QUEUE, "--queue-size", 1, 100000, offsetof(bw_front_opts, queue_size)},
    {O_OPENTO, "--open-timeout", 1, 86400, offsetof(bw_front_opts, open_timeout_s)},
    {O_RETAIN, "--retain", 0, 86400, offsetof(bw_front_opts, retain_s)},
    {O_SLOTS, "--slots", 1, BW_OPT_SLOTS_MAX, offsetof(bw_front_opts, slots)},
    {O_THREADS, "--threads", 1, BW_OPT_THREADS_MAX, offsetof(bw_front_opts, threads)},
    {O_CTX, "--ctx", BW_OPT_CTX_MIN, BW_OPT_CTX_MAX, offsetof(bw_front_opts, ctx)},
    {O_SPEC_MAX, "--spec-max", 0, BW_OPT_SPEC_MAX, offsetof(bw_front_opts, spec_max)},
    {O_MAXCRASH, "--engine-max-crashes", 0, 1000, offsetof(bw_front_opts, engine_max_crashes)},
    {O_CRASHWIN, "--engine-crash-window", 1, 86400, offsetof(bw_front_opts, engine_crash_window_s)},
    {O_SNDBUF, "--client-sndbuf", 0, 64 << 20, offsetof(bw_front_opts, client_sndbuf)},
    {O_TESTSUB, "--test-sub-buffer", 1, 8192, offsetof(bw_front_opts, test_sub_buffer)},
    {O_REQTIMEOUT, "--request-timeout", 1, 3600, offsetof(bw_front_opts, request_timeout_s)},
    {O_MAXCONN, "--max-connections", 1, 1000000, offsetof(bw_front_opts, max_connections)},
};

static int apply_option(int c, const char *arg, char **argv, bw_front_opts *o)
{
    for (size_t i = 0; i < sizeof int_flags / sizeof int_flags[0]; i++)
        if (int_flags[i].code == c) {
            long v;
            if (bw_opt_long(PROG, int_flags[i].flag, arg, int_flags[i].lo, int_flags[i].hi, &v)) return -1;
            *(int *)((char *)o + int_flags[i].field) = (int)v;
            return 0;
        }
    double d;
    switch (c) {
    case O_WORKER:
        if (!arg[0] || strlen(arg) > 128) {
            fprintf(stderr, "beeworker-front: --worker-id wants 1..128 characters\n");
            return -1;
        }
        o->worker_id = arg;
        break;
    case O_MODEL: o->model = arg; break;
    case O_MODELREF: o->model_ref = arg; break;
    case O_BACKEND:
        if (bw_opt_backend(PROG, arg)) return -1;
        o->backend = arg;
        break;
    case O_BIND: o->bind = arg; break;
    case O_HIVE:
        if (check_url(arg, "--hive-url")) return -1;
        o->hive_url = arg;
        break;
    case O_LOCAL: o->local_mode = 1; break;
    case O_TOKENF: o->api_token_file = arg; break;
    case O_SPAWN: o->spawn_engine = 1; break;
    case O_ENGBIN: o->engine_bin = arg; break;
    case O_RUNDIR: o->rundir = arg; break;
    case O_WAIT:
        if (bw_opt_double(PROG, "--engine-wait", arg, 0, 86400, &o->engine_wait_s)) return -1;
        break;
    case O_MAXBODY:
        if (bw_opt_size(PROG, "--max-body", arg, 1024, 64L << 20, &o->max_body)) return -1;
        break;
    case O_HTTP2: o->http2 = 1; break;
    case O_CORS:
        if (check_origin(arg) != 0) return -1;
        if (o->n_cors_origins == BW_MAX_CORS_ORIGINS) {
            fprintf(stderr, "beeworker-front: at most %d --cors-origin flags\n", BW_MAX_CORS_ORIGINS);
            return -1;
        }
        o->cors_origins[o->n_cors_origins++] = arg;
        break;
    case O_HELLOTO:
        if (bw_opt_double(PROG, "--engine-hello-timeout", arg, 0, 3600, &d)) return -1;
        if (d > 0 && d < 0.5) { /* HELLO comes every 200 ms: less would lose healthy engines */
            fprintf(stderr, "beeworker-front: --engine-hello-timeout is 0 (off) or at least 0.5 s, got '%s'\n", arg);
            return -1;
        }
        o->engine_hello_timeout_s = d;
        break;
    case O_METRICSAUTH: o->metrics_auth = 1; break;
    case O_GRACE:
        if (bw_opt_double(PROG, "--reconnect-grace", arg, 0, 3600, &o->reconnect_grace_s)) return -1;
        break;
    case O_STREAMBUF:
        if (bw_opt_size(PROG, "--stream-buffer", arg, 1024, (size_t)1 << 30, &o->stream_buffer)) return -1;
        break;
    case O_MAXHDR:
        if (bw_opt_size(PROG, "--max-header-bytes", arg, 1024, 400000, &o->max_header_bytes)) return -1;
        break;
    case O_HELP: usage(stdout); return 1;
    case O_VERSION: printf("beeworker-front %s\n", BW_VERSION); return 1;
    default: bw_opt_bad_flag(PROG, argv[optind - 1]); return -1;
    }
    return 0;
}

/* What the flags must satisfy together, checked once all are read. */
static int check_opts(const bw_front_opts *o)
{
    if (o->spawn_engine && !o->model) {
        fprintf(stderr, "beeworker-front: --spawn-engine needs --model PATH\n");
        return -1;
    }
    if (o->model && check_readable(o->model, "model")) return -1;
    if (o->api_token_file && check_readable(o->api_token_file, "token file")) return -1;
    if (o->rundir && strlen(o->rundir) > 80) {
        /* ipc paths must fit sockaddr_un (108 bytes) with "/tokens.ipc" appended */
        fprintf(stderr, "beeworker-front: --rundir path is too long for a unix socket (max 80 bytes)\n");
        return -1;
    }
    return 0;
}

int bw_opts_parse(int argc, char **argv, bw_front_opts *o)
{
    set_defaults(o);
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        const int rc = apply_option(c, optarg, argv, o);
        if (rc != 0) return rc;
    }
    if (optind < argc) {
        bw_opt_unexpected(PROG, argv[optind]);
        return -1;
    }
    return check_opts(o);
}
