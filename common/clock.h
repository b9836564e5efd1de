/* Time helpers shared by both processes: monotonic nanoseconds for durations, realtime nanoseconds for
 * timestamps that cross the process boundary (SSE `ts_ns`). */
#ifndef BW_COMMON_CLOCK_H
#define BW_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t bw_clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t bw_clock_real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif
