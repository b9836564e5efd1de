/* CPU kernels: the portable path, the run-time choice of SIMD path, and the threading of bw_matmul.
 *
 * Activation scratch (what bw_matmul quantizes x into for a quantized weight), one record per token,
 * each record BW_ACT_ALIGN-aligned and bw_act_stride(wtype, cols) bytes long. For the K types it is the
 * Q8_K record of kquant.h; for the 32-element types:
 *   int8_t qs[cols]    q = round_half_even(x / d), 32 per block, blocks in column order
 *   float  d[cols/32]  d = fp16(max|x| / 127), the block scale exactly as llama.cpp stores it
 *   float  c[cols/32]  the per-block constant the weight type needs, times the path's c_scale:
 *                      Q4_0: -8 * d * sum(q), Q5_0: -16 * d * sum(q)  (folds the weight's offset
 *                            into one term)
 *                      Q4_1, Q5_1: fp16(d_unrounded * sum(q))  (Q8_1's s)
 *                      Q8_0, IQ4_NL: -128 * d * sum(q)  (for the AVX512-VNNI path's IQ4_NL kernel, which
 *                            feeds the signed levels to vpdpbusd as unsigned w + 128; the other kernels,
 *                            Q8_0's included, ignore it)
 * The portable path stores c as above; the SIMD paths store c / 8 because the AVX2 kernels spread the
 * term over the 8 lanes of a vector (a power of two, so no rounding). All paths produce identical qs
 * and d.
 * Products are y[t][r] = sum over blocks b of W-block(r, b) . x-block(t, b), blocks in increasing order.
 * On a given path, each y[t][r] is bit-identical whatever n_tok, the token's place in the batch and the
 * thread count (see kernels_avx2.c): activation records are quantized per token alone, the portable
 * path computes every output by one function, and row chunks only decide which thread computes a row.
 * K-type products are bit-identical across paths too (kquant.h). */
#include "engine/cpu/kernels.h"
#include "engine/cpu/kquant.h"
#include "engine/cpu/lanes.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* The SIMD path lives in kernels_avx2.c; these are its entry points (same contracts as the portable
 * ones below). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define BW_HAVE_AVX2_PATH 1
#include <cpuid.h>
void bw_avx2_quant_act(enum bw_type wtype, const float *x, int64_t cols, void *rec);
void bw_avx2_matmul_rows(const bw_tensor *W, const float *x, int64_t x_stride, const void *act, size_t act_stride,
                         int64_t n_tok, float *y, int64_t y_stride, int64_t r0, int64_t r1);
float bw_avx2_dot_f32(const float *a, const float *b, int64_t n);
void bw_avx2_axpy_f32(float *y, float a, const float *x, int64_t n);
void bw_avx2_rmsnorm(float *out, const float *x, const float *weight, int64_t n, float eps);
void bw_avx2_swiglu(float *out, const float *gate, const float *up, int64_t n);
void bw_avx2_attn_scores(const float *q, int group, int hd, const float *k, int64_t stride, int n, float scale,
                         float *scores);
void bw_avx2_attn_softmax(float *scores, int group, int n, float *m, float *l);
void bw_avx2_attn_values(const float *scores, int group, int n, int hd, const float *v, int64_t stride, float *o);
void bw_avx512_attn_values(const float *scores, int group, int n, int hd, const float *v, int64_t stride, float *o);
void bw_avx512_matmul_rows(const bw_tensor *W, const float *x, int64_t x_stride, const void *act, size_t act_stride,
                           int64_t n_tok, float *y, int64_t y_stride, int64_t r0, int64_t r1);
#endif

struct bw_kernel_path {
    const char *name;
    void (*quant_act)(enum bw_type wtype, const float *x, int64_t cols, void *rec);
    void (*matmul_rows)(const bw_tensor *W, const float *x, int64_t x_stride, const void *act, size_t act_stride,
                        int64_t n_tok, float *y, int64_t y_stride, int64_t r0, int64_t r1);
    float (*dot)(const float *a, const float *b, int64_t n);
    void (*axpy)(float *y, float a, const float *x, int64_t n);
    void (*rmsnorm)(float *out, const float *x, const float *weight, int64_t n, float eps);
    void (*swiglu)(float *out, const float *gate, const float *up, int64_t n);
    /* bw_attend's three steps: scores[h*n + p] = (q_h . k_p) * scale; per head m = max, scores become
     * exp(s - m), l = their sum; o[h*hd + i] += sum_p scores[h*n + p] * v_p[i] */
    void (*attn_scores)(const float *q, int group, int hd, const float *k, int64_t stride, int n, float scale,
                        float *scores);
    void (*attn_softmax)(float *scores, int group, int n, float *m, float *l);
    void (*attn_values)(const float *scores, int group, int n, int hd, const float *v, int64_t stride, float *o);
    int token_lanes; /* matmul_rows reads the token-lane copy of Q4/Q5 activations (lanes.h) */
};

/* ---- scalar helpers ---------------------------------------------------------------------------- */

/* bw_h2f (half -> float) is in kquant.h. */

/* float -> half, round to nearest even (what F16C's vcvtps2ph does in its default mode). */
static inline uint16_t bw_f2h(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return sign | 0x7e00u;
    if (ax >= 0x477ff000u) return sign | 0x7c00u; /* >= 65520 rounds to inf */
    if (ax < 0x38800000u) {                       /* below 2^-14: a subnormal half */
        float a;
        memcpy(&a, &ax, 4);
        float r = (a * 0x1p24f + 0x1p23f) - 0x1p23f; /* exact scale, then round to an integer */
        return sign | (uint16_t)r;                   /* 1024 is the smallest normal: still right */
    }
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);
    return sign | (uint16_t)((r - (112u << 23)) >> 13);
}

static inline float bw_round_f16(float f) { return bw_h2f(bw_f2h(f)); }

static inline uint16_t bw_load_u16(const void *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static inline float bw_bf2f(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round half to even for |v| < 2^22 (the default rounding mode does it when adding 1.5 * 2^23), the same
 * rounding as vcvtps2dq, and cheaper than a libm call the compiler cannot vectorize. Needs strict IEEE
 * arithmetic: do not build this file with -ffast-math. */
static inline int bw_round_even(float v) { return (int)((v + 0x1.8p23f) - 0x1.8p23f); }

static inline size_t bw_act_stride(enum bw_type wtype, int64_t cols)
{
    size_t bytes = bw_is_ktype(wtype) ? bw_q8k_bytes(cols) : (size_t)cols + (size_t)(cols / BW_QK) * 2 * sizeof(float);
    return (bytes + BW_ACT_ALIGN - 1) / BW_ACT_ALIGN * BW_ACT_ALIGN;
}

static int bw_is_quant(enum bw_type t)
{
    return t == BW_TYPE_Q4_0 || t == BW_TYPE_Q4_1 || t == BW_TYPE_Q5_0 || t == BW_TYPE_Q5_1 || t == BW_TYPE_Q8_0 ||
           t == BW_TYPE_IQ4_NL || bw_is_ktype(t);
}

/* The 5-bit codes of a Q5_0/Q5_1 block: nibbles plus the qh bits (tensor.h). */
static void bw_q5_codes(const uint8_t *qh4, const uint8_t *qs, uint8_t u[BW_QK])
{
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    for (int j = 0; j < BW_QK / 2; j++) {
        u[j] = (uint8_t)((qs[j] & 15) | ((qh >> j) & 1) << 4);
        u[j + BW_QK / 2] = (uint8_t)((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
    }
}

/* The unsigned codes u[e] of a K-type super-block (layouts in tensor.h). */
static void bw_kq_codes(enum bw_type t, const uint8_t *blk, uint8_t u[BW_QK_K])
{
    for (int e = 0; e < BW_QK_K; e++) {
        int h = e / 128, j = (e % 128) / 32, l = e % 32, s = e / 32;
        switch (t) {
        case BW_TYPE_Q2_K: u[e] = (blk[offsetof(bw_block_q2_k, qs) + 32 * h + l] >> (2 * j)) & 3; break;
        case BW_TYPE_Q3_K: {
            const uint8_t *qs = blk + offsetof(bw_block_q3_k, qs), *hm = blk + offsetof(bw_block_q3_k, hmask);
            u[e] = (uint8_t)(((qs[32 * h + l] >> (2 * j)) & 3) | ((hm[l] >> (4 * h + j)) & 1) << 2);
            break;
        }
        case BW_TYPE_Q4_K:
        case BW_TYPE_Q5_K: {
            int five = t == BW_TYPE_Q5_K;
            const uint8_t *qs = blk + (five ? offsetof(bw_block_q5_k, qs) : offsetof(bw_block_q4_k, qs));
            uint8_t byte = qs[32 * (e / 64) + l];
            u[e] = (e % 64) < 32 ? byte & 15 : byte >> 4;
            if (five) u[e] |= (uint8_t)(((blk[offsetof(bw_block_q5_k, qh) + l] >> s) & 1) << 4);
            break;
        }
        default: { /* Q6_K */
            const uint8_t *ql = blk + offsetof(bw_block_q6_k, ql), *qh = blk + offsetof(bw_block_q6_k, qh);
            uint8_t lo = ql[64 * h + l + 32 * (j % 2)];
            u[e] = (uint8_t)((j < 2 ? lo & 15 : lo >> 4) | ((qh[32 * h + l] >> (2 * j)) & 3) << 4);
            break;
        }
        }
    }
}

/* ---- dequantization ------------------------------------------------------------------------------ */

void bw_dequant_row(enum bw_type type, const void *row, float *out, int64_t cols)
{
    const uint8_t *p = row;
    switch (type) {
    case BW_TYPE_F32: memcpy(out, row, (size_t)cols * sizeof(float)); return;
    case BW_TYPE_F16:
        for (int64_t i = 0; i < cols; i++) out[i] = bw_h2f(bw_load_u16(p + 2 * i));
        return;
    case BW_TYPE_BF16:
        for (int64_t i = 0; i < cols; i++) out[i] = bw_bf2f(bw_load_u16(p + 2 * i));
        return;
    case BW_TYPE_Q4_0:
        for (int64_t b = 0; b < cols / BW_QK; b++, p += sizeof(bw_block_q4_0), out += BW_QK) {
            float d = bw_h2f(bw_load_u16(p));
            const uint8_t *qs = p + 2;
            for (int j = 0; j < BW_QK / 2; j++) {
                out[j] = d * (float)((qs[j] & 15) - 8);
                out[j + BW_QK / 2] = d * (float)((qs[j] >> 4) - 8);
            }
        }
        return;
    case BW_TYPE_Q4_1:
        for (int64_t b = 0; b < cols / BW_QK; b++, p += sizeof(bw_block_q4_1), out += BW_QK) {
            float d = bw_h2f(bw_load_u16(p)), m = bw_h2f(bw_load_u16(p + 2));
            const uint8_t *qs = p + 4;
            for (int j = 0; j < BW_QK / 2; j++) {
                out[j] = d * (float)(qs[j] & 15) + m;
                out[j + BW_QK / 2] = d * (float)(qs[j] >> 4) + m;
            }
        }
        return;
    case BW_TYPE_Q5_0:
    case BW_TYPE_Q5_1: {
        const int has_m = type == BW_TYPE_Q5_1;
        const size_t bb = has_m ? sizeof(bw_block_q5_1) : sizeof(bw_block_q5_0);
        for (int64_t b = 0; b < cols / BW_QK; b++, p += bb, out += BW_QK) {
            float d = bw_h2f(bw_load_u16(p)), m = has_m ? bw_h2f(bw_load_u16(p + 2)) : 0.0f;
            uint8_t u[BW_QK];
            bw_q5_codes(p + (has_m ? 4 : 2), p + (has_m ? 8 : 6), u);
            for (int j = 0; j < BW_QK; j++) out[j] = has_m ? d * (float)u[j] + m : d * (float)(u[j] - 16);
        }
        return;
    }
    case BW_TYPE_IQ4_NL:
        for (int64_t b = 0; b < cols / BW_QK; b++, p += sizeof(bw_block_iq4_nl), out += BW_QK) {
            float d = bw_h2f(bw_load_u16(p));
            for (int j = 0; j < BW_QK / 2; j++) {
                out[j] = d * (float)bw_iq4nl_values[p[2 + j] & 15];
                out[j + BW_QK / 2] = d * (float)bw_iq4nl_values[p[2 + j] >> 4];
            }
        }
        return;
    case BW_TYPE_Q2_K:
    case BW_TYPE_Q3_K:
    case BW_TYPE_Q4_K:
    case BW_TYPE_Q5_K:
    case BW_TYPE_Q6_K: {
        const size_t bb = (size_t)bw_type_info(type)->block_bytes;
        const int off = bw_kq_code_offset(type);
        for (int64_t b = 0; b < cols / BW_QK_K; b++, p += bb, out += BW_QK_K) {
            uint8_t u[BW_QK_K];
            int16_t sc[16], m[16];
            bw_kq_codes(type, p, u);
            bw_kq_scales(type, p, sc, m);
            float d = bw_kq_h2f(p + bw_kq_d_off(type));
            float dmin = bw_kq_has_min(type) ? bw_kq_h2f(p + bw_kq_d_off(type) + 2) : 0.0f;
            for (int e = 0; e < BW_QK_K; e++)
                out[e] = (d * (float)sc[e / 16]) * (float)(u[e] - off) - dmin * (float)m[e / 16];
        }
        return;
    }
    case BW_TYPE_Q8_0:
        for (int64_t b = 0; b < cols / BW_QK; b++, p += sizeof(bw_block_q8_0), out += BW_QK) {
            float d = bw_h2f(bw_load_u16(p));
            const int8_t *qs = (const int8_t *)(p + 2);
            for (int j = 0; j < BW_QK; j++) out[j] = d * (float)qs[j];
        }
        return;
    case BW_TYPE_Q8_K:
        for (int64_t b = 0; b < cols / BW_QK_K; b++, p += sizeof(bw_block_q8_k), out += BW_QK_K) {
            float d;
            memcpy(&d, p, 4);
            for (int j = 0; j < BW_QK_K; j++) out[j] = d * (float)(int8_t)p[4 + j];
        }
        return;
    case BW_TYPE_Q8_1:
        for (int64_t b = 0; b < cols / BW_QK; b++, p += sizeof(bw_block_q8_1), out += BW_QK) {
            float d = bw_h2f(bw_load_u16(p));
            const int8_t *qs = (const int8_t *)(p + 4);
            for (int j = 0; j < BW_QK; j++) out[j] = d * (float)qs[j];
        }
        return;
    }
}

/* ---- portable path ------------------------------------------------------------------------------ */

void bw_quant_q8k(const float *x, int64_t cols, void *rec)
{
    int8_t *qs = rec;
    float *dd = (float *)(qs + cols);
    int16_t *bsums = (int16_t *)(dd + cols / BW_QK_K);
    for (int64_t b = 0; b < cols / BW_QK_K; b++, x += BW_QK_K, qs += BW_QK_K) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < BW_QK_K; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        /* A NaN never wins the comparison above; the clamp below keeps it from an undefined float to
         * int conversion. All zero (or NaN) gives zero codes and d = 0. */
        float iscale = amax != 0.0f ? -127.0f / max : 0.0f;
        for (int j = 0; j < BW_QK_K; j++) qs[j] = (int8_t)bw_round_even(fminf(fmaxf(x[j] * iscale, -127.0f), 127.0f));
        for (int g = 0; g < BW_QK_K / 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += qs[16 * g + j];
            bsums[b * (BW_QK_K / 16) + g] = (int16_t)sum;
        }
        dd[b] = amax != 0.0f ? 1.0f / iscale : 0.0f;
    }
}

static void bw_port_quant_act(enum bw_type wtype, const float *x, int64_t cols, void *rec)
{
    if (bw_is_ktype(wtype)) {
        bw_quant_q8k(x, cols, rec);
        return;
    }
    int64_t nb = cols / BW_QK;
    int8_t *qs = rec;
    float *dd = (float *)(qs + cols), *cc = dd + nb;
    for (int64_t b = 0; b < nb; b++, x += BW_QK, qs += BW_QK) {
        float amax = 0.0f;
        for (int j = 0; j < BW_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f;
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < BW_QK; j++) {
            /* |x * id| <= 127 already; the clamp only turns a NaN input into a defined value (a float
             * to int conversion of NaN is undefined behaviour). */
            int q = bw_round_even(fminf(fmaxf(x[j] * id, -127.0f), 127.0f));
            qs[j] = (int8_t)q;
            sum += q;
        }
        dd[b] = bw_round_f16(d);
        if (wtype == BW_TYPE_Q4_0) cc[b] = -8.0f * (dd[b] * (float)sum);
        else if (wtype == BW_TYPE_Q5_0) cc[b] = -16.0f * (dd[b] * (float)sum);
        else if (wtype == BW_TYPE_Q4_1 || wtype == BW_TYPE_Q5_1) cc[b] = bw_round_f16(d * (float)sum);
        else cc[b] = -128.0f * (dd[b] * (float)sum);
    }
}

/* One output of a K-type W: row `w` against one Q8_K record (arithmetic of kquant.h). */
static float bw_port_dot_k(enum bw_type type, const uint8_t *w, const uint8_t *rec, int64_t cols)
{
    const size_t bb = (size_t)bw_type_info(type)->block_bytes;
    const int8_t *xq = (const int8_t *)rec;
    const float *dy = bw_q8k_d(rec, cols);
    const int16_t *bsums = bw_q8k_bsums(rec, cols);
    float sum = 0.0f;
    for (int64_t b = 0; b < cols / BW_QK_K; b++, w += bb, xq += BW_QK_K, bsums += 16) {
        uint8_t u[BW_QK_K];
        int16_t sc[16], m[16], cm[16];
        bw_kq_codes(type, w, u);
        bw_kq_scales(type, w, sc, m);
        bw_kq_corr(type, sc, m, cm);
        int32_t I = 0, C = 0;
        for (int g = 0; g < 16; g++) {
            int32_t dot = 0;
            for (int j = 0; j < 16; j++) dot += u[16 * g + j] * xq[16 * g + j];
            I += sc[g] * dot;
            C += cm[g] * bsums[g];
        }
        float d, dmin;
        bw_kq_dmin(type, w, &d, &dmin);
        sum += bw_kq_share(type, d, dmin, dy[b], I, C);
    }
    return sum;
}

/* One output: row `w` of W (type given) against one activation record. */
static float bw_port_dot_q(enum bw_type type, const uint8_t *w, const uint8_t *rec, int64_t cols)
{
    if (bw_is_ktype(type)) return bw_port_dot_k(type, w, rec, cols);
    int64_t nb = cols / BW_QK;
    const int8_t *xq = (const int8_t *)rec;
    const float *dd = (const float *)(rec + cols), *cc = dd + nb;
    float sum = 0.0f;
    for (int64_t b = 0; b < nb; b++, xq += BW_QK) {
        int isum = 0;
        switch (type) {
        case BW_TYPE_Q4_0: {
            const uint8_t *qs = w + b * (int64_t)sizeof(bw_block_q4_0) + 2;
            for (int j = 0; j < BW_QK / 2; j++)
                isum += ((qs[j] & 15) - 8) * xq[j] + ((qs[j] >> 4) - 8) * xq[j + BW_QK / 2];
            sum += (float)isum * (bw_h2f(bw_load_u16(qs - 2)) * dd[b]);
            break;
        }
        case BW_TYPE_Q4_1: {
            const uint8_t *blk = w + b * (int64_t)sizeof(bw_block_q4_1), *qs = blk + 4;
            for (int j = 0; j < BW_QK / 2; j++) isum += (qs[j] & 15) * xq[j] + (qs[j] >> 4) * xq[j + BW_QK / 2];
            sum += (float)isum * (bw_h2f(bw_load_u16(blk)) * dd[b]) + bw_h2f(bw_load_u16(blk + 2)) * cc[b];
            break;
        }
        case BW_TYPE_Q5_0:
        case BW_TYPE_Q5_1: {
            const int has_m = type == BW_TYPE_Q5_1;
            const uint8_t *blk = w + b * (int64_t)(has_m ? sizeof(bw_block_q5_1) : sizeof(bw_block_q5_0));
            uint8_t u[BW_QK];
            bw_q5_codes(blk + (has_m ? 4 : 2), blk + (has_m ? 8 : 6), u);
            for (int j = 0; j < BW_QK; j++) isum += (u[j] - (has_m ? 0 : 16)) * xq[j];
            sum += (float)isum * (bw_h2f(bw_load_u16(blk)) * dd[b]);
            if (has_m) sum += bw_h2f(bw_load_u16(blk + 2)) * cc[b];
            break;
        }
        case BW_TYPE_IQ4_NL: {
            const uint8_t *blk = w + b * (int64_t)sizeof(bw_block_iq4_nl), *qs = blk + 2;
            for (int j = 0; j < BW_QK / 2; j++)
                isum += bw_iq4nl_values[qs[j] & 15] * xq[j] + bw_iq4nl_values[qs[j] >> 4] * xq[j + BW_QK / 2];
            sum += (float)isum * (bw_h2f(bw_load_u16(blk)) * dd[b]);
            break;
        }
        default: { /* Q8_0 */
            const uint8_t *blk = w + b * (int64_t)sizeof(bw_block_q8_0);
            const int8_t *qs = (const int8_t *)(blk + 2);
            for (int j = 0; j < BW_QK; j++) isum += qs[j] * xq[j];
            sum += (float)isum * (bw_h2f(bw_load_u16(blk)) * dd[b]);
            break;
        }
        }
    }
    return sum;
}

static float bw_port_dot_float(enum bw_type type, const uint8_t *w, const float *x, int64_t cols)
{
    float sum = 0.0f;
    switch (type) {
    case BW_TYPE_F16:
        for (int64_t i = 0; i < cols; i++) sum += bw_h2f(bw_load_u16(w + 2 * i)) * x[i];
        break;
    case BW_TYPE_BF16:
        for (int64_t i = 0; i < cols; i++) sum += bw_bf2f(bw_load_u16(w + 2 * i)) * x[i];
        break;
    default: /* F32 */
        for (int64_t i = 0; i < cols; i++) {
            float v;
            memcpy(&v, w + 4 * i, 4);
            sum += v * x[i];
        }
        break;
    }
    return sum;
}

static void bw_port_matmul_rows(const bw_tensor *W, const float *x, int64_t x_stride, const void *act,
                                size_t act_stride, int64_t n_tok, float *y, int64_t y_stride, int64_t r0, int64_t r1)
{
    const uint8_t *base = W->data;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = base + (size_t)r * W->row_bytes;
        for (int64_t t = 0; t < n_tok; t++) {
            float v = bw_is_quant(W->type)
                          ? bw_port_dot_q(W->type, w, (const uint8_t *)act + (size_t)t * act_stride, W->cols)
                          : bw_port_dot_float(W->type, w, x + t * x_stride, W->cols);
            y[t * y_stride + r] = v;
        }
    }
}

static float bw_port_dot_f32(const float *a, const float *b, int64_t n)
{
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static void bw_port_axpy_f32(float *y, float a, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

/* Squares are rounded to float and summed in double, then the row is scaled and multiplied by the
 * weight in that order: the arithmetic of llama.cpp's rms_norm followed by its mul. */
static void bw_port_rmsnorm(float *out, const float *x, const float *weight, int64_t n, float eps)
{
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)(x[i] * x[i]);
    float scale = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    for (int64_t i = 0; i < n; i++) out[i] = (x[i] * scale) * weight[i];
}

static void bw_port_swiglu(float *out, const float *gate, const float *up, int64_t n)
{
    for (int64_t i = 0; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

static void bw_port_attn_scores(const float *q, int group, int hd, const float *k, int64_t stride, int n, float scale,
                                float *scores)
{
    for (int p = 0; p < n; p++)
        for (int h = 0; h < group; h++)
            scores[(size_t)h * n + p] = bw_port_dot_f32(q + (size_t)h * hd, k + p * stride, hd) * scale;
}

static void bw_port_attn_softmax(float *scores, int group, int n, float *m, float *l)
{
    for (int h = 0; h < group; h++) {
        float *s = scores + (size_t)h * n, mx = -INFINITY, sum = 0.0f;
        for (int p = 0; p < n; p++) mx = s[p] > mx ? s[p] : mx;
        for (int p = 0; p < n; p++) {
            s[p] = expf(s[p] - mx);
            sum += s[p];
        }
        m[h] = mx;
        l[h] = sum;
    }
}

static void bw_port_attn_values(const float *scores, int group, int n, int hd, const float *v, int64_t stride, float *o)
{
    for (int p = 0; p < n; p++)
        for (int h = 0; h < group; h++)
            bw_port_axpy_f32(o + (size_t)h * hd, scores[(size_t)h * n + p], v + p * stride, hd);
}

static const struct bw_kernel_path bw_path_portable = {
    "portable",
    bw_port_quant_act,
    bw_port_matmul_rows,
    bw_port_dot_f32,
    bw_port_axpy_f32,
    bw_port_rmsnorm,
    bw_port_swiglu,
    bw_port_attn_scores,
    bw_port_attn_softmax,
    bw_port_attn_values,
    0,
};

#ifdef BW_HAVE_AVX2_PATH
static const struct bw_kernel_path bw_path_avx2 = {
    "avx2",
    bw_avx2_quant_act,
    bw_avx2_matmul_rows,
    bw_avx2_dot_f32,
    bw_avx2_axpy_f32,
    bw_avx2_rmsnorm,
    bw_avx2_swiglu,
    bw_avx2_attn_scores,
    bw_avx2_attn_softmax,
    bw_avx2_attn_values,
    0,
};
/* AVX2 everywhere except the quantized products (AVX512-VNNI) and attention's weighted sum (AVX-512F).
 * An AVX-512 variant of the scores with the AVX2 arithmetic (two positions per zmm) was slower: decode
 * after 1500 tokens 193 against 207 tok/s on 2 threads. */
static const struct bw_kernel_path bw_path_avx512 = {
    "avx512vnni",
    bw_avx2_quant_act,
    bw_avx512_matmul_rows,
    bw_avx2_dot_f32,
    bw_avx2_axpy_f32,
    bw_avx2_rmsnorm,
    bw_avx2_swiglu,
    bw_avx2_attn_scores,
    bw_avx2_attn_softmax,
    bw_avx512_attn_values,
    1,
};
#endif

/* Until bw_kernels_init runs, everything works on the portable path. */
static const struct bw_kernel_path *bw_path = &bw_path_portable;

/* BW_KERNELS=portable|avx2 in the environment caps the choice: the unit test uses it to check every
 * path on one machine, and an operator can use it to rule out a SIMD path. */
const char *bw_kernels_init(int force_portable)
{
    bw_path = &bw_path_portable;
#ifdef BW_HAVE_AVX2_PATH
    const char *cap = getenv("BW_KERNELS");
    if (force_portable || (cap && strcmp(cap, "portable") == 0)) return bw_path->name;
    __builtin_cpu_init();
    /* clang's __builtin_cpu_supports knows no "f16c": read CPUID leaf 1 for it (ECX bit 29). The
     * builtin's avx2 test also covers the OS saving the YMM registers. */
    unsigned a, b, c = 0, d;
    int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c)) return bw_path->name;
    bw_path = &bw_path_avx2;
    if ((!cap || strcmp(cap, "avx2") != 0) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
        bw_path = &bw_path_avx512;
#else
    (void)force_portable;
#endif
    return bw_path->name;
}

/* ---- bw_matmul: quantize the activations, then split the rows over the pool ---------------------- */

/* The records, then room for their token-lane copy whichever path runs (lanes.h). */
size_t bw_matmul_scratch_bytes(enum bw_type wtype, int64_t cols, int64_t n_tok)
{
    if (!bw_is_quant(wtype)) return 0;
    return (size_t)n_tok * bw_act_stride(wtype, cols) + bw_lane_bytes(wtype, cols, n_tok);
}

struct bw_mm_job {
    const struct bw_kernel_path *path;
    const bw_tensor *W;
    const float *x;
    int64_t x_stride, n_tok;
    float *y;
    int64_t y_stride;
    void *act;
    size_t act_stride;
    struct bw_lane_block *lanes; /* the token-lane copy to fill, or NULL */
    int64_t chunk;               /* rows per claim, a multiple of 4 */
    /* First row not yet claimed; on its own line, so claims do not evict the fields above from the
     * other threads' caches. */
    _Alignas(64) _Atomic int64_t next_row;
};

static void bw_mm_quant_task(void *ctx, int ith, int nth)
{
    struct bw_mm_job *j = ctx;
    int64_t t0 = j->n_tok * ith / nth, t1 = j->n_tok * (ith + 1) / nth;
    for (int64_t t = t0; t < t1; t++) {
        uint8_t *rec = (uint8_t *)j->act + (size_t)t * j->act_stride;
        j->path->quant_act(j->W->type, j->x + t * j->x_stride, j->W->cols, rec);
        if (j->lanes) bw_lane_put(j->lanes, rec, j->W->cols, t);
    }
}

/* Decode kernels prefetch a fixed distance ahead of the rows they compute, but not past their chunk;
 * this covers the start of a chunk, which nothing prefetched. */
static void bw_prefetch_rows(const bw_tensor *W, int64_t r0, int64_t r1)
{
    const char *p = (const char *)W->data + r0 * (int64_t)W->row_bytes;
    size_t n = (size_t)(r1 - r0) * W->row_bytes;
    if (n > 8192) n = 8192;
    for (size_t o = 0; o < n; o += 64) __builtin_prefetch(p + o);
}

/* Threads claim chunks of rows until none is left: on a shared machine one thread may run at a fraction
 * of the other's speed, and a static split would make every product wait for the slower one. Chunks
 * are multiples of 4 rows so every output is computed by the same tile code whoever claims it. */
static void bw_mm_rows_task(void *ctx, int ith, int nth)
{
    struct bw_mm_job *j = ctx;
    (void)ith;
    (void)nth;
    int64_t rows = j->W->rows;
    for (;;) {
        int64_t r0 = atomic_fetch_add_explicit(&j->next_row, j->chunk, memory_order_relaxed);
        if (r0 >= rows) return;
        int64_t r1 = r0 + j->chunk < rows ? r0 + j->chunk : rows;
        if (j->n_tok < 4) bw_prefetch_rows(j->W, r0, r1);
        j->path->matmul_rows(j->W, j->x, j->x_stride, j->act, j->act_stride, j->n_tok, j->y, j->y_stride, r0, r1);
    }
}

void bw_matmul(bw_pool *pool, const bw_tensor *W, const float *x, int64_t x_stride, int64_t n_tok, float *y,
               int64_t y_stride, void *scratch)
{
    struct bw_mm_job j = {bw_path, W, x, x_stride, n_tok, y, y_stride, scratch, 0, NULL, 0, 0};
    /* Two chunks per thread: enough for one thread to take over much of a slowed one's work. More and
     * smaller chunks cost decode speed (measured on 2 threads, whole decode step, best of 5: 1 chunk
     * per thread 1.77 ms, 2 chunks 1.82 ms, 4 chunks 2.12 ms): each chunk start is a prefetch ramp. */
    int nth = bw_pool_threads(pool);
    j.chunk = (W->rows + 2 * nth - 1) / (2 * nth);
    j.chunk = nth == 1 ? W->rows : (j.chunk + 3) / 4 * 4;
    if (j.chunk < 4) j.chunk = 4;
    atomic_init(&j.next_row, 0);
    if (bw_is_quant(W->type)) {
        j.act_stride = bw_act_stride(W->type, W->cols);
        if (bw_path->token_lanes && bw_lane_bytes(W->type, W->cols, n_tok)) {
            j.lanes = (struct bw_lane_block *)((uint8_t *)scratch + (size_t)n_tok * j.act_stride);
            bw_lane_clear_tail(j.lanes, W->cols, n_tok);
        }
        /* A few rows quantize in well under a microsecond: cheaper than a fork-join. */
        if (n_tok <= 4) bw_mm_quant_task(&j, 0, 1);
        else bw_pool_run(pool, bw_mm_quant_task, &j);
    }
    bw_pool_run(pool, bw_mm_rows_task, &j);
}

/* ---- vector ops ---------------------------------------------------------------------------------- */

void bw_rmsnorm(float *out, const float *x, const float *weight, int64_t n, float eps)
{
    bw_path->rmsnorm(out, x, weight, n, eps);
}

void bw_swiglu(float *out, const float *gate, const float *up, int64_t n) { bw_path->swiglu(out, gate, up, n); }

float bw_dot_f32(const float *a, const float *b, int64_t n) { return bw_path->dot(a, b, n); }

void bw_axpy_f32(float *y, float a, const float *x, int64_t n) { bw_path->axpy(y, a, x, n); }

void bw_attend(const float *q, int group, int hd, const float *k, const float *v, int64_t stride, int n, float scale,
               float *scores, float *m, float *l, float *o)
{
    bw_path->attn_scores(q, group, hd, k, stride, n, scale, scores);
    bw_path->attn_softmax(scores, group, n, m, l);
    memset(o, 0, (size_t)group * hd * sizeof *o);
    bw_path->attn_values(scores, group, n, hd, v, stride, o);
}
