/* CORS; see cors.h. */
#include "frontend/cors.h"

#include <string.h>

#include "frontend/http.h"

#define PREFLIGHT_MAX_AGE "600"

/* The request's Origin when it is one we serve, else NULL. */
static const h2o_iovec_t *allowed_origin(bw_front *f, h2o_req_t *req)
{
    if (!f->opts->n_cors_origins) return NULL;
    const h2o_iovec_t *o = bw_http_header(req, H2O_STRLIT("origin"));
    if (!o || o->len == 0) return NULL;
    for (int i = 0; i < f->opts->n_cors_origins; i++) {
        const char *a = f->opts->cors_origins[i];
        if (strcmp(a, "*") == 0 || h2o_memis(o->base, o->len, a, strlen(a))) return o;
    }
    return NULL;
}

static void add(h2o_req_t *req, const char *name, const char *value, size_t len)
{
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, strlen(name), 0, NULL, value, len);
}

int bw_cors_apply(bw_front *f, h2o_req_t *req)
{
    const h2o_iovec_t *origin = allowed_origin(f, req);
    if (f->opts->n_cors_origins) add(req, "vary", H2O_STRLIT("Origin")); /* the answer depends on it */
    if (!origin) return 0;
    /* the origin itself rather than "*": a response to a request with credentials may not say "*" */
    add(req, "access-control-allow-origin", origin->base, origin->len);
    int preflight = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("OPTIONS")) &&
                    bw_http_header(req, H2O_STRLIT("access-control-request-method"));
    if (!preflight) {
        add(req, "access-control-expose-headers", H2O_STRLIT("Retry-After, WWW-Authenticate, X-Accel-Buffering"));
        return 0;
    }
    add(req, "access-control-allow-methods", H2O_STRLIT("GET, HEAD, POST, DELETE"));
    add(req, "access-control-allow-headers", H2O_STRLIT("Authorization, Content-Type, Last-Event-ID"));
    add(req, "access-control-max-age", H2O_STRLIT(PREFLIGHT_MAX_AGE));
    req->res.status = 204;
    req->res.reason = "No Content";
    h2o_send_inline(req, "", 0);
    return 1;
}
