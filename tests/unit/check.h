/* Soft checks for the C unit tests. A failed CHECK prints one line on stderr,
 *     FAIL file:line: condition[: message]
 * and is counted instead of stopping the test, so one run reports every broken check; main() turns
 * check_failed into its exit status. Each test is a single file, so the state lives here as statics.
 *
 *   CHECK(cond)                  the condition's text is the report
 *   CHECK(cond, fmt, ...)        adds a printf-style message
 *
 * A test that can fail thousands of checks at once (one per element) defines CHECK_MAX_REPORTS before
 * including this header: later failures are still counted, not printed. */
#ifndef BW_TESTS_UNIT_CHECK_H
#define BW_TESTS_UNIT_CHECK_H

#include <stdarg.h>
#include <stdio.h>

#ifndef CHECK_MAX_REPORTS
#define CHECK_MAX_REPORTS (-1) /* no limit */
#endif

static int check_count;  /* checks run */
static int check_failed; /* checks failed */

/* Counts a failure; prints its "FAIL file:line: condition" (no newline) and returns 1 while reports are
 * still wanted, else returns 0. */
static inline int check_fail(const char *file, int line, const char *cond)
{
    check_failed++;
    if (CHECK_MAX_REPORTS >= 0 && check_failed > CHECK_MAX_REPORTS) return 0;
    fprintf(stderr, "FAIL %s:%d: %s", file, line, cond);
    return 1;
}

__attribute__((format(printf, 1, 2))) static inline void check_message(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(": ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        check_count++;                                                                                                 \
        if (!(cond) && check_fail(__FILE__, __LINE__, #cond)) {                                                        \
            __VA_OPT__(check_message(__VA_ARGS__);)                                                                    \
            fputc('\n', stderr);                                                                                       \
        }                                                                                                              \
    } while (0)

#endif
