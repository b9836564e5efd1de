/* Shared response helpers; see http.h. */
#include "frontend/http.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "frontend/auth.h"

static const char *reason_of(int status)
{
    switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

void bw_http_send_json(h2o_req_t *req, int status, const char *body, size_t len)
{
    req->res.status = status;
    req->res.reason = reason_of(status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_send_inline(req, body, len);
}

void bw_http_send_obj(h2o_req_t *req, int status, json_t *obj)
{
    char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!s) {
        static const char oom[] = "{\"error\":{\"code\":\"INTERNAL\",\"message\":\"out of memory\"}}";
        bw_http_send_json(req, 500, oom, sizeof(oom) - 1);
        return;
    }
    bw_http_send_json(req, status, s, strlen(s));
    free(s);
}

static int is_openai_route(h2o_req_t *req)
{
    static const char *const prefixes[] = {"/v1/completions", "/v1/chat/", "/v1/models"};
    const h2o_iovec_t *p = &req->path_normalized;
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        size_t n = strlen(prefixes[i]);
        if (p->len >= n && memcmp(p->base, prefixes[i], n) == 0) return 1;
    }
    return 0;
}

void bw_http_send_error_obj(h2o_req_t *req, int status, json_t *error)
{
    if (error && is_openai_route(req)) {
        const char *type = status == 401   ? "authentication_error"
                           : status >= 500 ? "server_error"
                                           : "invalid_request_error";
        json_object_set_new(error, "type", json_string(type));
        if (!json_object_get(error, "param")) json_object_set_new(error, "param", json_null());
    }
    bw_http_send_obj(req, status, error ? json_pack("{s:o}", "error", error) : NULL);
}

void bw_http_send_error(h2o_req_t *req, int status, const char *code, const char *message)
{
    bw_http_send_error_obj(req, status, json_pack("{s:s,s:s}", "code", code, "message", message));
}

static int is_json_type(const h2o_iovec_t *v)
{
    static const char want[] = "application/json";
    size_t n = sizeof(want) - 1;
    if (v->len < n || strncasecmp(v->base, want, n) != 0) return 0;
    return v->len == n || v->base[n] == ';' || v->base[n] == ' ';
}

int bw_http_check_json_body(bw_front *f, h2o_req_t *req)
{
    ssize_t ct = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (ct >= 0 && !is_json_type(&req->headers.entries[ct].value)) {
        bw_http_send_error(req, 415, "UNSUPPORTED_MEDIA_TYPE", "send the request body as application/json");
        return -1;
    }
    if (req->entity.len > f->opts->max_body) {
        bw_http_send_error(req, 413, "PAYLOAD_TOO_LARGE", "the request body exceeds --max-body");
        return -1;
    }
    if (f->stopping) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("5"));
        bw_http_send_error(req, 503, "SHUTTING_DOWN", "this worker is shutting down");
        return -1;
    }
    return 0;
}

const h2o_iovec_t *bw_http_header(h2o_req_t *req, const char *name, size_t name_len)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, name, name_len, -1);
    return i < 0 ? NULL : &req->headers.entries[i].value;
}

int bw_http_authorize(bw_front *f, h2o_req_t *req)
{
    const h2o_iovec_t *v = NULL;
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i >= 0 && bw_auth_enabled(f->auth) && h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, i) >= 0) {
        /* which one would a proxy in front of us have checked? Neither may win. */
        bw_http_send_error(req, 400, "DUPLICATE_AUTHORIZATION", "send exactly one Authorization header");
        return -1;
    }
    if (i >= 0) v = &req->headers.entries[i].value;
    switch (bw_auth_check(f->auth, v ? v->base : NULL, v ? v->len : 0)) {
    case BW_AUTH_OK: return 0;
    case BW_AUTH_MISSING:
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, H2O_STRLIT("Bearer"));
        bw_http_send_error(req, 401, "MISSING_API_KEY", "this endpoint needs 'Authorization: Bearer <token>'");
        return -1;
    default:
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, H2O_STRLIT("Bearer"));
        bw_http_send_error(req, 401, "INVALID_API_KEY", "the bearer token is not valid for this worker");
        return -1;
    }
}

/* Content-Length lines in the head of an HTTP/1 request with a body. h2o 2.2.5 keeps no Content-Length
 * in req->headers, but leaves the request's head in the connection's input buffer, right in front of
 * the body, until the request is done. */
static int content_length_lines(h2o_req_t *req)
{
    if (!req->entity.base || req->version >= 0x200 || !req->conn->callbacks->get_socket) return 0;
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    if (!sock || !sock->input) return 0;
    const char *p = sock->input->bytes, *end = req->entity.base;
    if (end < p || end > p + sock->input->size) return 0;
    static const char name[] = "content-length:";
    int n = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((nl ? nl : end) - p);
        if (len >= sizeof(name) - 1 && strncasecmp(p, name, sizeof(name) - 1) == 0) n++;
        p = nl ? nl + 1 : end;
    }
    return n;
}

int bw_http_reject_ambiguous_framing(h2o_req_t *req)
{
    if (content_length_lines(req) < 2) return 0;
    /* h2o 2.2.5 reads the body by the first one and parses the rest as a new request (smuggling); RFC 9112
     * §6.3: an unrecoverable error. The connection is closed so that no byte of it is read again. */
    req->http1_is_persistent = 0;
    bw_http_send_error(req, 400, "AMBIGUOUS_CONTENT_LENGTH", "the request has more than one Content-Length header");
    return -1;
}

int bw_http_query(h2o_req_t *req, const char *name, char *out, size_t cap)
{
    if (req->query_at == SIZE_MAX) return -1;
    const char *p = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    size_t nl = strlen(name);
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *kend = eq ? eq : stop;
        if ((size_t)(kend - p) == nl && memcmp(p, name, nl) == 0) {
            const char *v = eq ? eq + 1 : stop;
            size_t vl = (size_t)(stop - v);
            if (vl >= cap) return -1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return 0;
        }
        p = stop + 1;
    }
    return -1;
}
