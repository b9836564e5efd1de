/* The arithmetic of token sampling, written once for the CPU sampler (engine/sampler.c) and the device
 * sampler (engine/cuda/sample.cu): the same code chooses the same token from the same logits on both.
 *
 * Owns: the random stream ((seed, index) -> uniform), the repetition penalty of one logit, the candidate
 * window, the candidate order, exp, and the choice among sorted candidates (top-k, softmax at the
 * temperature, min-p, top-p, the draw). Every float operation is an explicit, correctly rounded one,
 * and exp is computed here (not by a math library), so neither libm nor a compiler flag changes a
 * choice. Finding the maximum and sorting the candidates are exact and left to the caller: any correct
 * sort gives the one order bw_sc_before defines (ids are distinct). */
#ifndef BW_ENGINE_SAMPLE_CORE_H
#define BW_ENGINE_SAMPLE_CORE_H

#include <stdint.h>

#ifdef __CUDACC__
#define BW_SC_FN static inline __host__ __device__
#else
#define BW_SC_FN static inline
#endif

/* Tokens this far below the best one (probability ratio e^-20 ~ 2e-9, times the temperature) can never
 * be drawn in any meaningful way; leaving them out keeps a flat distribution over 50k tokens cheap. */
#define BW_SC_LOGIT_WINDOW 20.0f

BW_SC_FN uint64_t bw_sc_splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The uniform [0,1) draw for token index `index` of a job: 53 random bits, a pure function of both. */
BW_SC_FN double bw_sc_uniform(uint64_t seed, uint64_t index)
{
    const uint64_t r = bw_sc_splitmix64(bw_sc_splitmix64(seed) ^ bw_sc_splitmix64(index + 0x632be59bd9b4e019ull));
    return (double)(r >> 11) * (1.0 / 9007199254740992.0);
}

/* ---- correctly rounded operations, the same on both sides ---- */
BW_SC_FN float bw_sc_fmul(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return __builtin_fmaf(a, b, -0.0f); /* a*b exactly rounded once; a compiler cannot fuse it into a
                                           later add the way it may fuse a plain a*b */
#endif
}
BW_SC_FN float bw_sc_fdiv(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}
BW_SC_FN float bw_sc_fsub(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}
BW_SC_FN double bw_sc_dfma(double a, double b, double c)
{
#ifdef __CUDA_ARCH__
    return __fma_rn(a, b, c);
#else
    return __builtin_fma(a, b, c);
#endif
}
BW_SC_FN double bw_sc_dadd(double a, double b)
{
#ifdef __CUDA_ARCH__
    return __dadd_rn(a, b);
#else
    return a + b;
#endif
}
BW_SC_FN double bw_sc_dmul(double a, double b)
{
#ifdef __CUDA_ARCH__
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
}

/* One logit under the repetition penalty (llama.cpp's rule: divide a positive logit, multiply a
 * negative one). */
BW_SC_FN float bw_sc_penalize(float l, float penalty)
{
    return l > 0.0f ? bw_sc_fdiv(l, penalty) : bw_sc_fmul(l, penalty);
}

/* Candidates are the logits >= this. */
BW_SC_FN float bw_sc_threshold(float maxl, float temperature)
{
    return bw_sc_fsub(maxl, bw_sc_fmul(BW_SC_LOGIT_WINDOW, temperature));
}

/* The candidate order: larger logit first, ties by smaller id. */
BW_SC_FN int bw_sc_before(float va, int32_t ia, float vb, int32_t ib) { return va != vb ? va > vb : ia < ib; }

/* exp(x) rounded to float, for x in [-88, 0]: x = k ln2 + r with |r| <= ln2/2 (ln2 in two parts, the
 * product k*ln2_hi exact), e^r by its Taylor series to r^13 in double (relative error < 1e-17 on
 * that range), times 2^k built from bits. Only fma, add and multiply in double: the same bits on every
 * machine. */
BW_SC_FN float bw_sc_expf(float xf)
{
    const double x = (double)xf;
    if (!(x >= -87.0)) return 0.0f; /* below float's normal range (e^-87 ~ 1.6e-38), or NaN */
    if (x > 0.0) return 1.0f;       /* never asked: candidates are at most the maximum */
    /* k = round(x / ln2), computed as floor(x*log2e + 0.5) */
    const double t = bw_sc_dfma(x, 1.4426950408889634, 0.5);
    int64_t k = (int64_t)t;
    if ((double)k > t) k -= 1; /* truncation toward zero -> floor for negatives */
    const double ln2_hi = 0.693147180369123816490, ln2_lo = 1.90821492927058770002e-10;
    const double r = bw_sc_dfma(-(double)k, ln2_lo, bw_sc_dfma(-(double)k, ln2_hi, x));
    /* Horner from 1/13! down to 1/0! */
    double p = 1.0 / 6227020800.0;
    p = bw_sc_dfma(p, r, 1.0 / 479001600.0);
    p = bw_sc_dfma(p, r, 1.0 / 39916800.0);
    p = bw_sc_dfma(p, r, 1.0 / 3628800.0);
    p = bw_sc_dfma(p, r, 1.0 / 362880.0);
    p = bw_sc_dfma(p, r, 1.0 / 40320.0);
    p = bw_sc_dfma(p, r, 1.0 / 5040.0);
    p = bw_sc_dfma(p, r, 1.0 / 720.0);
    p = bw_sc_dfma(p, r, 1.0 / 120.0);
    p = bw_sc_dfma(p, r, 1.0 / 24.0);
    p = bw_sc_dfma(p, r, 1.0 / 6.0);
    p = bw_sc_dfma(p, r, 0.5);
    p = bw_sc_dfma(p, r, 1.0);
    p = bw_sc_dfma(p, r, 1.0);
    /* 2^k for k in [-126, 0]: a normal double from its bits */
    union {
        uint64_t u;
        double d;
    } s;
    s.u = (uint64_t)(1023 + k) << 52;
    return (float)bw_sc_dmul(p, s.d);
}

typedef struct {
    float temperature; /* > 0 here: greedy never reaches bw_sc_pick */
    float top_p;       /* 1 = off */
    int32_t top_k;     /* 0 = off */
    float min_p;       /* 0 = off */
} bw_sc_params;

/* The argmax the samplers agree on: the largest logit, the smallest id among equals. A parallel
 * reduction merges partial results with this (associative and commutative: any tree gives the same). */
BW_SC_FN void bw_sc_argmax_merge(float *v, int32_t *i, float v2, int32_t i2)
{
    if (v2 > *v || (v2 == *v && i2 < *i)) *v = v2, *i = i2;
}

/* One compare-exchange of a bitonic sorting network over n (a power of two) candidates, for element
 * i at stage (k, j): afterwards the candidates are in bw_sc_before order. A thread per i on the device,
 * a loop on the host; the result is the unique sorted order whoever runs it. */
BW_SC_FN void bw_sc_bitonic_step(int32_t *id, float *v, int32_t i, int32_t j, int32_t k)
{
    const int32_t l = i ^ j;
    if (l <= i) return;
    const int first_half = (i & k) == 0;
    const int swap = first_half ? bw_sc_before(v[l], id[l], v[i], id[i]) : bw_sc_before(v[i], id[i], v[l], id[l]);
    if (swap) {
        const float tv = v[i];
        const int32_t ti = id[i];
        v[i] = v[l], id[i] = id[l];
        v[l] = tv, id[l] = ti;
    }
}

/* How many sorted candidates top-k leaves. */
BW_SC_FN int32_t bw_sc_top_k(int32_t n, const bw_sc_params *p) { return p->top_k > 0 && p->top_k < n ? p->top_k : n; }

/* A candidate's unnormalised probability at the temperature: exp((v - maxl) / T). Element-wise, so
 * the device computes them in parallel. */
BW_SC_FN float bw_sc_prob(float v, float maxl, float temperature)
{
    return bw_sc_expf(bw_sc_fdiv(bw_sc_fsub(v, maxl), temperature));
}

/* The choice among the n >= 1 leading sorted candidates (after top-k) with probabilities pr[] (as
 * bw_sc_prob gives them), u the draw in [0,1). Sums run in double, in order: the total; min-p keeps the
 * leading candidates with pr >= pr_0 * min_p; top-p keeps the shortest prefix whose sum reaches top_p
 * of the total; the token whose running sum first exceeds u * total. Sequential by nature: one thread. */
BW_SC_FN int32_t bw_sc_choose(const int32_t *id, const float *pr, int32_t n, const bw_sc_params *p, double u)
{
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) sum = bw_sc_dadd(sum, (double)pr[i]);
    if (p->min_p > 0.0f) {
        const float floor_p = bw_sc_fmul(pr[0], p->min_p);
        int32_t keep = 1;
        while (keep < n && pr[keep] >= floor_p) keep++;
        for (int32_t i = keep; i < n; i++) sum = bw_sc_dadd(sum, -(double)pr[i]);
        n = keep;
    }
    if (p->top_p < 1.0f) {
        const double target = bw_sc_dmul((double)p->top_p, sum);
        double acc = 0.0;
        int32_t keep = 0;
        while (keep < n) {
            acc = bw_sc_dadd(acc, (double)pr[keep]);
            keep++;
            if (acc >= target) break;
        }
        n = keep;
        sum = acc;
    }
    const double r = bw_sc_dmul(u, sum);
    double acc = 0.0;
    for (int32_t i = 0; i < n; i++) {
        acc = bw_sc_dadd(acc, (double)pr[i]);
        if (r < acc) return id[i];
    }
    return id[n - 1];
}

/* The whole choice, sequentially (the CPU sampler): top-k, probabilities (v[] is overwritten), choice. */
BW_SC_FN int32_t bw_sc_pick(const int32_t *id, float *v, int32_t n, float maxl, const bw_sc_params *p, double u)
{
    n = bw_sc_top_k(n, p);
    for (int32_t i = 0; i < n; i++) v[i] = bw_sc_prob(v[i], maxl, p->temperature);
    return bw_sc_choose(id, v, n, p, u);
}

#endif
