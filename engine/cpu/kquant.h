/* What the portable and the SIMD kernels share about the K types (Q2_K ... Q6_K): the activation
 * record they are multiplied with, the unpacking of a super-block's scales, and the float arithmetic
 * that turns a super-block's integer sums into its share of an output. Internal to engine/cpu/.
 *
 * A K-type product is computed super-block by super-block, as llama.cpp does against Q8_K activations:
 * with u[e] the weight's unsigned code, sc[g] and cm[g] the integers of 16-element group g (below), and
 * y[e], bsum[g], dy the activation's Q8_K codes, group sums and scale,
 *   I = sum_e sc[g(e)] * u[e] * y[e],   C = sum_g cm[g] * bsum[g]      (exact, int32)
 *   Q2_K, Q4_K, Q5_K: share = (d * dy) * I - (dmin * dy) * C            (cm = the group's minimum)
 *   Q3_K, Q6_K:       share = (d * dy) * (I - C)                       (cm = code offset 4 or 32 * sc)
 * and the output is the sum of the shares in super-block order. I and C are integers, so every path
 * and every tiling computes them exactly; the float steps are this header's, so all paths agree bit for
 * bit and an output never depends on its batch.
 * Dequantized, element e is (d * sc[g]) * (u[e] - off) - dmin * m[g], off = 4 (Q3_K), 32 (Q6_K), else 0. */
#ifndef BW_ENGINE_CPU_KQUANT_H
#define BW_ENGINE_CPU_KQUANT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "engine/tensor.h"

#define BW_ACT_ALIGN 64

static inline int bw_is_ktype(enum bw_type t)
{
    return t == BW_TYPE_Q2_K || t == BW_TYPE_Q3_K || t == BW_TYPE_Q4_K || t == BW_TYPE_Q5_K || t == BW_TYPE_Q6_K;
}

/* Activation record of a K-type product, one per token, BW_ACT_ALIGN-aligned:
 *   int8_t  qs[cols]         Q8_K codes, q = round_half_even(x * (-127 / x_amax)), x_amax the
 *                            element of largest magnitude in the super-block (with its sign)
 *   float   d[cols/256]      1 / (-127 / x_amax)
 *   int16_t bsums[cols/16]   sums of 16 consecutive codes */
static inline const float *bw_q8k_d(const uint8_t *rec, int64_t cols) { return (const float *)(rec + cols); }

static inline const int16_t *bw_q8k_bsums(const uint8_t *rec, int64_t cols)
{
    return (const int16_t *)(rec + cols + (cols / BW_QK_K) * (int64_t)sizeof(float));
}

static inline size_t bw_q8k_bytes(int64_t cols)
{
    return (size_t)cols + (size_t)(cols / BW_QK_K) * sizeof(float) + (size_t)(cols / 16) * sizeof(int16_t);
}

/* Quantizes one token's row into a K-type record: the portable path's routine, which the SIMD paths'
 * own (bw_avx2_quant_q8k) reproduces bit for bit. */
void bw_quant_q8k(const float *x, int64_t cols, void *rec);

/* IEEE half -> float, exact; inline because it sits in the inner loops of the portable path, where an
 * out-of-line call per element would dominate. */
static inline float bw_h2f(uint16_t h)
{
    uint32_t em = h & 0x7fffu;
    uint32_t u = em << 13;
    float f;
    memcpy(&f, &u, 4);
    f *= 0x1p112f; /* rebias the exponent; exact for normals and subnormals alike */
    memcpy(&u, &f, 4);
    if (em >= 0x7c00u) u = 0x7f800000u | (em << 13); /* inf and nan */
    u |= (uint32_t)(h & 0x8000u) << 16;
    memcpy(&f, &u, 4);
    return f;
}

static inline float bw_kq_h2f(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return bw_h2f(h);
}

/* Offset of d in a block (dmin, where the type has one, follows it). */
static inline int bw_kq_d_off(enum bw_type t)
{
    switch (t) {
    case BW_TYPE_Q2_K: return offsetof(bw_block_q2_k, d);
    case BW_TYPE_Q3_K: return offsetof(bw_block_q3_k, d);
    case BW_TYPE_Q6_K: return offsetof(bw_block_q6_k, d);
    default: return 0; /* Q4_K, Q5_K */
    }
}

static inline int bw_kq_has_min(enum bw_type t) { return t == BW_TYPE_Q2_K || t == BW_TYPE_Q4_K || t == BW_TYPE_Q5_K; }

static inline int bw_kq_code_offset(enum bw_type t) { return t == BW_TYPE_Q3_K ? 4 : t == BW_TYPE_Q6_K ? 32 : 0; }

/* sc[g], m[g] for the 16 groups of 16 elements of super-block blk (m: 0 for types without a minimum;
 * Q3_K's sc is already signed, sc - 32). */
static inline void bw_kq_scales(enum bw_type t, const uint8_t *blk, int16_t sc[16], int16_t m[16])
{
    switch (t) {
    case BW_TYPE_Q2_K: {
        const uint8_t *s = blk + offsetof(bw_block_q2_k, scales);
        for (int g = 0; g < 16; g++) {
            sc[g] = s[g] & 15;
            m[g] = s[g] >> 4;
        }
        return;
    }
    case BW_TYPE_Q3_K: {
        const uint8_t *s = blk + offsetof(bw_block_q3_k, scales);
        for (int g = 0; g < 16; g++) {
            int lo = g < 8 ? s[g] & 15 : s[g - 8] >> 4;
            int hi = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
            sc[g] = (int16_t)((lo | hi << 4) - 32);
            m[g] = 0;
        }
        return;
    }
    case BW_TYPE_Q4_K:
    case BW_TYPE_Q5_K: {
        const uint8_t *s = blk + offsetof(bw_block_q4_k, scales); /* same place in both */
        for (int j = 0; j < 8; j++) {
            int a, b;
            if (j < 4) {
                a = s[j] & 63;
                b = s[j + 4] & 63;
            } else {
                a = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
                b = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
            }
            sc[2 * j] = sc[2 * j + 1] = (int16_t)a;
            m[2 * j] = m[2 * j + 1] = (int16_t)b;
        }
        return;
    }
    default: { /* Q6_K */
        const int8_t *s = (const int8_t *)(blk + offsetof(bw_block_q6_k, scales));
        for (int g = 0; g < 16; g++) {
            sc[g] = s[g];
            m[g] = 0;
        }
        return;
    }
    }
}

/* cm[g] of the header comment. */
static inline void bw_kq_corr(enum bw_type t, const int16_t sc[16], const int16_t m[16], int16_t cm[16])
{
    int off = bw_kq_code_offset(t);
    for (int g = 0; g < 16; g++) cm[g] = off ? (int16_t)(off * sc[g]) : m[g];
}

/* Keeps the compiler from fusing a product into a later addition (GCC contracts a * b + c into an FMA
 * where the target has one): every path must round each product on its own to agree bit for bit. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define BW_FP_ROUNDED(v) __asm__("" : "+x"(v))
#elif defined(__GNUC__)
#define BW_FP_ROUNDED(v) __asm__("" : "+w"(v))
#else
#define BW_FP_ROUNDED(v) ((void)0)
#endif

/* A super-block's share of an output: d and dmin the block's (dmin unused without a minimum), dy the
 * activation super-block's scale. */
static inline float bw_kq_share(enum bw_type t, float d, float dmin, float dy, int32_t I, int32_t C)
{
    if (!bw_kq_has_min(t)) {
        float p = (d * dy) * (float)(I - C);
        BW_FP_ROUNDED(p);
        return p;
    }
    float p = (d * dy) * (float)I, q = (dmin * dy) * (float)C;
    BW_FP_ROUNDED(p);
    BW_FP_ROUNDED(q);
    return p - q;
}

/* d and dmin of a block (dmin 0 for types without one). */
static inline void bw_kq_dmin(enum bw_type t, const uint8_t *blk, float *d, float *dmin)
{
    *d = bw_kq_h2f(blk + bw_kq_d_off(t));
    *dmin = bw_kq_has_min(t) ? bw_kq_h2f(blk + bw_kq_d_off(t) + 2) : 0.0f;
}

#endif
