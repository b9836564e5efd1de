#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *log_component = "beeworker";
static enum bw_log_level log_min = BW_LOG_INFO;
static int log_json;

void bw_log_init(const char *component)
{
    log_component = component;
    const char *fmt = getenv("LLORCH_LOG_FORMAT");
    log_json = fmt && strcmp(fmt, "json") == 0;
    const char *lvl = getenv("LLORCH_LOG_LEVEL");
    if (lvl) {
        if (strcmp(lvl, "debug") == 0) log_min = BW_LOG_DEBUG;
        else if (strcmp(lvl, "warn") == 0) log_min = BW_LOG_WARN;
        else if (strcmp(lvl, "error") == 0) log_min = BW_LOG_ERROR;
    }
}

static void json_escape(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
}

void bw_log(enum bw_log_level level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < log_min) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);

    /* One fprintf per line keeps lines whole when several threads log. */
    flockfile(stderr);
    if (log_json) {
        fprintf(stderr, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"component\":\"%s\",\"msg\":\"", when,
                ts.tv_nsec / 1000000, names[level], log_component);
        json_escape(stderr, msg);
        fputs("\"}\n", stderr);
    } else {
        fprintf(stderr, "%s.%03ldZ %s %s: %s\n", when, ts.tv_nsec / 1000000, names[level], log_component, msg);
    }
    funlockfile(stderr);
}
