/* Reproducible random numbers and aligned buffers for the C kernel tests. Each test is a single file, so
 * the generator's state lives here as a static; a test seeds it by assigning g_rng (and prints the seed,
 * so a failure can be replayed). splitmix64: fast, and every seed gives a different full-period stream. */
#ifndef BW_TESTS_UNIT_RAND_H
#define BW_TESTS_UNIT_RAND_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t g_rng;

static inline uint64_t rnd_u64(void)
{
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline double rnd_unit(void) /* [0, 1) */ { return (double)(rnd_u64() >> 11) * 0x1p-53; }

static inline float rnd_range(double lo, double hi) { return (float)(lo + (hi - lo) * rnd_unit()); }

/* 64-byte aligned, rounded up to whole cache lines plus one (the SIMD tails may read a full vector). */
static inline void *xaligned(size_t bytes)
{
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

#endif
