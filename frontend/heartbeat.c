/* Heartbeat to the hive; see heartbeat.h.
 *
 * Threading: the loop thread builds each beat's body (it alone may read the front's state) and hands it
 * over under `mu`; the sender thread owns the CURL handle and only ever touches `pending`, `stop` and
 * the atomic `last_ok`. The process exits without joining it (_exit), like every other thread here. */
#include "frontend/heartbeat.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "frontend/handlers.h"
#include "frontend/link.h"
#include "frontend/supervisor.h"

#define TICK_MS 100
#define TIMEOUT_MS 5000     /* SPEC §3.5 */
#define RETRY_AFTER_MS 5000 /* after a failed beat, sooner than a long interval */

struct bw_heartbeat {
    bw_front *f;
    char url[2048];
    char shown_url[2048]; /* for logs: without user:password@ */
    h2o_timeout_t tick_to;
    h2o_timeout_entry_t tick;
    int ever_ready;
    const char *last_status;
    unsigned last_epochs; /* engine epochs seen at the last beat: a restart between ticks is news too */
    uint64_t next_due_ms;

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *pending; /* the body to send next, under mu */
    atomic_int last_ok;
    int logged_failing; /* sender thread only: one line per outage, not one per beat */
};

static uint64_t now_ms(void) { return bw_clock_mono_ns() / 1000000ull; }

static const char *health_status(bw_front *f)
{
    if (f->stopping || (f->sup && bw_sup_gave_up(f->sup))) return "unhealthy"; /* no engine will come back */
    return bw_link_state(f->link) == BW_LINK_READY ? "healthy" : "degraded";
}

static char *build_body(bw_front *f, const char *status)
{
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_t *info = bw_info_json(f);
    json_t *o = info ? json_pack("{s:s,s:s,s:s,s:o}", "worker_id", f->opts->worker_id, "timestamp", ts, "health_status",
                                 status, "worker", info)
                     : NULL;
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

static void beat(bw_heartbeat *h, const char *status)
{
    char *body = build_body(h->f, status);
    if (!body) return;
    pthread_mutex_lock(&h->mu);
    free(h->pending); /* not sent yet: the hive is slow; it gets this fresher one instead */
    h->pending = body;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
    uint64_t interval = (uint64_t)h->f->opts->heartbeat_s * 1000u;
    h->next_due_ms = now_ms() + interval;
}

static void on_tick(h2o_timeout_entry_t *e)
{
    bw_heartbeat *h = H2O_STRUCT_FROM_MEMBER(bw_heartbeat, tick, e);
    const char *status = health_status(h->f);
    if (!h->ever_ready && bw_link_state(h->f->link) == BW_LINK_READY) h->ever_ready = 1;
    if (h->ever_ready) {
        uint64_t now = now_ms();
        uint64_t interval = (uint64_t)h->f->opts->heartbeat_s * 1000u;
        uint64_t due = h->next_due_ms;
        if (!atomic_load(&h->last_ok) && interval > RETRY_AFTER_MS) due = due - interval + RETRY_AFTER_MS;
        unsigned epochs = bw_link_epochs_seen(h->f->link);
        if (!h->last_status || strcmp(status, h->last_status) != 0 || epochs != h->last_epochs || now >= due) {
            beat(h, status);
            h->last_status = status;
            h->last_epochs = epochs;
        }
    }
    h2o_timeout_link(h->f->loop, &h->tick_to, &h->tick);
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p, (void)arg;
    return size * n;
}

static void post(bw_heartbeat *h, CURL *c, const char *body)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    int ok = rc == CURLE_OK && code >= 200 && code < 300;
    atomic_store(&h->last_ok, ok);
    if (ok) {
        if (h->logged_failing) bw_log_info("heartbeat to %s delivered again", h->shown_url);
        h->logged_failing = 0;
        return;
    }
    if (h->logged_failing++ % 12 != 0) return; /* a long outage: a line now and then, not per beat */
    if (rc != CURLE_OK)
        bw_log_warn("heartbeat to %s failed: %s", h->shown_url, errbuf[0] ? errbuf : curl_easy_strerror(rc));
    else bw_log_warn("heartbeat to %s answered HTTP %ld", h->shown_url, code);
}

static void *sender(void *arg)
{
    bw_heartbeat *h = arg;
    CURL *c = curl_easy_init();
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (!c || !headers) {
        bw_log_error("heartbeat: cannot set up the HTTP client; no heartbeats will be sent");
        return NULL;
    }
    curl_easy_setopt(c, CURLOPT_URL, h->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* no SIGALRM for DNS timeouts: this is a threaded process */
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_USERAGENT, "beeworker/" BW_VERSION);
    for (;;) {
        pthread_mutex_lock(&h->mu);
        while (!h->pending) pthread_cond_wait(&h->cv, &h->mu);
        char *body = h->pending;
        h->pending = NULL;
        pthread_mutex_unlock(&h->mu);
        post(h, c, body);
        free(body);
    }
    return NULL;
}

/* The URL for log lines: user:password@ in a hive URL is a credential. */
static void redact(const char *url, char *out, size_t cap)
{
    const char *scheme = strstr(url, "://");
    const char *host = scheme ? scheme + 3 : url;
    const char *at = strchr(host, '@'), *slash = strchr(host, '/');
    if (at && (!slash || at < slash)) snprintf(out, cap, "%.*s***@%s", (int)(host - url), url, at + 1);
    else snprintf(out, cap, "%s", url);
}

bw_heartbeat *bw_heartbeat_start(bw_front *f, char *err, size_t errlen)
{
    bw_heartbeat *h = calloc(1, sizeof(*h));
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const char *base = f->opts->hive_url;
    size_t n = strlen(base);
    while (n && base[n - 1] == '/') n--;
    if (n + sizeof("/v1/heartbeat") > sizeof(h->url)) {
        snprintf(err, errlen, "--hive-url is longer than %zu bytes", sizeof(h->url) - sizeof("/v1/heartbeat"));
        free(h);
        return NULL;
    }
    snprintf(h->url, sizeof(h->url), "%.*s/v1/heartbeat", (int)n, base);
    redact(h->url, h->shown_url, sizeof(h->shown_url));
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "libcurl could not be initialised");
        free(h);
        return NULL;
    }
    h->f = f;
    atomic_init(&h->last_ok, 1);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    int rc = pthread_create(&h->thread, NULL, sender, h);
    if (rc) {
        snprintf(err, errlen, "cannot start the heartbeat thread: %s", strerror(rc));
        free(h);
        return NULL;
    }
    pthread_detach(h->thread);
    h2o_timeout_init(f->loop, &h->tick_to, TICK_MS);
    h->tick.cb = on_tick;
    h2o_timeout_link(f->loop, &h->tick_to, &h->tick);
    bw_log_info("heartbeat to %s every %d s once the engine is ready", h->shown_url, f->opts->heartbeat_s);
    return h;
}
