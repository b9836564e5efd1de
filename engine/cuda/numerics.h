/* The numerics contract of the CUDA products (engine/cuda/NUMERICS.md says why): the arithmetic that
 * turns one weight row and one activation row into one float, written once, for nvcc's device code and
 * for plain C alike. The device kernels call these functions; tests/unit/test_cuda_numerics.c runs the
 * very same functions on the CPU as the scalar mirror, and the GPU tests compare the two with memcmp.
 *
 * Every float operation is a named, correctly rounded one (bw_nm_mul, bw_nm_add, bw_nm_fma: on the
 * device __fmul_rn/__fadd_rn/__fmaf_rn, which nvcc never contracts or re-associates; on the host fmaf,
 * which a C compiler cannot contract either), so no compiler flag changes a bit.
 *
 * Owns: the order of operations of a quantized row product and of the activation quantization that
 * feeds it. Must not depend on the batch size, the thread layout or the kernel. */
#ifndef BW_ENGINE_CUDA_NUMERICS_H
#define BW_ENGINE_CUDA_NUMERICS_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define BW_NM_FN static inline __host__ __device__
#else
#define BW_NM_FN static inline
#endif

/* Blocks of 32 elements summed in order into one group; groups are then folded pairwise. */
#define BW_NM_BLOCK 32
#define BW_NM_GROUP 8

/* Weight block kinds the contract covers (GGUF block layouts). */
enum { BW_NM_Q4_0 = 0, BW_NM_Q4_1 = 1, BW_NM_Q8_0 = 2 };

/* ---- correctly rounded primitives ---- */

BW_NM_FN float bw_nm_mul(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return fmaf(a, b, -0.0f); /* a*b + (-0) is a*b exactly, signed zeros included, rounded once */
#endif
}

BW_NM_FN float bw_nm_add(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return fmaf(a, 1.0f, b);
#endif
}

BW_NM_FN float bw_nm_fma(float a, float b, float c)
{
#ifdef __CUDA_ARCH__
    return __fmaf_rn(a, b, c);
#else
    return fmaf(a, b, c);
#endif
}

BW_NM_FN float bw_nm_div(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fdiv_rn(a, b);
#else
    return a / b;    /* one IEEE division (never built with -ffast-math) */
#endif
}

BW_NM_FN float bw_nm_sqrt(float a)
{
#ifdef __CUDA_ARCH__
    return __fsqrt_rn(a);
#else
    return sqrtf(a); /* IEEE square root, correctly rounded */
#endif
}

BW_NM_FN double bw_nm_dadd(double a, double b)
{
#ifdef __CUDA_ARCH__
    return __dadd_rn(a, b);
#else
    return fma(a, 1.0, b);
#endif
}

BW_NM_FN int bw_nm_rint(float v) /* round half to even */
{
#ifdef __CUDA_ARCH__
    return __float2int_rn(v);
#else
    return (int)rintf(v); /* the default rounding mode: to nearest, ties to even */
#endif
}

BW_NM_FN uint32_t bw_nm_bits(float f)
{
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    union {
        float f;
        uint32_t u;
    } v = {f};
    return v.u;
#endif
}

BW_NM_FN float bw_nm_float(uint32_t u)
{
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    union {
        uint32_t u;
        float f;
    } v = {u};
    return v.f;
#endif
}

/* IEEE half <-> float, round to nearest even, by bits: the same code on both sides. */
BW_NM_FN float bw_nm_h2f(uint16_t h)
{
    const uint32_t s = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return bw_nm_float(s | 0x7f800000u | (m << 13));
    if (e == 0) { /* zero or subnormal: m * 2^-24, exact in float */
        const float v = (float)m * 5.9604644775390625e-8f;
        return s ? -v : v;
    }
    return bw_nm_float(s | ((e + 112u) << 23) | (m << 13));
}

BW_NM_FN uint16_t bw_nm_f2h(float f)
{
    const uint32_t u = bw_nm_bits(f), s = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) return (uint16_t)(s | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0u));
    if (a >= 0x477ff000u) return (uint16_t)(s | 0x7c00u); /* >= 65520 rounds to infinity */
    if (a < 0x38800000u) {                       /* below 2^-14: a subnormal half (or zero), m = round(|f| * 2^24) */
        if (a < 0x33000000u) return (uint16_t)s; /* <= 2^-25 rounds to zero (2^-25 itself ties to even 0) */
        const uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
        const uint32_t sh = 126u - e; /* |f| * 2^24 = m * 2^(e - 127 - 23 + 24) */
        const uint32_t q = m >> sh, rem = m & ((1u << sh) - 1u), half = 1u << (sh - 1u);
        return (uint16_t)(s | (q + (rem > half || (rem == half && (q & 1u)))));
    }
    const uint32_t b = a - 0x38000000u; /* rebias the exponent by 112 */
    const uint32_t q = b >> 13, rem = b & 0x1fffu;
    return (uint16_t)(s | (q + (rem > 0x1000u || (rem == 0x1000u && (q & 1u)))));
}

/* ---- activation preparation (once per step, not per block) ---- */

/* RMS norm scale of a row of K floats: 32 partial sums in double, partial j over elements j, j+32,
 * j+64, ... in ascending order, each square rounded to float first; the partials folded pairwise
 * (16 apart, then 8, 4, 2, 1); then 1 / sqrt(mean + eps) in float. A warp computes it with lane j
 * holding partial j and a shuffle butterfly. */
BW_NM_FN float bw_nm_rms_scale_from(double total, int K, float eps)
{
    const float mean = (float)(total / (double)K);
    return bw_nm_div(1.0f, bw_nm_sqrt(bw_nm_add(mean, eps)));
}

BW_NM_FN double bw_nm_fold_d32(double *p) /* p[32], destroyed */
{
    for (int o = 16; o > 0; o >>= 1)
        for (int j = 0; j < o; j++) p[j] = bw_nm_dadd(p[j], p[j + o]);
    return p[0];
}

BW_NM_FN float bw_nm_rms_scale(const float *x, int K, float eps)
{
    double p[32];
    for (int j = 0; j < 32; j++) {
        p[j] = 0.0;
        for (int k = j; k < K; k += 32) p[j] = bw_nm_dadd(p[j], (double)bw_nm_mul(x[k], x[k]));
    }
    return bw_nm_rms_scale_from(bw_nm_fold_d32(p), K, eps);
}

/* The normalised element: (x * scale) * w, two roundings, in that order. */
BW_NM_FN float bw_nm_normed(float x, float scale, float w) { return bw_nm_mul(bw_nm_mul(x, scale), w); }

/* 8-bit quantization of one block of 32: id = 127/amax (0 for an all-zero block), q = rint(v * id),
 * d = half(amax / 127), s = half(d * sum q) with d the float before its rounding to half. amax and
 * sum q are exact whatever order computes them. */
BW_NM_FN float bw_nm_quant_inv(float amax) { return amax != 0.0f ? bw_nm_div(127.0f, amax) : 0.0f; }

BW_NM_FN int bw_nm_quant_elem(float v, float inv) { return bw_nm_rint(bw_nm_mul(v, inv)); }

BW_NM_FN void bw_nm_quant_scales(float amax, int sum_q, uint16_t *d_half, uint16_t *s_half)
{
    const float d = bw_nm_div(amax, 127.0f);
    *d_half = bw_nm_f2h(d);
    *s_half = bw_nm_f2h(bw_nm_mul(d, (float)sum_q));
}

/* One block of a row, scalar: the mirror of what a warp does with redux.sync. */
BW_NM_FN void bw_nm_quant_block(const float *v, int8_t *q, uint16_t *d_half, uint16_t *s_half)
{
    float amax = 0.0f;
    for (int i = 0; i < BW_NM_BLOCK; i++) amax = fmaxf(amax, fabsf(v[i]));
    const float inv = bw_nm_quant_inv(amax);
    int sum = 0;
    for (int i = 0; i < BW_NM_BLOCK; i++) {
        q[i] = (int8_t)bw_nm_quant_elem(v[i], inv);
        sum += q[i];
    }
    bw_nm_quant_scales(amax, sum, d_half, s_half);
}

/* ---- the product ---- */

/* Integer dot of one weight block (GGUF layout) with 32 activation bytes; exact, any order. */
BW_NM_FN int bw_nm_block_idot(int kind, const uint8_t *qw, const int8_t *qa)
{
    int s = 0;
    if (kind == BW_NM_Q8_0) {
        for (int i = 0; i < 32; i++) s += (int)(int8_t)qw[i] * qa[i];
        return s;
    }
    const int off = kind == BW_NM_Q4_0 ? 8 : 0;
    for (int i = 0; i < 16; i++) {
        s += ((qw[i] & 0x0f) - off) * qa[i];
        s += ((qw[i] >> 4) - off) * qa[i + 16];
    }
    return s;
}

/* A block's contribution: (d_w * d_a) * isum, then + m_w * s_a for Q4_1 as one fused step. isum is
 * below 2^24 in magnitude (32 * 128 * 127), so its conversion is exact. */
BW_NM_FN float bw_nm_block_term(int kind, float dw, float mw, float da, float sa, int isum)
{
    const float t = bw_nm_mul(bw_nm_mul(dw, da), (float)isum);
    return kind == BW_NM_Q4_1 ? bw_nm_fma(mw, sa, t) : t;
}

/* Groups of BW_NM_GROUP consecutive blocks are summed left to right, starting from the first term. */
BW_NM_FN float bw_nm_group_add(float acc, float term, int first) { return first ? term : bw_nm_add(acc, term); }

/* The smallest power of two >= n (n >= 1): the fold's width. */
BW_NM_FN int bw_nm_fold_width(int n)
{
    int p = 1;
    while (p < n) p <<= 1;
    return p;
}

/* Folds the group sums g[0..n-1] (g has room for bw_nm_fold_width(n); the rest is set to +0.0f) as a
 * balanced tree of adjacent pairs: for w = 1, 2, 4, ... < P, g[j] = g[j] + g[j + w] for j = 0, 2w, 4w, ...
 * Destroys g. Three schedules give these bits: a warp with lane j holding groups j*per .. j*per+per-1
 * (per = P/32 when P > 32, else 1) folds in-lane, then shuffles down 1, 2, 4, 8, 16; a kernel that
 * streams the groups in order keeps a stack of subtree sums and merges the top two while they have the
 * same height (left + right), padding with +0.0f to P leaves; and this loop. */
BW_NM_FN float bw_nm_fold(float *g, int n)
{
    const int P = bw_nm_fold_width(n);
    for (int j = n; j < P; j++) g[j] = 0.0f;
    for (int w = 1; w < P; w <<= 1)
        for (int j = 0; j + w < P; j += 2 * w) g[j] = bw_nm_add(g[j], g[j + w]);
    return g[0];
}

/* Bytes of one weight block and where its scales sit (GGUF: half d, [half m], quants). */
BW_NM_FN int bw_nm_block_bytes(int kind) { return kind == BW_NM_Q8_0 ? 34 : kind == BW_NM_Q4_1 ? 20 : 18; }

/* The whole contract for one output: weight row w (nb GGUF blocks) against the quantized activation
 * row (qa: nb*32 bytes; da, sa: nb halves). g is scratch of bw_nm_fold_width(ceil(nb / GROUP)) floats. */
BW_NM_FN float bw_nm_row_dot(int kind, const uint8_t *w, int nb, const int8_t *qa, const uint16_t *da,
                             const uint16_t *sa, float *g)
{
    const int bb = bw_nm_block_bytes(kind), ng = (nb + BW_NM_GROUP - 1) / BW_NM_GROUP;
    for (int j = 0; j < ng; j++) {
        float acc = 0.0f;
        for (int b = j * BW_NM_GROUP; b < nb && b < (j + 1) * BW_NM_GROUP; b++) {
            const uint8_t *blk = w + (size_t)b * bb;
            const float dw = bw_nm_h2f((uint16_t)(blk[0] | blk[1] << 8));
            const float mw = kind == BW_NM_Q4_1 ? bw_nm_h2f((uint16_t)(blk[2] | blk[3] << 8)) : 0.0f;
            const uint8_t *qw = blk + (kind == BW_NM_Q4_1 ? 4 : 2);
            const int is = bw_nm_block_idot(kind, qw, qa + (size_t)b * 32);
            acc = bw_nm_group_add(acc, bw_nm_block_term(kind, dw, mw, bw_nm_h2f(da[b]), bw_nm_h2f(sa[b]), is),
                                  b == j * BW_NM_GROUP);
        }
        g[j] = acc;
    }
    return bw_nm_fold(g, ng);
}

#endif
