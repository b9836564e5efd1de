/* The route table; see routes.h. */
#include "frontend/routes.h"

#include <string.h>

static const bw_route routes[] = {
    {"/health", "GET, HEAD", bw_handle_health, 0, BW_ROUTE_PUBLIC, NULL},
    {"/info", "GET, HEAD", bw_handle_info, 0, BW_ROUTE_PROTECTED, NULL},
    {"/metrics", "GET, HEAD", bw_handle_metrics, 0, BW_ROUTE_METRICS, NULL},
    {"/v1/inference", "POST", bw_handle_submit, 0, BW_ROUTE_PROTECTED, NULL},
    {"/v1/jobs", "POST", bw_handle_submit, 1, BW_ROUTE_PROTECTED, NULL},
    {"/v1/inference/{id}", "DELETE", bw_handle_cancel, 0, BW_ROUTE_PROTECTED, NULL},
    {"/v1/inference/{id}/stream", "GET, HEAD", bw_handle_stream, 0, BW_ROUTE_PROTECTED, NULL},
    {"/v1/jobs/{id}", "DELETE", bw_handle_cancel, 0, BW_ROUTE_PROTECTED, NULL},
    {"/v1/jobs/{id}/stream", "GET, HEAD", bw_handle_stream, 0, BW_ROUTE_PROTECTED, NULL},
    {"/v1/completions", "POST", bw_handle_openai, 0, BW_ROUTE_PROTECTED, NULL},
    {"/v1/chat/completions", "POST", bw_handle_openai, 1, BW_ROUTE_PROTECTED, NULL},
    {"/v1/models", "GET, HEAD", bw_handle_models, 0, BW_ROUTE_PROTECTED, NULL},
    /* OpenAI's models.retrieve; the id may hold a '/' ("hf:org/name") */
    {"/v1/models/{rest}", "GET, HEAD", bw_handle_models, 0, BW_ROUTE_PROTECTED, "/v1/models/{id}"},
};
#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

static const char *route_label(const bw_route *r) { return r->label ? r->label : r->path; }

/* Matches path against template t; the variable part goes to a. */
static int match(const char *t, const char *p, size_t len, bw_route_args *a)
{
    const char *var = strchr(t, '{');
    size_t pre = var ? (size_t)(var - t) : strlen(t);
    if (len < pre || memcmp(p, t, pre) != 0) return 0;
    if (!var) return len == pre;
    const char *close = strchr(var, '}'), *s = p + pre, *end = p + len;
    size_t n = (size_t)(end - s);
    if (strncmp(var, "{id}", 4) == 0) {
        const char *slash = memchr(s, '/', n);
        if (slash) n = (size_t)(slash - s);
    }
    const char *suffix = close + 1;
    if (n == 0 || (size_t)(end - (s + n)) != strlen(suffix) || memcmp(s + n, suffix, strlen(suffix)) != 0) return 0;
    a->id = s;
    a->id_len = n;
    return 1;
}

const bw_route *bw_route_find(const char *path, size_t len, bw_route_args *a)
{
    for (size_t i = 0; i < N_ROUTES; i++) {
        *a = (bw_route_args){.arg = routes[i].arg};
        if (match(routes[i].path, path, len, a)) return &routes[i];
    }
    *a = (bw_route_args){0};
    return NULL;
}

int bw_route_allows(const bw_route *r, const char *method, size_t len)
{
    for (const char *m = r->methods; *m;) {
        size_t n = strcspn(m, ", ");
        if (n == len && memcmp(m, method, len) == 0) return 1;
        m += n;
        m += strspn(m, ", ");
    }
    return 0;
}

const char *bw_route_label(const char *path, size_t len)
{
    bw_route_args a;
    const bw_route *r = bw_route_find(path, len, &a);
    return r ? route_label(r) : "other";
}

const char *const *bw_route_labels(size_t *n)
{
    static const char *labels[N_ROUTES + 1];
    for (size_t i = 0; i < N_ROUTES; i++) labels[i] = route_label(&routes[i]);
    labels[N_ROUTES] = "other";
    *n = N_ROUTES + 1;
    return labels;
}
