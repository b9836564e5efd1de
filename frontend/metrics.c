/* Prometheus metrics; see metrics.h. Series are fixed arrays indexed by bounded labels (route templates,
 * status codes, stop reasons), so a hostile client cannot grow them. */
#include "frontend/metrics.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define MAX_ROUTES 32
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
    const char *const *routes; /* the route labels; the last is the catch-all */
    size_t n_routes;
    uint64_t requests[MAX_ROUTES][N_CODES];
    struct {
        char name[32];
        uint64_t count;
    } reasons[MAX_REASONS];
    int n_reasons;
    uint64_t tokens, jobs_finished;
    histogram ttft, itl;
};

bw_metrics *bw_metrics_create(const char *const *route_labels, size_t n_labels)
{
    if (n_labels == 0 || n_labels > MAX_ROUTES) return NULL;
    bw_metrics *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    m->routes = route_labels;
    m->n_routes = n_labels;
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

void bw_metrics_request(bw_metrics *m, const char *route, int status)
{
    if (!m) return;
    size_t r = m->n_routes - 1;
    for (size_t i = 0; i < m->n_routes; i++)
        if (strcmp(route, m->routes[i]) == 0) r = i;
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

void bw_metrics_job_end(bw_metrics *m, const char *job_id, int failed, const char *reason, size_t tokens,
                        uint32_t prompt_tokens, uint64_t decode_ms)
{
    double tps = decode_ms > 0 ? (double)tokens * 1000.0 / (double)decode_ms : 0;
    bw_log_field f[] = {
        {"job_id", job_id, 0},
        {"outcome", failed ? "error" : "end", 0},
        {"stop_reason", reason, 0},
        {"tokens", NULL, (double)tokens},
        {"prompt_tokens", NULL, (double)prompt_tokens},
        {"decode_ms", NULL, (double)decode_ms},
        {"tokens_per_s", NULL, (double)(long long)(tps * 10 + 0.5) / 10},
    };
    bw_log_fields(failed ? BW_LOG_WARN : BW_LOG_INFO, "job finished", f, (int)(sizeof(f) / sizeof(f[0])));
    if (m) {
        m->jobs_finished++;
        m->tokens += tokens;
        count_reason(m, reason);
    }
}

void bw_metrics_tokens_written(bw_metrics *m, uint64_t created_ns, size_t first, size_t n, uint64_t prev_ns,
                               uint64_t now_ns)
{
    if (!m || n == 0) return;
    size_t i = first;
    if (i == 0) {
        observe(&m->ttft, now_ns > created_ns ? (double)(now_ns - created_ns) / 1e9 : 0);
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
    bw_buf_addf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n", name, (unsigned long long)h->total,
                name, h->sum, name, (unsigned long long)h->total);
}

static void gauge(bw_buf *out, const char *name, const char *help, double v)
{
    header(out, name, "gauge", help);
    bw_buf_addf(out, "%s %.17g\n", name, v);
}

static void counter(bw_buf *out, const char *name, const char *help, uint64_t v)
{
    header(out, name, "counter", help);
    bw_buf_addf(out, "%s %llu\n", name, (unsigned long long)v);
}

/* The series this module counts itself. */
static void render_own(const bw_metrics *m, bw_buf *out)
{
    header(out, "beeworker_http_requests_total", "counter", "HTTP requests by route template and status code");
    for (size_t r = 0; r < m->n_routes; r++)
        for (int c = 0; c < N_CODES; c++)
            if (m->requests[r][c])
                bw_buf_addf(out, "beeworker_http_requests_total{route=\"%s\",code=\"%d\"} %llu\n", m->routes[r],
                            c + 100, (unsigned long long)m->requests[r][c]);
    header(out, "beeworker_jobs_total", "counter", "finished jobs by stop reason (or error code)");
    for (int i = 0; i < m->n_reasons; i++)
        bw_buf_addf(out, "beeworker_jobs_total{reason=\"%s\"} %llu\n", m->reasons[i].name,
                    (unsigned long long)m->reasons[i].count);
    counter(out, "beeworker_tokens_generated_total", "tokens generated by finished jobs", m->tokens);
    render_histogram(out, "beeworker_time_to_first_token_seconds",
                     "from job submission until the first token was written to the client's socket", &m->ttft);
    render_histogram(out, "beeworker_inter_token_latency_seconds",
                     "between successive token writes to a client's socket (0 for tokens sharing a write)", &m->itl);
}

static void render_engine(const bw_metrics_gauges *g, bw_buf *out)
{
    gauge(out, "beeworker_queue_depth", "jobs waiting: in the front for an engine, plus in the engine for a slot",
          (double)g->queued + (double)g->engine_queue_depth);
    gauge(out, "beeworker_jobs_running", "jobs submitted to the engine and not finished", g->running);
    gauge(out, "beeworker_active_streams", "open SSE (and OpenAI) streams reading a job", g->streams);
    gauge(out, "beeworker_engine_slots", "generation slots of the engine", g->slots_total);
    gauge(out, "beeworker_engine_slots_busy", "generation slots in use", g->slots_busy);
    static const char *const states[] = {"starting", "loading", "ready", "restarting", "down", "draining"};
    header(out, "beeworker_engine_state", "gauge", "1 for the engine's current state");
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
        bw_buf_addf(out, "beeworker_engine_state{state=\"%s\"} %d\n", states[i],
                    strcmp(g->engine_state, states[i]) == 0);
    header(out, "beeworker_engine_restarts_total", "counter", "engine epochs after the first (restarts seen)");
    bw_buf_addf(out, "beeworker_engine_restarts_total %u\n", g->restarts);
    header(out, "beeworker_engine_bad_messages_total", "counter", "engine messages dropped as invalid");
    bw_buf_addf(out, "beeworker_engine_bad_messages_total %lu\n", g->bad_messages);
}

static void render_repair(const bw_metrics_gauges *g, bw_buf *out)
{
    counter(out, "beeworker_engine_losses_total", "engines lost (crash, kill, BYE)", g->engine_losses);
    counter(out, "beeworker_jobs_resumed_total", "jobs submitted again to a new engine after theirs was lost",
            g->jobs_resumed);
    counter(out, "beeworker_tokens_resumed_total", "delivered tokens carried into resumed jobs", g->tokens_resumed);
    counter(out, "beeworker_token_gaps_repaired_total",
            "tokens recovered with REPLAY after a gap in the engine's messages", g->tokens_replayed);
    counter(out, "beeworker_token_gaps_unrepairable_total", "jobs ended because lost messages could not be replayed",
            g->gaps_unrepairable);
    counter(out, "beeworker_duplicate_tokens_suppressed_total", "token messages dropped as already delivered or stale",
            g->duplicates_suppressed);
    counter(out, "beeworker_slow_client_cancels_total", "jobs cancelled because their client fell too far behind",
            g->slow_client_cancels);
}

/* speculative decoding, by draft source, summed from finished jobs */
static void render_spec(const bw_metrics_gauges *g, bw_buf *out)
{
    static const char *const src[] = {"prediction", "lookup"};
    header(out, "beeworker_spec_draft_tokens_total", "counter", "draft tokens verified, by source");
    for (int i = 0; i < 2; i++)
        bw_buf_addf(out, "beeworker_spec_draft_tokens_total{source=\"%s\"} %llu\n", src[i],
                    (unsigned long long)g->spec_drafted[i]);
    header(out, "beeworker_spec_accepted_tokens_total", "counter", "draft tokens accepted (sampled as drafted)");
    for (int i = 0; i < 2; i++)
        bw_buf_addf(out, "beeworker_spec_accepted_tokens_total{source=\"%s\"} %llu\n", src[i],
                    (unsigned long long)g->spec_accepted[i]);
    header(out, "beeworker_spec_rejected_tokens_total", "counter", "draft tokens rejected");
    for (int i = 0; i < 2; i++)
        bw_buf_addf(out, "beeworker_spec_rejected_tokens_total{source=\"%s\"} %llu\n", src[i],
                    (unsigned long long)(g->spec_drafted[i] - g->spec_accepted[i]));
    header(out, "beeworker_spec_acceptance_ratio", "gauge", "accepted / drafted tokens since start (0 before any)");
    for (int i = 0; i < 2; i++)
        bw_buf_addf(out, "beeworker_spec_acceptance_ratio{source=\"%s\"} %.4f\n", src[i],
                    g->spec_drafted[i] ? (double)g->spec_accepted[i] / (double)g->spec_drafted[i] : 0.0);
}

void bw_metrics_render(const bw_metrics *m, const bw_metrics_gauges *g, bw_buf *out)
{
    static const char *const none[] = {"other"};
    static const bw_metrics none_yet = {.routes = none, .n_routes = 1};
    render_own(m ? m : &none_yet, out);
    render_engine(g, out);
    render_repair(g, out);
    render_spec(g, out);
}
