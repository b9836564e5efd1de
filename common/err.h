/* Error messages for the operator, written into a caller's buffer. Modules that report failures through
 * a (char *err, size_t errlen) pair start each message with their name ("tokenizer: ...") so the line
 * says where it came from. Header-only: no state, safe in both processes. */
#ifndef BW_COMMON_ERR_H
#define BW_COMMON_ERR_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

/* Writes "<module>: <message>" into err (truncated to errlen); does nothing when err is NULL or empty. */
__attribute__((format(printf, 4, 5))) static inline void bw_err_set(char *err, size_t errlen, const char *module,
                                                                    const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    int n = snprintf(err, errlen, "%s: ", module);
    if (n < 0 || (size_t)n >= errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

#endif
