/* An HTTP/1.1 request as the front receives it, through the same code: h2o's request-line and header
 * parser (picohttpparser, inside libh2o), its chunked-body decoder, then the front's own readers of what
 * a client controls: the Authorization check, query parameters (?from=, ?timing=), and the JSON
 * validation of the native and the OpenAI bodies (frontend/request.h). The whole input is also validated as a bare body, so
 * the JSON seeds reach the validator directly.
 *
 * Invariants: the parser never reads outside the input; the validator either fills parameters within
 * the limits of SPEC §3.2 or returns an error body that serializes; the auth check accepts only the
 * configured token. */
#include <string.h>

#include "frontend/auth.h"
#include "frontend/http.h"
#include "frontend/request.h"
#include "fuzz.h"

/* picohttpparser's API: libh2o exports it and parses every HTTP/1 request with it, but Debian ships no
 * header for it. These are its declarations as h2o 2.2.5 builds it. */
struct phr_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};
int phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len, const char **path,
                      size_t *path_len, int *minor_version, struct phr_header *headers, size_t *num_headers,
                      size_t last_len);
struct phr_chunked_decoder {
    size_t bytes_left_in_chunk;
    char consume_trailer;
    char _hex_count;
    char _state;
};
ssize_t phr_decode_chunked(struct phr_chunked_decoder *decoder, char *buf, size_t *bufsz);

#define TOKEN "fuzz-token-0123456789"
#define MAX_HEADERS 100 /* h2o's H2O_MAX_HEADERS */

static bw_auth *auth;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    static bw_front_opts o;
    char err[256];
    setenv("LLORCH_API_TOKEN", TOKEN, 1);
    if (!(auth = bw_auth_create(&o, err, sizeof(err)))) {
        fprintf(stderr, "auth: %s\n", err);
        exit(1);
    }
    unsetenv("LLORCH_API_TOKEN");
    return 0;
}

/* A refusal must be a non-empty error object that serializes; an acceptance must respect SPEC §3.2. */
static void check_outcome(json_t *bad, json_t *root, const bw_job_params *p, unsigned n_ctx)
{
    if (bad) {
        FUZZ_CHECK(root == NULL, "root kept on failure");
        FUZZ_CHECK(json_object_get(bad, "error") || json_array_size(json_object_get(bad, "errors")) > 0,
                   "error body without an error");
        char *s = json_dumps(bad, JSON_COMPACT);
        FUZZ_CHECK(s != NULL, "error body does not serialize");
        free(s);
        json_decref(bad);
        return;
    }
    long long max_tok = n_ctx > 1 && n_ctx - 1 < 2048 ? n_ctx - 1 : 2048;
    FUZZ_CHECK(root != NULL && p->prompt != NULL && p->prompt_len >= 1, "accepted without a prompt");
    if (p->submit_flags & BW_SUBMIT_MESSAGES) {
        /* a chat's prompt is the packed conversation: it must read back as records the engine accepts */
        uint32_t off = 0, len, n = 0;
        uint8_t role;
        const char *content;
        int r;
        while ((r = bw_proto_chat_next(p->prompt, (uint32_t)p->prompt_len, &off, &role, &content, &len)) == 1) {
            FUZZ_CHECK(!memchr(content, 0, len), "message with NUL accepted");
            n++;
        }
        FUZZ_CHECK(r == 0 && n >= 1 && n <= BW_PROTO_MAX_MESSAGES, "packed conversation unreadable (%d, %u)", r, n);
    } else {
        FUZZ_CHECK(!memchr(p->prompt, 0, p->prompt_len), "prompt with NUL accepted");
    }
    FUZZ_CHECK(p->max_tokens >= 1 && p->max_tokens <= max_tok, "max_tokens %d", p->max_tokens);
    FUZZ_CHECK(p->temperature >= 0 && p->temperature <= 2, "temperature");
    FUZZ_CHECK(p->top_p >= 0 && p->top_p <= 1 && p->min_p >= 0 && p->min_p <= 1, "top_p/min_p");
    FUZZ_CHECK(p->repetition_penalty >= 0 && p->repetition_penalty <= 2 && p->top_k >= 0, "penalty/top_k");
    FUZZ_CHECK(p->n_stop >= 0 && p->n_stop <= 4, "n_stop %d", p->n_stop);
    for (int i = 0; i < p->n_stop; i++) {
        size_t n = strnlen(p->stop[i], sizeof(p->stop[i]));
        FUZZ_CHECK(n >= 1 && n <= 100, "stop string length %zu", n);
    }
    json_decref(root);
}

/* The native body, then the same bytes as both OpenAI bodies. */
static void validate_body(const char *body, size_t len, unsigned n_ctx)
{
    bw_job_params p;
    json_t *root;
    json_t *bad = bw_request_parse_infer(body, len, n_ctx, &p, &root);
    check_outcome(bad, root, &p, n_ctx);
    for (int chat = 0; chat < 2; chat++) {
        bw_openai_req o;
        memset(&o, 0, sizeof(o));
        o.chat = chat;
        bad = bw_request_parse_openai(body, len, n_ctx, &p, &o, &root);
        check_outcome(bad, root, &p, n_ctx);
        bw_request_openai_free(&o);
    }
}

/* The front reads headers and the query through h2o_req_t; build the part of one that those use. */
static void read_as_front(const char *path, size_t path_len, const struct phr_header *hs, size_t n)
{
    h2o_req_t req;
    memset(&req, 0, sizeof(req));
    h2o_mem_init_pool(&req.pool);
    req.path = h2o_iovec_init(path, path_len);
    const char *q = memchr(path, '?', path_len);
    req.query_at = q ? (size_t)(q - path) : SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        /* h2o lower-cases names before handlers see them */
        char *name = h2o_mem_alloc_pool(&req.pool, hs[i].name_len + 1);
        for (size_t k = 0; k < hs[i].name_len; k++) name[k] = (char)h2o_tolower(hs[i].name[k]);
        h2o_add_header_by_str(&req.pool, &req.headers, name, hs[i].name_len, 0, NULL, hs[i].value, hs[i].value_len);
    }
    const h2o_iovec_t *a = bw_http_header(&req, H2O_STRLIT("authorization"));
    enum bw_auth_result r = bw_auth_check(auth, a ? a->base : NULL, a ? a->len : 0);
    if (r == BW_AUTH_OK) {
        /* only the token, with optional spaces around it, may pass */
        FUZZ_CHECK(a && a->len >= 7 + sizeof(TOKEN) - 1 && memmem(a->base, a->len, TOKEN, sizeof(TOKEN) - 1),
                   "a wrong token was accepted");
    }
    char v[32];
    if (bw_http_query(&req, "from", v, sizeof(v)) == 0) FUZZ_CHECK(strlen(v) < sizeof(v), "query value");
    (void)bw_http_query(&req, "timing", v, sizeof(v));
    (void)bw_http_header(&req, H2O_STRLIT("last-event-id"));
    h2o_mem_clear_pool(&req.pool);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256 * 1024) return 0;
    const char *buf = (const char *)data;
    unsigned n_ctx = size % 3 == 0 ? 0 : size % 3 == 1 ? 64 : 8192;
    validate_body(buf, size, n_ctx);

    const char *method, *path;
    size_t method_len, path_len, n = MAX_HEADERS;
    int minor;
    struct phr_header hs[MAX_HEADERS];
    int hlen = phr_parse_request(buf, size, &method, &method_len, &path, &path_len, &minor, hs, &n, 0);
    if (hlen <= 0) return 0;
    FUZZ_CHECK((size_t)hlen <= size && n <= MAX_HEADERS, "header length %d of %zu", hlen, size);
    read_as_front(path, path_len, hs, n);

    const char *body = buf + hlen;
    size_t body_len = size - (size_t)hlen;
    int chunked = 0;
    for (size_t i = 0; i < n; i++)
        if (hs[i].name_len == 17 && strncasecmp(hs[i].name, "transfer-encoding", 17) == 0 && hs[i].value_len >= 7 &&
            strncasecmp(hs[i].value + hs[i].value_len - 7, "chunked", 7) == 0)
            chunked = 1;
    if (chunked) {
        char *copy = malloc(body_len ? body_len : 1);
        memcpy(copy, body, body_len);
        struct phr_chunked_decoder dec = {0};
        size_t len = body_len;
        ssize_t rc = phr_decode_chunked(&dec, copy, &len);
        FUZZ_CHECK(len <= body_len, "chunked decoding grew the body");
        if (rc >= 0 || rc == -2) validate_body(copy, len, n_ctx);
        free(copy);
    } else {
        validate_body(body, body_len, n_ctx);
    }
    return 0;
}
