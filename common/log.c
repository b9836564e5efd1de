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

/* Plain-text values stay on one line and split unambiguously: quoted when they hold spaces, quotes or
 * '=', and bytes below 0x20 shown as '?' so a hostile value cannot forge a second log line. */
static void plain_value(FILE *f, const char *s)
{
    int quote = !*s || strpbrk(s, " \"=") != NULL;
    if (quote) fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f) fputc('?', f);
        else if (quote && (c == '"' || c == '\\')) fprintf(f, "\\%c", c);
        else fputc(c, f);
    }
    if (quote) fputc('"', f);
}

static void emit(enum bw_log_level level, const char *msg, const bw_log_field *fields, int n);

void bw_log_fields(enum bw_log_level level, const char *msg, const bw_log_field *fields, int n)
{
    if (level < log_min) return;
    emit(level, msg, fields, n);
}

void bw_log(enum bw_log_level level, const char *fmt, ...)
{
    if (level < log_min) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emit(level, msg, NULL, 0);
}

static void emit(enum bw_log_level level, const char *msg, const bw_log_field *fields, int n)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
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
        fputc('"', stderr);
        for (int i = 0; i < n; i++) {
            fprintf(stderr, ",\"%s\":", fields[i].key);
            if (fields[i].str) {
                fputc('"', stderr);
                json_escape(stderr, fields[i].str);
                fputc('"', stderr);
            } else {
                fprintf(stderr, "%.15g", fields[i].num == fields[i].num ? fields[i].num : 0.0);
            }
        }
        fputs("}\n", stderr);
    } else {
        fprintf(stderr, "%s.%03ldZ %s %s: %s", when, ts.tv_nsec / 1000000, names[level], log_component, msg);
        for (int i = 0; i < n; i++) {
            fprintf(stderr, " %s=", fields[i].key);
            if (fields[i].str) plain_value(stderr, fields[i].str);
            else fprintf(stderr, "%.15g", fields[i].num);
        }
        fputc('\n', stderr);
    }
    funlockfile(stderr);
}
