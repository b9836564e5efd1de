/* Flag values for both binaries; see opts.h. */
#include "common/opts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int bw_opt_long(const char *prog, const char *flag, const char *arg, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno || end == arg || *end || v < lo || v > hi) {
        fprintf(stderr, "%s: %s wants an integer in %ld..%ld, got '%s'\n", prog, flag, lo, hi, arg);
        return -1;
    }
    *out = v;
    return 0;
}

int bw_opt_int(const char *prog, const char *flag, const char *arg, int lo, int hi, int *out)
{
    long v;
    if (bw_opt_long(prog, flag, arg, lo, hi, &v)) return -1;
    *out = (int)v;
    return 0;
}

int bw_opt_size(const char *prog, const char *flag, const char *arg, size_t lo, size_t hi, size_t *out)
{
    long v;
    if (bw_opt_long(prog, flag, arg, (long)lo, (long)hi, &v)) return -1;
    *out = (size_t)v;
    return 0;
}

int bw_opt_u64(const char *prog, const char *flag, const char *arg, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    /* strtoull takes "-1" as 2^64 - 1: a sign is refused, not wrapped */
    if (errno || end == arg || *end || arg[0] == '-') {
        fprintf(stderr, "%s: %s wants an unsigned 64-bit integer, got '%s'\n", prog, flag, arg);
        return -1;
    }
    *out = v;
    return 0;
}

int bw_opt_double(const char *prog, const char *flag, const char *arg, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (errno || end == arg || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "%s: %s wants a number in %g..%g, got '%s'\n", prog, flag, lo, hi, arg);
        return -1;
    }
    *out = v;
    return 0;
}

int bw_opt_float(const char *prog, const char *flag, const char *arg, double lo, double hi, float *out)
{
    double v;
    if (bw_opt_double(prog, flag, arg, lo, hi, &v)) return -1;
    *out = (float)v;
    return 0;
}

int bw_opt_backend(const char *prog, const char *arg)
{
    if (strcmp(arg, "auto") && strcmp(arg, "cpu") && strcmp(arg, "cuda")) {
        fprintf(stderr, "%s: --backend is auto, cpu or cuda, got '%s'\n", prog, arg);
        return -1;
    }
    return 0;
}

void bw_opt_bad_flag(const char *prog, const char *arg)
{
    fprintf(stderr, "%s: unknown or incomplete option '%s' (see --help)\n", prog, arg);
}

void bw_opt_unexpected(const char *prog, const char *arg)
{
    fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", prog, arg);
}
