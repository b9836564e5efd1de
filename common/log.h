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

#define bw_log_debug(...) bw_log(BW_LOG_DEBUG, __VA_ARGS__)
#define bw_log_info(...) bw_log(BW_LOG_INFO, __VA_ARGS__)
#define bw_log_warn(...) bw_log(BW_LOG_WARN, __VA_ARGS__)
#define bw_log_error(...) bw_log(BW_LOG_ERROR, __VA_ARGS__)

#endif
