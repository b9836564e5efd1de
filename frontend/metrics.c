/* Prometheus metrics; see metrics.h. Series are fixed arrays indexed by bounded labels (route templates,
 * status codes, stop reasons), so a hostile client cannot grow them. */
#include "frontend/metrics.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "frontend/link.h"

static const char *const routes[] = {
    "/health", "/info", "/metrics", "/v1/inference", "/v1/jobs", "/v1/inference/{id}", "/v1/inference/{id}/stream",
    "/v1/jobs/{id}", "/v1/jobs/{id}/stream", "/v1/completions", "/v1/chat/completions", "/v1/models", "other",
};
#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))
#define N_CODES 500 /* status 100..599 */
#define MAX_REASONS 24

static const double ttft_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
static const double itl_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
#define N_TTFT (sizeof(ttft_bounds) / sizeof(ttft_bounds[0]))
#define N_ITL (sizeof(itl_bounds) / sizeof(itl_bounds[0]))

typedef struct {
    const double *bounds;
    size_t n;
    uint64_t counts[16]; /* per bucket, not cumulative; the last is +Inf */
    uint64_t total;
    double sum;
} histogram;

struct bw_metrics {
    uint64_t requests[N_ROUTES][N_CODES];
    struct {
        char name[32];
        uint64_t count;
    } reasons[MAX_REASONS];
    int n_reasons;
    uint64_t tokens, jobs_finished;
    histogram ttft, itl;
};

bw_metrics *bw_metrics_create(void)
{
    bw_metrics *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    m->ttft.bounds = ttft_bounds, m->ttft.n = N_TTFT;
    m->itl.bounds = itl_bounds, m->itl.n = N_ITL;
    return m;
}

static void observe(histogram *h, double v)
{
    size_t i = 0;
    while (i < h->n && v > h->bounds[i]) i++;
    h->counts[i]++;
    h->total++;
    h->sum += v;
}

static int has_prefix(const char *p, size_t len, const char *pre, size_t *rest)
{
    size_t n = strlen(pre);
    if (len <= n || memcmp(p, pre, n) != 0) return 0;
    *rest = n;
    return 1;
}

const char *bw_metrics_route(const char *p, size_t len)
{
    for (size_t i = 0; i < N_ROUTES; i++)
        if (!strchr(routes[i], '{') && strlen(routes[i]) == len && memcmp(p, routes[i], len) == 0) return routes[i];
    size_t n;
    int jobs = has_prefix(p, len, "/v1/jobs/", &n);
    if (!jobs && !has_prefix(p, len, "/v1/inference/", &n)) return "other";
    const char *id = p + n, *end = p + len;
    const char *slash = memchr(id, '/', (size_t)(end - id));
    if (!slash) return jobs ? "/v1/jobs/{id}" : "/v1/inference/{id}";
    if (end - slash == 7 && memcmp(slash, "/stream", 7) == 0) return jobs ? "/v1/jobs/{id}/stream" : "/v1/inference/{id}/stream";
    return "other";
}

void bw_metrics_request(bw_metrics *m, const char *route, int status)
{
    if (!m) return;
    size_t r = N_ROUTES - 1;
    for (size_t i = 0; i < N_ROUTES; i++)
        if (strcmp(route, routes[i]) == 0) r = i;
    if (status >= 100 && status < 100 + N_CODES) m->requests[r][status - 100]++;
}

/* Reasons come from the engine: anything that is not a short upper-case code, and any reason beyond the
 * table, is counted as OTHER so the label set stays small and well-formed. */
static void count_reason(bw_metrics *m, const char *name)
{
    if (strlen(name) >= sizeof(m->reasons[0].name) || name[strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")])
        name = "OTHER";
    for (;;) {
        for (int i = 0; i < m->n_reasons; i++)
            if (strcmp(m->reasons[i].name, name) == 0) {
                m->reasons[i].count++;
                return;
            }
        if (m->n_reasons < MAX_REASONS - 1 || strcmp(name, "OTHER") == 0) {
            strcpy(m->reasons[m->n_reasons].name, name);
            m->reasons[m->n_reasons++].count = 1;
            return;
        }
        name = "OTHER";
    }
}

void bw_metrics_job_end(bw_metrics *m, const bw_job *j)
{
    size_t len;
    const char *t = bw_job_terminal(j, &len);
    json_t *o = t ? json_loadb(t, len, 0, NULL) : NULL;
    const char *type = json_string_value(json_object_get(o, "type"));
    int ended = type && strcmp(type, "end") == 0;
    const char *reason = json_string_value(json_object_get(o, ended ? "stop_reason" : "code"));
    if (!reason) reason = "OTHER";
    double decode_ms = (double)json_integer_value(json_object_get(o, "decode_time_ms"));
    size_t n = bw_job_n_tokens(j);
    double tps = decode_ms > 0 ? (double)n * 1000.0 / decode_ms : 0;
    bw_log_field f[] = {
        {"job_id", bw_job_id(j), 0},
        {"outcome", ended ? "end" : "error", 0},
        {"stop_reason", reason, 0},
        {"tokens", NULL, (double)n},
        {"prompt_tokens", NULL, (double)bw_job_n_prompt(j)},
        {"decode_ms", NULL, decode_ms},
        {"tokens_per_s", NULL, (double)(long long)(tps * 10 + 0.5) / 10},
    };
    bw_log_fields(ended ? BW_LOG_INFO : BW_LOG_WARN, "job finished", f, (int)(sizeof(f) / sizeof(f[0])));
    if (m) {
        m->jobs_finished++;
        m->tokens += n;
        count_reason(m, reason);
    }
    json_decref(o);
}

void bw_metrics_tokens_written(bw_metrics *m, const bw_job *j, size_t first, size_t n, uint64_t prev_ns,
                               uint64_t now_ns)
{
    if (!m || n == 0) return;
    size_t i = first;
    if (i == 0) {
        uint64_t created = bw_job_created_ns(j);
        observe(&m->ttft, now_ns > created ? (double)(now_ns - created) / 1e9 : 0);
        i++;
    } else if (prev_ns) {
        observe(&m->itl, now_ns > prev_ns ? (double)(now_ns - prev_ns) / 1e9 : 0);
        i++;
    }
    for (; i < first + n; i++) observe(&m->itl, 0); /* they arrived together with the one before */
}

static void header(bw_buf *out, const char *name, const char *type, const char *help)
{
    bw_buf_addf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_histogram(bw_buf *out, const char *name, const char *help, const histogram *h)
{
    header(out, name, "histogram", help);
    uint64_t cum = 0;
    for (size_t i = 0; i < h->n; i++) {
        cum += h->counts[i];
        bw_buf_addf(out, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i], (unsigned long long)cum);
    }
    bw_buf_addf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n", name,
                (unsigned long long)h->total, name, h->sum, name, (unsigned long long)h->total);
}

static void gauge(bw_buf *out, const char *name, const char *help, double v)
{
    header(out, name, "gauge", help);
    bw_buf_addf(out, "%s %.17g\n", name, v);
}

void bw_metrics_render(bw_metrics *m, bw_front *f, bw_buf *out)
{
    static const bw_metrics none_yet;
    if (!m) m = (bw_metrics *)&none_yet;
    header(out, "beeworker_http_requests_total", "counter", "HTTP requests by route template and status code");
    for (size_t r = 0; r < N_ROUTES; r++)
        for (int c = 0; c < N_CODES; c++)
            if (m->requests[r][c])
                bw_buf_addf(out, "beeworker_http_requests_total{route=\"%s\",code=\"%d\"} %llu\n", routes[r], c + 100,
                            (unsigned long long)m->requests[r][c]);
    header(out, "beeworker_jobs_total", "counter", "finished jobs by stop reason (or error code)");
    for (int i = 0; i < m->n_reasons; i++)
        bw_buf_addf(out, "beeworker_jobs_total{reason=\"%s\"} %llu\n", m->reasons[i].name,
                    (unsigned long long)m->reasons[i].count);
    header(out, "beeworker_tokens_generated_total", "counter", "tokens generated by finished jobs");
    bw_buf_addf(out, "beeworker_tokens_generated_total %llu\n", (unsigned long long)m->tokens);
    render_histogram(out, "beeworker_time_to_first_token_seconds",
                     "from job submission until the first token was written to the client's socket", &m->ttft);
    render_histogram(out, "beeworker_inter_token_latency_seconds",
                     "between successive token writes to a client's socket (0 for tokens sharing a write)", &m->itl);

    const bw_proto_hello *h = bw_link_hello(f->link);
    int up = bw_link_state(f->link) == BW_LINK_READY || bw_link_state(f->link) == BW_LINK_LOADING;
    gauge(out, "beeworker_queue_depth", "jobs waiting: in the front for an engine, plus in the engine for a slot",
          (double)bw_jobs_queued(f->jobs) + (up ? h->queue_depth : 0));
    gauge(out, "beeworker_jobs_running", "jobs submitted to the engine and not finished", bw_jobs_running(f->jobs));
    gauge(out, "beeworker_active_streams", "open SSE (and OpenAI) streams reading a job", bw_jobs_streams(f->jobs));
    gauge(out, "beeworker_engine_slots", "generation slots of the engine", up ? h->slots_total : 0);
    gauge(out, "beeworker_engine_slots_busy", "generation slots in use", up ? h->slots_busy : 0);
    static const char *const states[] = {"starting", "loading", "ready", "restarting", "down", "draining"};
    const char *state = f->stopping ? "down" : bw_link_state_name(f->link);
    header(out, "beeworker_engine_state", "gauge", "1 for the engine's current state");
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
        bw_buf_addf(out, "beeworker_engine_state{state=\"%s\"} %d\n", states[i], strcmp(state, states[i]) == 0);
    unsigned epochs = bw_link_epochs_seen(f->link);
    header(out, "beeworker_engine_restarts_total", "counter", "engine epochs after the first (restarts seen)");
    bw_buf_addf(out, "beeworker_engine_restarts_total %u\n", epochs ? epochs - 1 : 0);
    header(out, "beeworker_engine_bad_messages_total", "counter", "engine messages dropped as invalid");
    bw_buf_addf(out, "beeworker_engine_bad_messages_total %lu\n", bw_link_bad_messages(f->link));

    /* what engine losses cost and what the job table repaired; jobs.c owns these counters */
    bw_jobs_stats st;
    bw_jobs_stats_get(f->jobs, &st);
    const struct {
        const char *name, *help;
        uint64_t v;
    } repair[] = {
        {"beeworker_engine_losses_total", "engines lost (crash, kill, BYE)", st.engine_losses},
        {"beeworker_jobs_resumed_total", "jobs submitted again to a new engine after theirs was lost", st.jobs_resumed},
        {"beeworker_tokens_resumed_total", "delivered tokens carried into resumed jobs", st.tokens_resumed},
        {"beeworker_token_gaps_repaired_total", "tokens recovered with REPLAY after a gap in the engine's messages",
         st.tokens_replayed},
        {"beeworker_token_gaps_unrepairable_total", "jobs ended because lost messages could not be replayed",
         st.gaps_unrepairable},
        {"beeworker_duplicate_tokens_suppressed_total", "token messages dropped as already delivered or stale",
         st.duplicates_suppressed},
        {"beeworker_slow_client_cancels_total", "jobs cancelled because their client fell too far behind",
         st.slow_client_cancels},
    };
    for (size_t i = 0; i < sizeof(repair) / sizeof(repair[0]); i++) {
        header(out, repair[i].name, "counter", repair[i].help);
        bw_buf_addf(out, "%s %llu\n", repair[i].name, (unsigned long long)repair[i].v);
    }

    /* speculative decoding, by draft source, summed from finished jobs */
    static const char *const src[] = {"prediction", "lookup"};
    header(out, "beeworker_spec_draft_tokens_total", "counter", "draft tokens verified, by source");
    for (int i = 0; i < 2; i++)
        bw_buf_addf(out, "beeworker_spec_draft_tokens_total{source=\"%s\"} %llu\n", src[i],
                    (unsigned long long)st.spec_drafted[i]);
    header(out, "beeworker_spec_accepted_tokens_total", "counter", "draft tokens accepted (sampled as drafted)");
    for (int i = 0; i < 2; i++)
        bw_buf_addf(out, "beeworker_spec_accepted_tokens_total{source=\"%s\"} %llu\n", src[i],
                    (unsigned long long)st.spec_accepted[i]);
    header(out, "beeworker_spec_rejected_tokens_total", "counter", "draft tokens rejected");
    for (int i = 0; i < 2; i++)
        bw_buf_addf(out, "beeworker_spec_rejected_tokens_total{source=\"%s\"} %llu\n", src[i],
                    (unsigned long long)(st.spec_drafted[i] - st.spec_accepted[i]));
    header(out, "beeworker_spec_acceptance_ratio", "gauge", "accepted / drafted tokens since start (0 before any)");
    for (int i = 0; i < 2; i++)
        bw_buf_addf(out, "beeworker_spec_acceptance_ratio{source=\"%s\"} %.4f\n", src[i],
                    st.spec_drafted[i] ? (double)st.spec_accepted[i] / (double)st.spec_drafted[i] : 0.0);
}
