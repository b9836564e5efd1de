/* Operator-facing logging for both processes.
 *
 * Owns: the log format (plain text or one JSON object per line, chosen by LLORCH_LOG_FORMAT=json)
 * and the minimum level (LLORCH_LOG_LEVEL=debug|info|warn|error). Writes to stderr only, so journald
 * captures it. Must not be used on the per-token path above debug level. */
#ifndef BW_COMMON_LOG_H
#define BW_COMMON_LOG_H

enum bw_log_level { BW_LOG_DEBUG, BW_LOG_INFO, BW_LOG_WARN, BW_LOG_ERROR };

/* Reads LLORCH_LOG_FORMAT / LLORCH_LOG_LEVEL; `component` prefixes every line ("engine", "front"). */
void bw_log_init(const char *component);
void bw_log(enum bw_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One event with named fields, for lines a program reads back (request and job logs): plain text gives
 * "msg key=value ...", JSON gives the fields as members of the line's object. A field with str == NULL
 * carries the number num. Keys are plain identifiers chosen by the caller; values are escaped. */
typedef struct {
    const char *key;
    const char *str;
    double num;
} bw_log_field;
void bw_log_fields(enum bw_log_level level, const char *msg, const bw_log_field *fields, int n);

#define bw_log_debug(...) bw_log(BW_LOG_DEBUG, __VA_ARGS__)
#define bw_log_info(...) bw_log(BW_LOG_INFO, __VA_ARGS__)
#define bw_log_warn(...) bw_log(BW_LOG_WARN, __VA_ARGS__)
#define bw_log_error(...) bw_log(BW_LOG_ERROR, __VA_ARGS__)

#endif
