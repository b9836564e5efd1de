/* The request log; see accesslog.h. h2o calls log_access() from the request's disposal, after the last
 * byte was handed to the socket (or the client went away), so the duration covers a whole stream. */
#include "frontend/accesslog.h"

#include <string.h>
#include <sys/time.h>

#include "common/log.h"
#include "frontend/metrics.h"
#include "frontend/routes.h"

#define PATH_LOG_MAX 200
#define JOB_ENV "BW_JOB_ID"

typedef struct {
    h2o_logger_t super;
    bw_front *f;
} access_logger;

void bw_accesslog_set_job(h2o_req_t *req, const char *job_id)
{
    h2o_vector_reserve(&req->pool, &req->env, req->env.size + 2);
    req->env.entries[req->env.size++] = h2o_iovec_init(H2O_STRLIT(JOB_ENV));
    req->env.entries[req->env.size++] = h2o_strdup(&req->pool, job_id, SIZE_MAX);
}

/* The job a request is about: set by its handler, else the <id> of /v1/{jobs,inference}/<id>[/stream]. */
static void job_of(h2o_req_t *req, char *out, size_t cap)
{
    out[0] = '\0';
    for (size_t i = 0; i + 1 < req->env.size; i += 2)
        if (h2o_memis(req->env.entries[i].base, req->env.entries[i].len, H2O_STRLIT(JOB_ENV))) {
            h2o_iovec_t v = req->env.entries[i + 1];
            size_t n = v.len < cap - 1 ? v.len : cap - 1;
            memcpy(out, v.base, n);
            out[n] = '\0';
            return;
        }
    static const char *const prefixes[] = {"/v1/jobs/", "/v1/inference/"};
    const h2o_iovec_t *p = &req->path_normalized;
    for (size_t i = 0; i < 2; i++) {
        size_t n = strlen(prefixes[i]);
        if (p->len <= n || memcmp(p->base, prefixes[i], n) != 0) continue;
        size_t k = 0;
        for (const char *c = p->base + n; c < p->base + p->len && *c != '/' && k + 1 < cap; c++)
            out[k++] = (*c > 0x20 && *c < 0x7f) ? *c : '?';
        out[k] = '\0';
        return;
    }
}

/* A path as printable ASCII, cut at PATH_LOG_MAX: it is client input headed for a log line. */
static void printable(const h2o_iovec_t *v, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < v->len && n + 1 < cap; i++) {
        unsigned char c = (unsigned char)v->base[i];
        out[n++] = c > 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (v->len >= cap && cap > 4) memcpy(out + cap - 4, "...", 3), n = cap - 1;
    out[n] = '\0';
}

static void log_access(h2o_logger_t *self, h2o_req_t *req)
{
    access_logger *l = (access_logger *)self;
    char path[PATH_LOG_MAX + 1], method[16], job[BW_PROTO_JOB_ID_MAX + 1];
    printable(&req->path_normalized, path, sizeof(path));
    printable(&req->method, method, sizeof(method));
    job_of(req, job, sizeof(job));
    struct timeval now, *begin = &req->timestamps.request_begin_at;
    gettimeofday(&now, NULL);
    double ms = (double)(now.tv_sec - begin->tv_sec) * 1e3 + (double)(now.tv_usec - begin->tv_usec) / 1e3;
    if (begin->tv_sec == 0 || ms < 0) ms = 0;
    int status = req->res.status; /* 0: the client left before a response was started */
    bw_log_field fields[] = {
        {"method", method, 0},
        {"path", path, 0},
        {"status", NULL, status},
        {"job_id", job[0] ? job : "-", 0},
        {"duration_ms", NULL, (double)(long long)(ms * 10 + 0.5) / 10},
    };
    bw_log_fields(BW_LOG_INFO, "request", fields, (int)(sizeof(fields) / sizeof(fields[0])));
    bw_metrics_request(l->f->metrics, bw_route_label(req->path_normalized.base, req->path_normalized.len), status);
}

void bw_accesslog_register(bw_front *f, h2o_pathconf_t *path)
{
    access_logger *l = (access_logger *)h2o_create_logger(path, sizeof(access_logger));
    l->super.log_access = log_access;
    l->f = f;
}
