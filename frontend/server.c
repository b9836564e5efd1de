/* h2o setup and routing; see server.h. One catch-all h2o handler dispatches on method and path through
 * the route table (routes.c). */
#include "frontend/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"

#include "frontend/accesslog.h"
#include "frontend/cors.h"
#include "frontend/http.h"
#include "frontend/routes.h"

typedef struct {
    h2o_handler_t super;
    bw_front *f;
} router;

#define FD_RESERVE 64         /* descriptors kept for what is not a client: engine pipes, logs, the hive */
#define ACCEPT_BACKOFF_MS 100 /* out of descriptors: stop accepting this long instead of spinning */

static h2o_socket_t *listener;
static int n_conns;   /* open client connections, against max_conns */
static int max_conns; /* --max-connections, clamped below the descriptor limit */
static h2o_timeout_t accept_backoff_to;
static h2o_timeout_entry_t accept_resume;

static int not_allowed(h2o_req_t *req, const char *allow)
{
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("allow"), 0, NULL, allow, strlen(allow));
    bw_http_send_error(req, 405, "METHOD_NOT_ALLOWED", "this method is not allowed on this path");
    return 0;
}

/* h2o's own ceiling on a request head is ~400 KB (H2O_MAX_REQLEN); ours is the operator's. */
static size_t head_bytes(h2o_req_t *req)
{
    size_t n = req->method.len + req->path.len;
    for (size_t i = 0; i < req->headers.size; i++)
        n += req->headers.entries[i].name->len + req->headers.entries[i].value.len + 4;
    return n;
}

/* Before the route table: framing, head size and CORS; then the route's access rule, its methods and
 * its handler. An unknown path is protected like any other, so that it says nothing to a stranger. */
static int route(h2o_handler_t *self, h2o_req_t *req)
{
    bw_front *f = ((router *)self)->f;
    const h2o_iovec_t *p = &req->path_normalized;

    if (bw_http_reject_ambiguous_framing(req) != 0) return 0;
    if (head_bytes(req) > f->opts->max_header_bytes) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONNECTION, NULL, H2O_STRLIT("close"));
        bw_http_send_error(req, 431, "HEADERS_TOO_LARGE", "the request line and headers exceed --max-header-bytes");
        return 0;
    }
    if (bw_cors_apply(f, req)) return 0;

    bw_route_args a;
    const bw_route *r = bw_route_find(p->base, p->len, &a);
    int public = r && (r->access == BW_ROUTE_PUBLIC || (r->access == BW_ROUTE_METRICS && !f->opts->metrics_auth));
    if (!public && bw_http_authorize(f, req) != 0) return 0;
    if (!r) {
        bw_http_send_error(req, 404, "NOT_FOUND", "no such endpoint");
        return 0;
    }
    if (!bw_route_allows(r, req->method.base, req->method.len)) return not_allowed(req, r->methods);
    return r->handle(f, req, &a);
}

static void on_conn_close(void *data)
{
    (void)data;
    n_conns--;
}

/* Over --max-connections: a short answer instead of a silent reset, so a client knows to back off. */
static void refuse_busy(h2o_socket_t *sock)
{
    static const char busy[] =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        "Retry-After: 1\r\nConnection: close\r\nContent-Length: 85\r\n\r\n"
        "{\"error\":{\"code\":\"TOO_MANY_CONNECTIONS\",\"message\":\"connection limit reached; retry\"}}";
    ssize_t w = send(h2o_socket_get_fd(sock), busy, sizeof(busy) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)w;
    h2o_socket_close(sock);
}

static void on_accept(h2o_socket_t *l, const char *err);

static void on_accept_resume(h2o_timeout_entry_t *e)
{
    (void)e;
    if (listener) h2o_socket_read_start(listener, on_accept);
}

static void on_accept(h2o_socket_t *l, const char *err)
{
    bw_front *f = l->data;
    if (err) return;
    h2o_socket_t *sock = h2o_evloop_socket_accept(l);
    if (!sock) {
        /* The listener stays readable while the backlog holds connections we cannot take: without a pause
         * a process out of descriptors would retry accept() at full speed and starve every other socket. */
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            static uint64_t last_log_ms;
            uint64_t now = h2o_now(f->loop);
            if (now - last_log_ms >= 10000) {
                bw_log_warn("accept: %s; pausing new connections for %d ms", strerror(errno), ACCEPT_BACKOFF_MS);
                last_log_ms = now;
            }
            h2o_socket_read_stop(l);
            if (!h2o_timeout_is_linked(&accept_resume)) h2o_timeout_link(f->loop, &accept_backoff_to, &accept_resume);
        }
        return;
    }
    if (n_conns >= max_conns) {
        refuse_busy(sock);
        return;
    }
    n_conns++;
    sock->on_close.cb = on_conn_close;
    /* one small write per token: Nagle would hold each behind the previous ACK */
    int one = 1;
    setsockopt(h2o_socket_get_fd(sock), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (f->opts->client_sndbuf > 0) { /* a stalled client then reaches --stream-buffer after kilobytes, not megabytes */
        int sz = f->opts->client_sndbuf;
        setsockopt(h2o_socket_get_fd(sock), SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    }
    h2o_accept(&f->accept_ctx, sock);
}

static int open_listener(bw_front *f, char *err, size_t errlen)
{
    const char *bind_addr = f->opts->bind ? f->opts->bind : (f->opts->local_mode ? "127.0.0.1" : "0.0.0.0");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->opts->port)};
    if (inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "--bind '%s' is not an IPv4 address", bind_addr);
        return -1;
    }
    if (f->opts->local_mode && ntohl(sa.sin_addr.s_addr) >> 24 != 127) {
        snprintf(err, errlen, "--local-mode serves loopback only; --bind %s is not a loopback address", bind_addr);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, SOMAXCONN) != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", bind_addr, f->opts->port, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    socklen_t len = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &len);
    f->port = ntohs(sa.sin_port);
    listener = h2o_evloop_socket_create(f->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    listener->data = f;
    h2o_socket_read_start(listener, on_accept);
    return 0;
}

/* Every connection takes a descriptor: raise the soft limit as far as the hard one allows, and keep the
 * connection cap below it with a reserve, so that the cap (a 503) is met before accept() runs out. */
static void fit_connection_limit(bw_front *f)
{
    struct rlimit rl;
    max_conns = f->opts->max_connections;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
        else
            bw_log_warn("cannot raise the descriptor limit from %llu to %llu: %s", (unsigned long long)rl.rlim_cur,
                        (unsigned long long)rl.rlim_max, strerror(errno));
    }
    if (rl.rlim_cur == RLIM_INFINITY) return;
    long room = (long)rl.rlim_cur - FD_RESERVE;
    if (room < 1) room = 1;
    if (max_conns > room) {
        bw_log_warn("--max-connections %d does not fit the descriptor limit %llu: serving at most %ld connections "
                    "(raise LimitNOFILE / ulimit -n)",
                    max_conns, (unsigned long long)rl.rlim_cur, room);
        max_conns = (int)room;
    }
}

int bw_server_start(bw_front *f, char *err, size_t errlen)
{
    fit_connection_limit(f);
    h2o_timeout_init(f->loop, &accept_backoff_to, ACCEPT_BACKOFF_MS);
    accept_resume.cb = on_accept_resume;
    h2o_config_init(&f->config);
    /* h2o's own limit sits above ours so that oversized bodies get our JSON 413, up to twice the limit */
    f->config.max_request_entity_size = f->opts->max_body * 2;
    f->config.http1.upgrade_to_http2 = f->opts->http2;
    /* h2o's request timeout covers slow headers, slow bodies and idle keep-alive; not a streaming response */
    f->config.http1.req_timeout = (uint64_t)f->opts->request_timeout_s * 1000;
    h2o_hostconf_t *host = h2o_config_register_host(&f->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    router *r = (router *)h2o_create_handler(path, sizeof(router));
    r->super.on_req = route;
    r->f = f;
    bw_accesslog_register(f, path);
    h2o_context_init(&f->ctx, f->loop, &f->config);
    f->accept_ctx.ctx = &f->ctx;
    f->accept_ctx.hosts = f->config.hosts;
    return open_listener(f, err, errlen);
}

void bw_server_stop_listening(bw_front *f)
{
    (void)f;
    if (h2o_timeout_is_linked(&accept_resume)) h2o_timeout_unlink(&accept_resume);
    if (listener) {
        h2o_socket_read_stop(listener);
        h2o_socket_close(listener);
        listener = NULL;
    }
}
