/* The SIMD paths of the CPU kernels: AVX2/FMA/F16C, and an AVX512-VNNI variant of the quantized
 * products (at the end of the file). bw_kernels_init picks one at run time; every function carries its
 * own target attribute so the rest of the binary still runs on a CPU without AVX2.
 *
 * Products: y[t][r] = sum over 32-blocks b of W-block(r, b) . x-block(t, b). Quantized weights meet the
 * activation records of kernels.c (int8 qs[cols], float d[cols/32], float c[cols/32], with c stored
 * divided by 8 on this path). Per block and output, lanes of int32 partial dots are turned to float
 * and multiply-added with the block scales into that output's own vector accumulator; its lanes are
 * summed only once, at the end. The -8 of Q4_0, the -16 of Q5_0 and the m * s of Q4_1/Q5_1 enter as a
 * per-block constant (c / 8 per lane), so the unsigned 4- and 5-bit weights go straight into vpmaddubsw
 * without re-centering. IQ4_NL codes become their signed levels by one table lookup and follow Q8_0.
 * The K types (Q2_K ... Q6_K, "K types" below) have their own super-block kernels, exact in integers.
 * Outputs are computed in tiles: 4 rows x 1 token for decode (the activation block is loaded once for
 * four weight rows), several rows x 4 tokens for prefill (each unpacked weight block serves four
 * tokens), smaller tiles at the edges. The AVX-512 path's Q8_0 and K-type prefill instead put up to 32
 * tokens in the lanes, so that each weight dword loaded feeds 16 tokens per instruction (bw_q8t_*, bw_kt_*).
 * Batch invariance: on one path, an output's bits do not depend on the tile that computed it, so not
 * on n_tok, the token's place in the batch, or the thread count. Every tile shape of a weight type
 * gives each output the same lane layout, the same per-block operations in block order and the same
 * final reduction tree; tiles differ only in which loads they share. Continuous batching (a job's
 * output must not depend on its batch mates) and resume (a one-batch re-prefill must rebuild the KV
 * cache that one-token decode steps wrote) rely on it; test_kernels checks it bit for bit. */
#include "engine/cpu/kquant.h"
#include "engine/cpu/lanes.h"
#include "engine/tensor.h"

#include <stdint.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define BW_AVX2 __attribute__((target("avx2,fma,f16c")))
#define BW_AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

/* Tokens per prefill tile: their activation records (46 KB at 576 columns, 123 KB at 1536) stay in L2
 * while the thread's rows stream past them, so each weight row is read from memory n_tok / 64 times. */
#define BW_TOK_TILE 64

/* Decode streams the weights from DRAM once per token; the hardware prefetcher alone leaves one core
 * at about half the bandwidth it can draw. Prefetching this far ahead of the tile being computed
 * doubles decode throughput (measured on Zen 5, whole decode step, 2 threads: 2 KB too short, 4 KB
 * 44 GB/s, 8 KB 47 GB/s, 16 KB 40 GB/s). Running past the end of the matrix is harmless: prefetches do
 * not fault. */
#ifndef BW_PF_BYTES
#define BW_PF_BYTES 8192
#endif

/* Every 8-lane accumulator is summed with this one tree, ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)),
 * whether it is reduced alone (bw_hsum8) or four at a time (bw_hsum4x8): which tile computed an output
 * must not change its last bits. */
BW_AVX2_INLINE __m128 bw_hsum4x8(__m256 a, __m256 b, __m256 c, __m256 d)
{
    __m256 ab = _mm256_hadd_ps(a, b);
    __m256 cd = _mm256_hadd_ps(c, d);
    __m256 abcd = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

BW_AVX2_INLINE float bw_hsum8(__m256 v)
{
    __m256 h = _mm256_hadd_ps(v, v);
    h = _mm256_hadd_ps(h, h);
    return _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
}

BW_AVX2_INLINE __m256 bw_h2f_bcast(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return _mm256_cvtph_ps(_mm_set1_epi16((short)h));
}

/* 8 lanes of partial sums of u[i] * s[i], u unsigned, s signed. No pair saturates vpmaddubsw here:
 * |u| <= 128 and |s| <= 127 gives at most 32512. */
BW_AVX2_INLINE __m256 bw_dot_u8s8(__m256i u, __m256i s)
{
    __m256i p16 = _mm256_maddubs_epi16(u, s);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

/* ---- activation quantization --------------------------------------------------------------------- */

/* bw_quant_q8k's rule, 8 lanes at a time, with the same codes, scales and sums: the element of largest
 * magnitude is the first one equal to the maximum (as the scalar scan finds it), vcvtps2dq rounds half
 * to even like bw_round_even, and NaN is skipped by the maximum and clamped to -127 as in the scalar
 * code (vmaxps returns its second operand when either is NaN). */
static void BW_AVX2 bw_avx2_quant_q8k(const float *x, int64_t cols, void *rec)
{
    int8_t *qs = rec;
    float *dd = (float *)(qs + cols);
    int16_t *bsums = (int16_t *)(dd + cols / BW_QK_K);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t b = 0; b < cols / BW_QK_K; b++, x += BW_QK_K, qs += BW_QK_K) {
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < BW_QK_K; j += 8) m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + j), absmask), m);
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4))), max = 0.0f;
        for (int j = 0; j < BW_QK_K && amax != 0.0f; j++)
            if (fabsf(x[j]) == amax) {
                max = x[j];
                break;
            }
        float iscale = amax != 0.0f ? -127.0f / max : 0.0f;
        const __m256 is = _mm256_set1_ps(iscale);
        for (int j = 0; j < BW_QK_K; j += 32) {
            __m256i i[4];
            for (int k = 0; k < 4; k++) {
                /* max/min with the constant second: a NaN product becomes the constant, as fmaxf/fminf do. */
                __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * k), is);
                i[k] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
            }
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
            p = _mm256_permutevar8x32_epi32(p, perm);
            _mm256_storeu_si256((__m256i *)(qs + j), p);
            /* Two 16-element sums: the bytes widened to int16 and added pairwise. */
            __m256i w = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), p), _mm256_set1_epi16(1));
            int32_t l[8];
            _mm256_storeu_si256((__m256i *)l, w);
            bsums[b * 16 + j / 16] = (int16_t)(l[0] + l[1] + l[2] + l[3]);
            bsums[b * 16 + j / 16 + 1] = (int16_t)(l[4] + l[5] + l[6] + l[7]);
        }
        dd[b] = amax != 0.0f ? 1.0f / iscale : 0.0f;
    }
}

void BW_AVX2 bw_avx2_quant_act(enum bw_type wtype, const float *x, int64_t cols, void *rec)
{
    if (bw_is_ktype(wtype)) {
        bw_avx2_quant_q8k(x, cols, rec);
        return;
    }
    int64_t nb = cols / BW_QK;
    int8_t *qs = rec;
    float *dd = (float *)(qs + cols), *cc = dd + nb;
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t b = 0; b < nb; b++, x += BW_QK, qs += BW_QK) {
        __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
        __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, absmask), _mm256_and_ps(v1, absmask)),
                                 _mm256_max_ps(_mm256_and_ps(v2, absmask), _mm256_and_ps(v3, absmask)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float d = amax / 127.0f;
        __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
        /* vcvtps2dq rounds half to even, as the portable path does. */
        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, id));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, id));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, id));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, id));
        __m256i s8 = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        int sum = _mm_cvtsi128_si32(s4);
        /* The packs interleave 128-bit lanes; the permute puts the 32 bytes back in element order. */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        _mm256_store_si256((__m256i *)qs, _mm256_permutevar8x32_epi32(p, perm));
        dd[b] = _cvtsh_ss(_cvtss_sh(d, 0));
        if (wtype == BW_TYPE_Q4_0) cc[b] = -(dd[b] * (float)sum);             /* (-8 * d * sum) / 8 */
        else if (wtype == BW_TYPE_Q5_0) cc[b] = -2.0f * (dd[b] * (float)sum); /* (-16 * d * sum) / 8 */
        else if (wtype == BW_TYPE_Q4_1 || wtype == BW_TYPE_Q5_1)
            cc[b] = _cvtsh_ss(_cvtss_sh(d * (float)sum, 0)) * 0.125f;
        else cc[b] = -16.0f * (dd[b] * (float)sum); /* (-128 * d * sum) / 8, for the VNNI path */
    }
}

/* ---- tiles --------------------------------------------------------------------------------------- */

/* Writes the NR x NT sums of acc into y (y[t * ys + r]). */
BW_AVX2_INLINE void bw_store_tile(const int NR, const int NT, __m256 acc[4][4], float *y, int64_t ys)
{
    if (NR == 4) {
        for (int t = 0; t < NT; t++) _mm_storeu_ps(y + t * ys, bw_hsum4x8(acc[0][t], acc[1][t], acc[2][t], acc[3][t]));
    } else if (NT == 4) {
        for (int r = 0; r < NR; r++) {
            float s[4];
            _mm_storeu_ps(s, bw_hsum4x8(acc[r][0], acc[r][1], acc[r][2], acc[r][3]));
            for (int t = 0; t < 4; t++) y[t * ys + r] = s[t];
        }
    } else {
        for (int r = 0; r < NR; r++)
            for (int t = 0; t < NT; t++) y[t * ys + r] = bw_hsum8(acc[r][t]);
    }
}

/* The 32 signed weights of an IQ4_NL block (blk at its d), in element order. */
BW_AVX2_INLINE __m256i bw_iq4nl_vals(const uint8_t *blk)
{
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)bw_iq4nl_values));
    __m128i q = _mm_loadu_si128((const __m128i *)(blk + 2));
    __m256i n = _mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1);
    return _mm256_shuffle_epi8(table, _mm256_and_si256(n, _mm256_set1_epi8(15)));
}

/* NR rows of a Q8_0 or IQ4_NL W (w = first row) times NT activation records (act = first record). Per
 * output and block: 8 int32 lanes of the signed dot, then acc += dw * (dx * dot) lane by lane; the same
 * for every NR x NT. */
BW_AVX2_INLINE void bw_q8_tile(const enum bw_type type, const int NR, const int NT, const int pf, const uint8_t *w,
                               size_t wrow, const uint8_t *act, size_t astride, int64_t cols, float *y, int64_t ys)
{
    const size_t bb = type == BW_TYPE_IQ4_NL ? sizeof(bw_block_iq4_nl) : sizeof(bw_block_q8_0);
    const int64_t nb = cols / BW_QK;
    __m256 acc[4][4];
    for (int r = 0; r < NR; r++)
        for (int t = 0; t < NT; t++) acc[r][t] = _mm256_setzero_ps();

    for (int64_t b = 0; b < nb; b++) {
        __m256i xq[4];
        __m256 dx[4];
        for (int t = 0; t < NT; t++) {
            const uint8_t *rec = act + t * astride;
            xq[t] = _mm256_load_si256((const __m256i *)(rec + b * BW_QK));
            dx[t] = _mm256_broadcast_ss((const float *)(rec + cols) + b);
        }
        if (pf) {
            const char *ahead = (const char *)w + BW_PF_BYTES + b * NR * bb;
            _mm_prefetch(ahead, _MM_HINT_T0);
            _mm_prefetch(ahead + 64, _MM_HINT_T0);
        }
        for (int r = 0; r < NR; r++) {
            const uint8_t *blk = w + r * wrow + b * bb;
            __m256 dw = bw_h2f_bcast(blk);
            /* Signed x signed: move the weight's sign onto the activation. */
            __m256i wq = type == BW_TYPE_IQ4_NL ? bw_iq4nl_vals(blk) : _mm256_loadu_si256((const __m256i *)(blk + 2));
            __m256i aw = _mm256_sign_epi8(wq, wq);
            for (int t = 0; t < NT; t++) {
                __m256 p = bw_dot_u8s8(aw, _mm256_sign_epi8(xq[t], wq));
                acc[r][t] = _mm256_fmadd_ps(dw, _mm256_mul_ps(dx[t], p), acc[r][t]);
            }
        }
    }
    bw_store_tile(NR, NT, acc, y, ys);
}

/* The fifth bits of a Q5 row pair: qh words qa (low 128-bit lane) and qb (high), as 16 in the bytes of
 * the elements they belong to; *lo gets elements 0-15 of each row, *hi elements 16-31. */
BW_AVX2_INLINE void bw_q5_high(uint32_t qa, uint32_t qb, __m256i *lo, __m256i *hi)
{
    const __m256i v = _mm256_setr_epi32((int)qa, 0, 0, 0, (int)qb, 0, 0, 0);
    const __m256i bits = _mm256_set1_epi64x((long long)0x8040201008040201ull), sixteen = _mm256_set1_epi8(16);
    const __m256i pick_lo = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1,
                                             1, 1, 1, 1, 1, 1, 1);
    const __m256i pick_hi = _mm256_add_epi8(pick_lo, _mm256_set1_epi8(2));
    __m256i a = _mm256_and_si256(_mm256_shuffle_epi8(v, pick_lo), bits);
    __m256i b = _mm256_and_si256(_mm256_shuffle_epi8(v, pick_hi), bits);
    *lo = _mm256_or_si256(*lo, _mm256_and_si256(_mm256_cmpeq_epi8(a, bits), sixteen));
    *hi = _mm256_or_si256(*hi, _mm256_and_si256(_mm256_cmpeq_epi8(b, bits), sixteen));
}

/* Offset of the code bytes (qs) in a Q4_0/Q4_1/Q5_0/Q5_1 block. */
static inline size_t bw_q45_qoff(enum bw_type type)
{
    return type == BW_TYPE_Q4_0 ? 2 : type == BW_TYPE_Q4_1 ? 4 : type == BW_TYPE_Q5_0 ? 6 : 8;
}

static inline size_t bw_q45_bytes(enum bw_type type)
{
    return type == BW_TYPE_Q4_0   ? sizeof(bw_block_q4_0)
           : type == BW_TYPE_Q4_1 ? sizeof(bw_block_q4_1)
           : type == BW_TYPE_Q5_0 ? sizeof(bw_block_q5_0)
                                  : sizeof(bw_block_q5_1);
}

/* Q4_0/Q4_1/Q5_0/Q5_1 tile of NR rows (1..4) x NT tokens (1..4), rows taken two per ymm (row 2p in the low 128
 * bits, row 2p+1 in the high; an odd last row is paired with itself and its copy dropped). The
 * activation block's two halves are broadcast to both 128-bit lanes, the low/high nibble vectors meet
 * them in vpmaddubsw, and int32 lanes 0-3 / 4-7 are the partial dots of the two rows. Scales of a row
 * pair, [d, m] or [d, d] as halves, are converted together and multiplied with [dx, c/8, dx, c/8]; the
 * d*dx products scale the dots, the other products accumulate in the odd lanes of a side vector and
 * enter 8 times at the end. Each output has its own 4 lanes and side lane whatever NR, NT and its
 * place in the pair, so every tile shape computes it with the same operations: the decode tile (4 x 1)
 * and the prefill tiles give identical bits. */
BW_AVX2_INLINE void bw_q4_tile(const enum bw_type type, const int NR, const int NT, const int pf, const uint8_t *w,
                               size_t wrow, const uint8_t *act, size_t astride, int64_t cols, float *y, int64_t ys)
{
    const int NP = (NR + 1) / 2;
    const size_t bb = bw_q45_bytes(type), qoff = bw_q45_qoff(type);
    const int five = type == BW_TYPE_Q5_0 || type == BW_TYPE_Q5_1;
    const int64_t nb = cols / BW_QK;
    const __m256i nib = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
    const __m256i spread = _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2);
    __m256 acc[2][4];
    __m128 accm[2][4];
    for (int p = 0; p < NP; p++)
        for (int t = 0; t < NT; t++) {
            acc[p][t] = _mm256_setzero_ps();
            accm[p][t] = _mm_setzero_ps();
        }
    for (int64_t b = 0; b < nb; b++) {
        if (pf) {
            const char *ahead = (const char *)w + BW_PF_BYTES + b * NR * bb;
            _mm_prefetch(ahead, _MM_HINT_T0);
            _mm_prefetch(ahead + 64, _MM_HINT_T0);
        }
        __m256i lo[2], hi[2];
        __m128 ws[2];
        for (int p = 0; p < NP; p++) {
            const uint8_t *ba = w + (2 * p) * wrow + b * bb, *bb2 = 2 * p + 1 < NR ? ba + wrow : ba;
            __m256i z = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(ba + qoff))),
                                                _mm_loadu_si128((const __m128i *)(bb2 + qoff)), 1);
            lo[p] = _mm256_and_si256(z, nib);
            hi[p] = _mm256_and_si256(_mm256_srli_epi16(z, 4), nib);
            if (five) {
                uint32_t qa, qb;
                memcpy(&qa, ba + qoff - 4, 4);
                memcpy(&qb, bb2 + qoff - 4, 4);
                bw_q5_high(qa, qb, &lo[p], &hi[p]);
            }
            uint32_t sa, sb;
            memcpy(&sa, ba, 4);
            memcpy(&sb, bb2, 4);
            __m128i h = _mm_setr_epi32((int)sa, (int)sb, 0, 0);
            if (type == BW_TYPE_Q4_0 || type == BW_TYPE_Q5_0)
                h = _mm_shuffle_epi8(h, _mm_setr_epi8(0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13));
            ws[p] = _mm_cvtph_ps(h);
        }
        for (int t = 0; t < NT; t++) {
            const uint8_t *rec = act + t * astride;
            const float *dd = (const float *)(rec + cols);
            __m256i xlo = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)(rec + b * BW_QK)));
            __m256i xhi = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)(rec + b * BW_QK + 16)));
            __m128 xs = _mm_blend_ps(_mm_broadcast_ss(dd + b), _mm_broadcast_ss(dd + nb + b), 0xa);
            for (int p = 0; p < NP; p++) {
                /* Each vpmaddubsw pair is at most 2 * 31 * 127, so the sum of two still fits int16. */
                __m256i d16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo[p], xlo), _mm256_maddubs_epi16(hi[p], xhi));
                __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(d16, ones));
                __m128 prod = _mm_mul_ps(ws[p], xs); /* [Sa, Ma, Sb, Mb] */
                accm[p][t] = _mm_add_ps(accm[p][t], prod);
                __m256 S = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(prod), spread);
                acc[p][t] = _mm256_fmadd_ps(S, dot, acc[p][t]);
            }
        }
    }
    for (int t = 0; t < NT; t++) {
        /* Each row's four lanes sum as (l0 + l1) + (l2 + l3), with one row pair (NP = 1) or two. */
        __m256 h = _mm256_hadd_ps(acc[0][t], acc[NP - 1][t]);
        h = _mm256_hadd_ps(h, h); /* low lane [r0, r2, ..], high lane [r1, r3, ..] */
        __m128 s = _mm_unpacklo_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        __m128 m = _mm_shuffle_ps(accm[0][t], accm[NP - 1][t], _MM_SHUFFLE(3, 1, 3, 1));
        __m128 out = _mm_fmadd_ps(m, _mm_set1_ps(8.0f), s);
        if (NR == 4) {
            _mm_storeu_ps(y + t * ys, out);
        } else {
            float o[4];
            _mm_storeu_ps(o, out);
            for (int r = 0; r < NR; r++) y[t * ys + r] = o[r];
        }
    }
}

/* ---- K types ------------------------------------------------------------------------------------- *
 * A super-block is unpacked once per tile row into 8 chunks of 32 unsigned codes (chunk c holds elements
 * 32c .. 32c+31) and, per chunk, a vector of 16 int16 scales (group 2c's in the low 128 bits, group
 * 2c+1's in the high). Per token: vpmaddubsw pairs codes with the Q8_K codes, vpmaddwd applies the
 * scales, and int32 lanes add up I; C is one vpmaddwd of the 16 corrections with the 16 group sums.
 * Both are exact integers, and the float steps are bw_kq_share's (kquant.h), so this path gives the
 * portable path's bits whatever the tiling. No int16 step saturates: a code pair is at most
 * 2 * 63 * 127, times a scale of at most 128 in magnitude, in int32. */

struct bw_kq_unpacked {
    __m256i u[8], corr;
    __m256i sc16; /* the 16 group scales, one int16 lane each */
};

/* bw_kq_scales and bw_kq_corr as int16 vectors (group g in lane g), with the same values; Q3_K's
 * scattered 6-bit scales take the scalar routine. Q4_K/Q5_K: with a, b, c the three 32-bit words of the
 * 12 scale bytes, the scales of sub-blocks 0-3 are a & 0x3f per byte, 4-7 are (c & 15) | (a >> 6) << 4
 * per byte, and the minimums the same with b for a and c >> 4 for c. */
BW_AVX2_INLINE void bw_kq_scales16(const enum bw_type type, const uint8_t *blk, __m256i *sc, __m256i *corr)
{
    switch (type) {
    case BW_TYPE_Q2_K: {
        const __m128i b = _mm_loadu_si128((const __m128i *)(blk + offsetof(bw_block_q2_k, scales)));
        const __m128i lo4 = _mm_set1_epi8(15);
        *sc = _mm256_cvtepu8_epi16(_mm_and_si128(b, lo4));
        *corr = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(b, 4), lo4));
        return;
    }
    case BW_TYPE_Q4_K:
    case BW_TYPE_Q5_K: {
        uint32_t w[3];
        memcpy(w, blk + offsetof(bw_block_q4_k, scales), 12);
        const uint32_t sc_lo = w[0] & 0x3f3f3f3fu, m_lo = w[1] & 0x3f3f3f3fu;
        const uint32_t sc_hi = (w[2] & 0x0f0f0f0fu) | ((w[0] >> 2) & 0x30303030u);
        const uint32_t m_hi = ((w[2] >> 4) & 0x0f0f0f0fu) | ((w[1] >> 2) & 0x30303030u);
        /* 8 sub-block values as int16, each then doubled: groups 2j and 2j+1 share sub-block j */
        const __m128i s8 = _mm_cvtepu8_epi16(_mm_setr_epi32((int)sc_lo, (int)sc_hi, 0, 0));
        const __m128i m8 = _mm_cvtepu8_epi16(_mm_setr_epi32((int)m_lo, (int)m_hi, 0, 0));
        *sc =
            _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi16(s8, s8)), _mm_unpackhi_epi16(s8, s8), 1);
        *corr =
            _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi16(m8, m8)), _mm_unpackhi_epi16(m8, m8), 1);
        return;
    }
    case BW_TYPE_Q6_K:
        *sc = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + offsetof(bw_block_q6_k, scales))));
        *corr = _mm256_slli_epi16(*sc, 5); /* 32 * sc */
        return;
    default: { /* Q3_K */
        int16_t s16[16], m[16], cm[16];
        bw_kq_scales(type, blk, s16, m);
        bw_kq_corr(type, s16, m, cm);
        *sc = _mm256_loadu_si256((const __m256i *)s16);
        *corr = _mm256_loadu_si256((const __m256i *)cm);
        return;
    }
    }
}

BW_AVX2_INLINE void bw_kq_unpack(const enum bw_type type, const uint8_t *blk, struct bw_kq_unpacked *k)
{
    const __m256i m2 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);
    switch (type) {
    case BW_TYPE_Q2_K:
    case BW_TYPE_Q3_K: {
        const int three = type == BW_TYPE_Q3_K;
        const uint8_t *qs = blk + (three ? offsetof(bw_block_q3_k, qs) : offsetof(bw_block_q2_k, qs));
        const __m256i hm = three ? _mm256_loadu_si256((const __m256i *)(blk + offsetof(bw_block_q3_k, hmask)))
                                 : _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * h));
            for (int j = 0; j < 4; j++) {
                __m256i u = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m2);
                if (three)
                    u = _mm256_or_si256(u,
                                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + j), one), 2));
                k->u[4 * h + j] = u;
            }
        }
        break;
    }
    case BW_TYPE_Q4_K:
    case BW_TYPE_Q5_K: {
        const int five = type == BW_TYPE_Q5_K;
        const uint8_t *qs = blk + (five ? offsetof(bw_block_q5_k, qs) : offsetof(bw_block_q4_k, qs));
        const __m256i qh =
            five ? _mm256_loadu_si256((const __m256i *)(blk + offsetof(bw_block_q5_k, qh))) : _mm256_setzero_si256();
        for (int c2 = 0; c2 < 4; c2++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c2));
            __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if (five) {
                __m256i b0 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c2), one);
                __m256i b1 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c2 + 1), one);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(b0, 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(b1, 4));
            }
            k->u[2 * c2] = lo;
            k->u[2 * c2 + 1] = hi;
        }
        break;
    }
    default: { /* Q6_K */
        const uint8_t *ql = blk + offsetof(bw_block_q6_k, ql), *qhp = blk + offsetof(bw_block_q6_k, qh);
        for (int h = 0; h < 2; h++) {
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)(ql + 64 * h));
            const __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(qhp + 32 * h));
            for (int j = 0; j < 4; j++) {
                const __m256i l = j % 2 ? l1 : l0;
                __m256i lo = _mm256_and_si256(j < 2 ? l : _mm256_srli_epi16(l, 4), m4);
                __m256i hb = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * j), m2);
                k->u[4 * h + j] = _mm256_or_si256(lo, _mm256_slli_epi16(hb, 4));
            }
        }
        break;
    }
    }
    bw_kq_scales16(type, blk, &k->sc16, &k->corr);
}

/* The scales of chunk c for vpmaddwd: dword c of sc16 (groups 2c and 2c+1) in every dword, then group 2c's
 * spread over the low 128 bits and 2c+1's over the high. */
BW_AVX2_INLINE __m256i bw_kq_chunk_scales(__m256i sc16, int c)
{
    const __m256i spread = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2,
                                            3, 2, 3, 2, 3, 2, 3);
    return _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(sc16, _mm256_set1_epi32(c)), spread);
}

BW_AVX2_INLINE int32_t bw_hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* [sum(a[0]), sum(a[1]), sum(a[2]), sum(a[3])] of four 8-lane int32 vectors. */
BW_AVX2_INLINE __m128i bw_hsum4_epi32(const __m256i a[4])
{
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

static inline size_t bw_kq_bytes(enum bw_type type)
{
    return type == BW_TYPE_Q2_K   ? sizeof(bw_block_q2_k)
           : type == BW_TYPE_Q3_K ? sizeof(bw_block_q3_k)
           : type == BW_TYPE_Q4_K ? sizeof(bw_block_q4_k)
           : type == BW_TYPE_Q5_K ? sizeof(bw_block_q5_k)
                                  : sizeof(bw_block_q6_k);
}

/* Adds a super-block's shares to sum[t] for NT tokens (1..4 or a multiple of 4), given 8 int32 lanes summing to each
 * token's I (accI) and C (accC). Four tokens are reduced and scaled together: the same integers, and per lane the
 * same float operations in the same order as bw_kq_share, so the bits equal the one-token path's. */
BW_AVX2_INLINE void bw_k_shares(const enum bw_type type, const int NT, const __m256i *accI, const __m256i *accC,
                                float d, float dmin, const float *dy, float *sum)
{
    if (NT < 4) {
        for (int t = 0; t < NT; t++)
            sum[t] += bw_kq_share(type, d, dmin, dy[t], bw_hsum_epi32(accI[t]), bw_hsum_epi32(accC[t]));
        return;
    }
    if (NT > 4) {
        for (int t = 0; t < NT; t += 4) bw_k_shares(type, 4, accI + t, accC + t, d, dmin, dy + t, sum + t);
        return;
    }
    const __m128i I = bw_hsum4_epi32(accI), C = bw_hsum4_epi32(accC);
    const __m128 dyv = _mm_loadu_ps(dy);
    __m128 share;
    if (!bw_kq_has_min(type)) {
        share = _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(d), dyv), _mm_cvtepi32_ps(_mm_sub_epi32(I, C)));
        BW_FP_ROUNDED(share);
    } else {
        __m128 p = _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(d), dyv), _mm_cvtepi32_ps(I));
        __m128 q = _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(dmin), dyv), _mm_cvtepi32_ps(C));
        BW_FP_ROUNDED(p);
        BW_FP_ROUNDED(q);
        share = _mm_sub_ps(p, q);
    }
    _mm_storeu_ps(sum, _mm_add_ps(_mm_loadu_ps(sum), share));
}

/* One row of a K-type W times NT (1..4) Q8_K records; wide: the AVX-512 dot (bw_k_tile512). */
BW_AVX2_INLINE void bw_k_tile(const enum bw_type type, const int NT, const int pf, const uint8_t *w, const uint8_t *act,
                              size_t astride, int64_t cols, float *y, int64_t ys)
{
    const size_t bb = bw_kq_bytes(type);
    const int64_t nb = cols / BW_QK_K;
    float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * bb;
        if (pf)
            for (size_t o = 0; o < bb; o += 64) _mm_prefetch((const char *)blk + BW_PF_BYTES + o, _MM_HINT_T0);
        struct bw_kq_unpacked k;
        bw_kq_unpack(type, blk, &k);
        __m256i sc[8];
        for (int c = 0; c < 8; c++) sc[c] = bw_kq_chunk_scales(k.sc16, c);
        float d, dmin, dy[4];
        bw_kq_dmin(type, blk, &d, &dmin);
        __m256i accI[4], accC[4];
        for (int t = 0; t < NT; t++) {
            const uint8_t *rec = act + t * astride;
            const int8_t *xq = (const int8_t *)rec + b * BW_QK_K;
            __m256i acc = _mm256_setzero_si256();
            for (int c = 0; c < 8; c++) {
                __m256i p = _mm256_maddubs_epi16(k.u[c], _mm256_loadu_si256((const __m256i *)(xq + 32 * c)));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, sc[c]));
            }
            accI[t] = acc;
            const int16_t *bsums = bw_q8k_bsums(rec, cols) + 16 * b;
            accC[t] = _mm256_madd_epi16(k.corr, _mm256_loadu_si256((const __m256i *)bsums));
            dy[t] = bw_q8k_d(rec, cols)[b];
        }
        bw_k_shares(type, NT, accI, accC, d, dmin, dy, sum);
    }
    for (int t = 0; t < NT; t++) y[t * ys] = sum[t];
}

BW_AVX2_INLINE __m256 bw_load_w8(const enum bw_type type, const uint8_t *p)
{
    if (type == BW_TYPE_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    if (type == BW_TYPE_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
    return _mm256_loadu_ps((const float *)p);
}

BW_AVX2_INLINE float bw_load_w1(const enum bw_type type, const uint8_t *p)
{
    uint16_t h;
    float f;
    if (type == BW_TYPE_F32) {
        memcpy(&f, p, 4);
        return f;
    }
    memcpy(&h, p, 2);
    if (type == BW_TYPE_F16) return _cvtsh_ss(h);
    uint32_t u = (uint32_t)h << 16;
    memcpy(&f, &u, 4);
    return f;
}

/* NR rows of a float-typed W times NT rows of x. */
BW_AVX2_INLINE void bw_ftile(const enum bw_type type, const int NR, const int NT, const int pf, const uint8_t *w,
                             size_t wrow, const float *x, int64_t xs, int64_t cols, float *y, int64_t ys)
{
    const int64_t esz = type == BW_TYPE_F32 ? 4 : 2;
    const int64_t n8 = cols & ~(int64_t)7;
    __m256 acc[4][4];
    for (int r = 0; r < NR; r++)
        for (int t = 0; t < NT; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n8; i += 8) {
        if (pf) _mm_prefetch((const char *)w + BW_PF_BYTES + i * esz * NR, _MM_HINT_T0);
        __m256 xv[4];
        for (int t = 0; t < NT; t++) xv[t] = _mm256_loadu_ps(x + t * xs + i);
        for (int r = 0; r < NR; r++) {
            __m256 wv = bw_load_w8(type, w + r * wrow + i * esz);
            for (int t = 0; t < NT; t++) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
        }
    }
    if (n8 == cols) {
        bw_store_tile(NR, NT, acc, y, ys);
        return;
    }
    for (int r = 0; r < NR; r++)
        for (int t = 0; t < NT; t++) {
            float s = bw_hsum8(acc[r][t]);
            for (int64_t i = n8; i < cols; i++) s += bw_load_w1(type, w + r * wrow + i * esz) * x[t * xs + i];
            y[t * ys + r] = s;
        }
}

/* ---- row ranges ---------------------------------------------------------------------------------- */

struct bw_rows_args {
    const uint8_t *w; /* row 0 of W */
    size_t wrow;
    int64_t cols;
    const float *x;
    int64_t xs;
    const uint8_t *act;
    size_t astride;
    float *y;
    int64_t ys;
};

/* Tile (r, t) of NR x NT outputs; pf: prefetch the weights BW_PF_BYTES ahead. */
BW_AVX2_INLINE void bw_tile(const enum bw_type type, const int NR, const int NT, const int pf,
                            const struct bw_rows_args *a, int64_t r, int64_t t)
{
    float *y = a->y + t * a->ys + r;
    if (type == BW_TYPE_Q4_0 || type == BW_TYPE_Q4_1 || type == BW_TYPE_Q5_0 || type == BW_TYPE_Q5_1)
        bw_q4_tile(type, NR, NT, pf, a->w + r * a->wrow, a->wrow, a->act + t * a->astride, a->astride, a->cols, y,
                   a->ys);
    else if (type == BW_TYPE_Q8_0 || type == BW_TYPE_IQ4_NL)
        bw_q8_tile(type, NR, NT, pf, a->w + r * a->wrow, a->wrow, a->act + t * a->astride, a->astride, a->cols, y,
                   a->ys);
    else if (bw_is_ktype(type))
        for (int i = 0; i < NR; i++)
            bw_k_tile(type, NT, pf, a->w + (r + i) * a->wrow, a->act + t * a->astride, a->astride, a->cols, y + i,
                      a->ys);
    else bw_ftile(type, NR, NT, pf, a->w + r * a->wrow, a->wrow, a->x + t * a->xs, a->xs, a->cols, y, a->ys);
}

/* Decode tiles of 4 rows starting below the returned row prefetch only inside [.., r1): the rows past
 * r1 belong to another thread's chunk (which would then arrive in the wrong core's cache) or to
 * another tensor. */
static inline int64_t bw_last_prefetch_row(const struct bw_rows_args *a, int64_t r1)
{
    return r1 - (BW_PF_BYTES + (int64_t)a->wrow - 1) / (int64_t)a->wrow;
}

BW_AVX2_INLINE void bw_rows(const enum bw_type type, const struct bw_rows_args *a, int64_t n_tok, int64_t r0,
                            int64_t r1)
{
    if (n_tok < 4) {
        int64_t r_pf = bw_last_prefetch_row(a, r1);
        for (int64_t t = 0; t < n_tok; t++) {
            int64_t r = r0;
            for (; r + 4 <= r_pf; r += 4) bw_tile(type, 4, 1, 1, a, r, t);
            for (; r + 4 <= r1; r += 4) bw_tile(type, 4, 1, 0, a, r, t);
            for (; r < r1; r++) bw_tile(type, 1, 1, 0, a, r, t);
        }
        return;
    }
    for (int64_t t0 = 0; t0 < n_tok; t0 += BW_TOK_TILE) {
        int64_t t1 = t0 + BW_TOK_TILE < n_tok ? t0 + BW_TOK_TILE : n_tok;
        int64_t r = r0;
        for (; r + 2 <= r1; r += 2) {
            int64_t t = t0;
            for (; t + 4 <= t1; t += 4) bw_tile(type, 2, 4, 0, a, r, t);
            for (; t < t1; t++) bw_tile(type, 2, 1, 0, a, r, t);
        }
        for (; r < r1; r++) {
            int64_t t = t0;
            for (; t + 4 <= t1; t += 4) bw_tile(type, 1, 4, 0, a, r, t);
            for (; t < t1; t++) bw_tile(type, 1, 1, 0, a, r, t);
        }
    }
}

/* One instantiation per type, so each gets its own fully specialized inner loops. */
#define BW_ROWS_FN(name, type)                                                                                         \
    static void BW_AVX2 name(const struct bw_rows_args *a, int64_t n_tok, int64_t r0, int64_t r1)                      \
    {                                                                                                                  \
        bw_rows(type, a, n_tok, r0, r1);                                                                               \
    }
BW_ROWS_FN(bw_rows_q4_0, BW_TYPE_Q4_0)
BW_ROWS_FN(bw_rows_q4_1, BW_TYPE_Q4_1)
BW_ROWS_FN(bw_rows_q8_0, BW_TYPE_Q8_0)
BW_ROWS_FN(bw_rows_q5_0, BW_TYPE_Q5_0)
BW_ROWS_FN(bw_rows_q5_1, BW_TYPE_Q5_1)
BW_ROWS_FN(bw_rows_iq4_nl, BW_TYPE_IQ4_NL)
BW_ROWS_FN(bw_rows_q2_k, BW_TYPE_Q2_K)
BW_ROWS_FN(bw_rows_q3_k, BW_TYPE_Q3_K)
BW_ROWS_FN(bw_rows_q4_k, BW_TYPE_Q4_K)
BW_ROWS_FN(bw_rows_q5_k, BW_TYPE_Q5_K)
BW_ROWS_FN(bw_rows_q6_k, BW_TYPE_Q6_K)
BW_ROWS_FN(bw_rows_f32, BW_TYPE_F32)
BW_ROWS_FN(bw_rows_f16, BW_TYPE_F16)
BW_ROWS_FN(bw_rows_bf16, BW_TYPE_BF16)

void BW_AVX2 bw_avx2_matmul_rows(const bw_tensor *W, const float *x, int64_t x_stride, const void *act,
                                 size_t act_stride, int64_t n_tok, float *y, int64_t y_stride, int64_t r0, int64_t r1)
{
    struct bw_rows_args a = {W->data, W->row_bytes, W->cols, x, x_stride, act, act_stride, y, y_stride};
    switch (W->type) {
    case BW_TYPE_Q4_0: bw_rows_q4_0(&a, n_tok, r0, r1); break;
    case BW_TYPE_Q4_1: bw_rows_q4_1(&a, n_tok, r0, r1); break;
    case BW_TYPE_Q8_0: bw_rows_q8_0(&a, n_tok, r0, r1); break;
    case BW_TYPE_Q5_0: bw_rows_q5_0(&a, n_tok, r0, r1); break;
    case BW_TYPE_Q5_1: bw_rows_q5_1(&a, n_tok, r0, r1); break;
    case BW_TYPE_IQ4_NL: bw_rows_iq4_nl(&a, n_tok, r0, r1); break;
    case BW_TYPE_Q2_K: bw_rows_q2_k(&a, n_tok, r0, r1); break;
    case BW_TYPE_Q3_K: bw_rows_q3_k(&a, n_tok, r0, r1); break;
    case BW_TYPE_Q4_K: bw_rows_q4_k(&a, n_tok, r0, r1); break;
    case BW_TYPE_Q5_K: bw_rows_q5_k(&a, n_tok, r0, r1); break;
    case BW_TYPE_Q6_K: bw_rows_q6_k(&a, n_tok, r0, r1); break;
    case BW_TYPE_F32: bw_rows_f32(&a, n_tok, r0, r1); break;
    case BW_TYPE_F16: bw_rows_f16(&a, n_tok, r0, r1); break;
    case BW_TYPE_BF16: bw_rows_bf16(&a, n_tok, r0, r1); break;
    default: break; /* Q8_1 and Q8_K are never weights; the loader rejects them */
    }
}

/* ---- vector ops ---------------------------------------------------------------------------------- */

BW_AVX2_INLINE float bw_dot(const float *a, const float *b, int64_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = bw_hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

float BW_AVX2 bw_avx2_dot_f32(const float *a, const float *b, int64_t n) { return bw_dot(a, b, n); }

/* exp(x) for 8 lanes, within 2 ulp of expf over the range silu and softmax need: x = n ln2 + r,
 * |r| <= ln2 / 2, a degree-6 polynomial for e^r, then 2^n built in the exponent bits. Inputs are clamped
 * so 2^n stays a normal float; exp(-87.3) and below is treated as exp(-87.3), which leaves silu
 * unchanged and gives a softmax weight of 1e-38 instead of 0. */
BW_AVX2_INLINE __m256 bw_exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* [sum(a[0]), ..., sum(a[7])]: eight horizontal sums at once. */
BW_AVX2_INLINE __m256 bw_hsum8x8(const __m256 *a)
{
    __m256 h01 = _mm256_hadd_ps(a[0], a[1]), h23 = _mm256_hadd_ps(a[2], a[3]);
    __m256 h45 = _mm256_hadd_ps(a[4], a[5]), h67 = _mm256_hadd_ps(a[6], a[7]);
    __m256 lo = _mm256_hadd_ps(h01, h23), hi = _mm256_hadd_ps(h45, h67); /* [s0..s3 | s0..s3] halves */
    return _mm256_add_ps(_mm256_permute2f128_ps(lo, hi, 0x20), _mm256_permute2f128_ps(lo, hi, 0x31));
}

/* Blocks of 8 positions: for each head, 8 dot products side by side (one accumulator per position,
 * the head's query chunk loaded once for all 8), reduced together; the block's key rows stay in L1 for
 * the whole group. */
void BW_AVX2 bw_avx2_attn_scores(const float *q, int group, int hd, const float *k, int64_t stride, int n, float scale,
                                 float *scores)
{
    int p0 = 0;
    if (hd % 8 == 0)
        for (; p0 + 8 <= n; p0 += 8)
            for (int h = 0; h < group; h++) {
                const float *qh = q + (size_t)h * hd;
                __m256 acc[8];
                for (int r = 0; r < 8; r++) acc[r] = _mm256_setzero_ps();
                for (int i = 0; i < hd; i += 8) {
                    const __m256 qv = _mm256_loadu_ps(qh + i);
                    for (int r = 0; r < 8; r++)
                        acc[r] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + (p0 + r) * stride + i), acc[r]);
                }
                _mm256_storeu_ps(scores + (size_t)h * n + p0, _mm256_mul_ps(bw_hsum8x8(acc), _mm256_set1_ps(scale)));
            }
    for (int p = p0; p < n; p++)
        for (int h = 0; h < group; h++)
            scores[(size_t)h * n + p] = bw_dot(q + (size_t)h * hd, k + p * stride, hd) * scale;
}

/* Per head: m = max, scores become exp(s - m), l = their sum. */
void BW_AVX2 bw_avx2_attn_softmax(float *scores, int group, int n, float *m, float *l)
{
    for (int h = 0; h < group; h++) {
        float *s = scores + (size_t)h * n;
        __m256 vmax = _mm256_set1_ps(-INFINITY);
        int p = 0;
        for (; p + 8 <= n; p += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(s + p));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        float mx = _mm_cvtss_f32(_mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1)));
        for (int t = p; t < n; t++) mx = s[t] > mx ? s[t] : mx;
        const __m256 vm = _mm256_set1_ps(mx);
        __m256 vsum = _mm256_setzero_ps();
        for (p = 0; p + 8 <= n; p += 8) {
            const __m256 e = bw_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + p), vm));
            _mm256_storeu_ps(s + p, e);
            vsum = _mm256_add_ps(vsum, e);
        }
        float sum = bw_hsum8(vsum);
        for (; p < n; p++) {
            s[p] = expf(s[p] - mx);
            sum += s[p];
        }
        m[h] = mx;
        l[h] = sum;
    }
}

/* 16 outputs of up to three heads at a time: six accumulators, so six independent FMA chains run while
 * the span's positions go by (one load of a value row's 16 floats serves the group); each output adds
 * its positions in order. */
void BW_AVX2 bw_avx2_attn_values(const float *scores, int group, int n, int hd, const float *v, int64_t stride,
                                 float *o)
{
    int i = 0;
    for (; i + 16 <= hd; i += 16)
        for (int h0 = 0; h0 < group; h0 += 3) {
            const int nh = group - h0 < 3 ? group - h0 : 3;
            __m256 a0[3], a1[3];
            for (int h = 0; h < nh; h++) {
                a0[h] = _mm256_loadu_ps(o + (size_t)(h0 + h) * hd + i);
                a1[h] = _mm256_loadu_ps(o + (size_t)(h0 + h) * hd + i + 8);
            }
            for (int p = 0; p < n; p++) {
                const __m256 v0 = _mm256_loadu_ps(v + p * stride + i), v1 = _mm256_loadu_ps(v + p * stride + i + 8);
                for (int h = 0; h < nh; h++) {
                    const __m256 w = _mm256_broadcast_ss(scores + (size_t)(h0 + h) * n + p);
                    a0[h] = _mm256_fmadd_ps(w, v0, a0[h]);
                    a1[h] = _mm256_fmadd_ps(w, v1, a1[h]);
                }
            }
            for (int h = 0; h < nh; h++) {
                _mm256_storeu_ps(o + (size_t)(h0 + h) * hd + i, a0[h]);
                _mm256_storeu_ps(o + (size_t)(h0 + h) * hd + i + 8, a1[h]);
            }
        }
    for (; i < hd; i++)
        for (int h = 0; h < group; h++)
            for (int p = 0; p < n; p++) o[(size_t)h * hd + i] += scores[(size_t)h * n + p] * v[p * stride + i];
}

void BW_AVX2 bw_avx2_axpy_f32(float *y, float a, const float *x, int64_t n)
{
    __m256 av = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

void BW_AVX2 bw_avx2_rmsnorm(float *out, const float *x, const float *weight, int64_t n, float eps)
{
    /* Squares rounded to float, summed in double: the portable path's arithmetic, lane-parallel. */
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 sq = _mm256_mul_ps(v, v);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(sq, 1)));
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(s0, s1));
    double ss = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for (; i < n; i++) ss += (double)(x[i] * x[i]);
    float scale = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    __m256 sv = _mm256_set1_ps(scale);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i,
                         _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), sv), _mm256_loadu_ps(weight + i)));
    for (; i < n; i++) out[i] = (x[i] * scale) * weight[i];
}

void BW_AVX2 bw_avx2_swiglu(float *out, const float *gate, const float *up, int64_t n)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 neg = _mm256_set1_ps(-0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 den = _mm256_add_ps(one, bw_exp8(_mm256_xor_ps(g, neg)));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(g, den), _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

/* ---- AVX512-VNNI variant of the quantized products ----------------------------------------------- *
 * Same activation records (c / 8 included). A tile is 4 rows x NT tokens with the four rows side by
 * side in one zmm: for Q4 and Q5 types 128-bit lane k holds the 16 code bytes of row k (Q5: plus 16
 * where the row's qh bit is set), split into a
 * low-nibble and a high-nibble vector that meet the two halves of the activation block broadcast to
 * every lane; vpdpbusd sums 4 products per int32 lane with no 16-bit saturation step. IQ4_NL rows are 32
 * bytes of looked-up levels, so two rows share a zmm; the signed weights enter vpdpbusd as
 * w + 128, and the block's "-128 * d * sum(q)" term (c) takes the excess out again. Per block and tile,
 * the scales of the 4 rows
 * ([d, m] or [d, d]) are converted together and multiplied with [dx, c/8]; the d*dx products scale the
 * integer dots, the other half accumulates in odd lanes of a side vector and is added, times 8, once at
 * the end. A token's lanes do the same work in a 4 x 1 and a 4 x 4 tile (batch invariance). Rows past
 * the last multiple of 4 go to the AVX2 kernels; row chunks are multiples of 4, so those are the same
 * rows whatever n_tok and the thread count. */

#define BW_AVX512_TARGET "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"

/* Up to this many tokens, the AVX-512 products run one token at a time with the decode kernels, which
 * prefetch the weights; each token then re-reads rows the one before it left in the caches. Wider tiles
 * pay from about here on: 1 thread, the products of a SmolLM2-135M step (Q4_1 layers, Q8_0 output), a
 * 4 x 4 tile step of 4 tokens took 12.7 ms against 4 x 2.5 ms one at a time. */
#ifndef BW_SOLO_MAX
#define BW_SOLO_MAX 4
#endif
#define BW_AVX512 __attribute__((target(BW_AVX512_TARGET)))
#define BW_AVX512_INLINE static inline __attribute__((always_inline, target(BW_AVX512_TARGET)))

/* 16 bytes at p + k * stride into 128-bit lane k, k < 4. */
BW_AVX512_INLINE __m512i bw_load4x16(const uint8_t *p, size_t stride)
{
    __m512i z = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)p));
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(p + stride)), 1);
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(p + 2 * stride)), 2);
    return _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(p + 3 * stride)), 3);
}

/* [d0, m0, d1, m1, d2, m2, d3, m3] for Q4_1/Q5_1 blocks at blk + k * stride, [d0, d0, d1, d1, ...] otherwise. */
BW_AVX512_INLINE __m256 bw_scales4(const enum bw_type type, const uint8_t *blk, size_t stride)
{
    uint32_t v[4];
    for (int k = 0; k < 4; k++) memcpy(&v[k], blk + k * stride, 4); /* every block is >= 18 bytes */
    __m128i h = _mm_setr_epi32((int)v[0], (int)v[1], (int)v[2], (int)v[3]);
    if (type != BW_TYPE_Q4_1 && type != BW_TYPE_Q5_1)
        h = _mm_shuffle_epi8(h, _mm_setr_epi8(0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13));
    return _mm256_cvtph_ps(h);
}

/* Sums of each 128-bit lane's four floats: [lane0, lane1, lane2, lane3]. */
BW_AVX512_INLINE __m512 bw_lane_sums(__m512 z)
{
    z = _mm512_add_ps(z, _mm512_permute_ps(z, 0x4e));
    return _mm512_add_ps(z, _mm512_permute_ps(z, 0xb1));
}

/* The fifth bits of four Q5 rows (qh words at qh + k * stride, k < 4) added as 16 to the codes of lane k:
 * *lo holds elements 0-15 of each row, *hi elements 16-31. Bit j of a row's qh is element j's, so the
 * low and high halves of the four words, side by side, are already the byte masks of the two vectors. */
BW_AVX512_INLINE void bw_q5_high4(const uint8_t *qh, size_t stride, __m512i *lo, __m512i *hi)
{
    uint64_t mlo = 0, mhi = 0;
    for (int k = 0; k < 4; k++) {
        uint32_t v;
        memcpy(&v, qh + k * stride, 4);
        mlo |= (uint64_t)(v & 0xffffu) << (16 * k);
        mhi |= (uint64_t)(v >> 16) << (16 * k);
    }
    const __m512i sixteen = _mm512_set1_epi8(16);
    *lo = _mm512_mask_add_epi8(*lo, _cvtu64_mask64(mlo), *lo, sixteen);
    *hi = _mm512_mask_add_epi8(*hi, _cvtu64_mask64(mhi), *hi, sixteen);
}

BW_AVX512_INLINE void bw_vnni_tile(const enum bw_type type, const int NT, const int pf, const uint8_t *w, size_t wrow,
                                   const uint8_t *act, size_t astride, int64_t cols, float *y, int64_t ys)
{
    const int is_q8 = type == BW_TYPE_Q8_0 || type == BW_TYPE_IQ4_NL, is_q4 = !is_q8;
    const int five = type == BW_TYPE_Q5_0 || type == BW_TYPE_Q5_1;
    const size_t bb = type == BW_TYPE_Q8_0     ? sizeof(bw_block_q8_0)
                      : type == BW_TYPE_IQ4_NL ? sizeof(bw_block_iq4_nl)
                                               : bw_q45_bytes(type);
    const int64_t nb = cols / BW_QK;
    const __m512i nib = _mm512_set1_epi8(15), flip = _mm512_set1_epi8((char)0x80);
    const __m512i idx4 = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6);
    const __m512i idx01 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    const __m512i idx23 = _mm512_setr_epi32(4, 4, 4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6, 6, 6);
    __m512 acc[4][2];
    __m256 accm[4];
    for (int t = 0; t < NT; t++) {
        acc[t][0] = acc[t][1] = _mm512_setzero_ps();
        accm[t] = _mm256_setzero_ps();
    }

    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * bb;
        if (pf) {
            const char *ahead = (const char *)w + BW_PF_BYTES + b * 4 * bb;
            _mm_prefetch(ahead, _MM_HINT_T0);
            _mm_prefetch(ahead + 64, _MM_HINT_T0);
        }
        __m256 ws = bw_scales4(type, blk, wrow);
        __m512i lo, hi, w01, w23;
        if (is_q4) {
            const size_t qoff = bw_q45_qoff(type);
            __m512i z = bw_load4x16(blk + qoff, wrow);
            lo = _mm512_and_si512(z, nib);
            hi = _mm512_and_si512(_mm512_srli_epi16(z, 4), nib);
            if (five) bw_q5_high4(blk + qoff - 4, wrow, &lo, &hi);
            w01 = w23 = lo; /* unused */
        } else {
            __m256i r[4];
            for (int k = 0; k < 4; k++)
                r[k] = type == BW_TYPE_IQ4_NL ? bw_iq4nl_vals(blk + k * wrow)
                                              : _mm256_loadu_si256((const __m256i *)(blk + k * wrow + 2));
            w01 = _mm512_inserti64x4(_mm512_castsi256_si512(r[0]), r[1], 1);
            w23 = _mm512_inserti64x4(_mm512_castsi256_si512(r[2]), r[3], 1);
            w01 = _mm512_xor_si512(w01, flip);
            w23 = _mm512_xor_si512(w23, flip);
            lo = hi = w01; /* unused */
        }
        for (int t = 0; t < NT; t++) {
            const uint8_t *rec = act + t * astride;
            const float *d = (const float *)(rec + cols);
            __m256 xs = _mm256_blend_ps(_mm256_broadcast_ss(d + b), _mm256_broadcast_ss(d + nb + b), 0xaa);
            __m256 prod = _mm256_mul_ps(ws, xs); /* [d*dx, m*c/8] per row */
            accm[t] = _mm256_mask_add_ps(accm[t], 0xaa, accm[t], prod);
            __m512 P = _mm512_castps256_ps512(prod);
            if (is_q4) {
                __m512i xlo = _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)(rec + b * BW_QK)));
                __m512i xhi = _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)(rec + b * BW_QK + 16)));
                __m512i dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xlo), hi, xhi);
                acc[t][0] = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx4, P), _mm512_cvtepi32_ps(dot), acc[t][0]);
            } else {
                __m512i xb = _mm512_broadcast_i64x4(_mm256_load_si256((const __m256i *)(rec + b * BW_QK)));
                __m512i d01 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w01, xb);
                __m512i d23 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w23, xb);
                acc[t][0] = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx01, P), _mm512_cvtepi32_ps(d01), acc[t][0]);
                acc[t][1] = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx23, P), _mm512_cvtepi32_ps(d23), acc[t][1]);
            }
        }
    }

    for (int t = 0; t < NT; t++) {
        __m128 s;
        if (is_q4) {
            s = _mm512_castps512_ps128(_mm512_permutexvar_ps(
                _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), bw_lane_sums(acc[t][0])));
        } else {
            /* Row k of a Q8_0 pair spans two 128-bit lanes. */
            __m512 a = bw_lane_sums(acc[t][0]), c = bw_lane_sums(acc[t][1]);
            __m512 e0 =
                _mm512_permutex2var_ps(a, _mm512_setr_epi32(0, 8, 16, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), c);
            __m512 e1 =
                _mm512_permutex2var_ps(a, _mm512_setr_epi32(4, 12, 20, 28, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), c);
            s = _mm_add_ps(_mm512_castps512_ps128(e0), _mm512_castps512_ps128(e1));
        }
        __m128 m4 =
            _mm256_castps256_ps128(_mm256_permutevar8x32_ps(accm[t], _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7)));
        _mm_storeu_ps(y + t * ys, _mm_fmadd_ps(m4, _mm_set1_ps(8.0f), s));
    }
}

BW_AVX512_INLINE void bw_vnni_rows(const enum bw_type type, const struct bw_rows_args *a, int64_t n_tok, int64_t r0,
                                   int64_t r4)
{
#define BW_VNNI_TILE(NT, pf, r, t)                                                                                     \
    bw_vnni_tile(type, NT, pf, a->w + (r)*a->wrow, a->wrow, a->act + (t)*a->astride, a->astride, a->cols,              \
                 a->y + (t)*a->ys + (r), a->ys)
    if (n_tok <= BW_SOLO_MAX) {
        int64_t r_pf = bw_last_prefetch_row(a, r4);
        for (int64_t t = 0; t < n_tok; t++) {
            int64_t r = r0;
            for (; r + 4 <= r_pf; r += 4) BW_VNNI_TILE(1, 1, r, t);
            for (; r < r4; r += 4) BW_VNNI_TILE(1, 0, r, t);
        }
        return;
    }
    for (int64_t t0 = 0; t0 < n_tok; t0 += BW_TOK_TILE) {
        int64_t t1 = t0 + BW_TOK_TILE < n_tok ? t0 + BW_TOK_TILE : n_tok;
        for (int64_t r = r0; r < r4; r += 4) {
            int64_t t = t0;
            for (; t + 4 <= t1; t += 4) BW_VNNI_TILE(4, 0, r, t);
            for (; t < t1; t++) BW_VNNI_TILE(1, 0, r, t);
        }
    }
#undef BW_VNNI_TILE
}

/* Q4_0/Q4_1/Q5_0/Q5_1 with the tokens in the lanes (lanes.h): the same products as bw_vnni_tile, bit for bit.
 * bw_vnni_tile keeps, per output, four float sums (one per int32 lane of its row: the integer dot of elements
 * 4i..4i+3 and 16+4i..16+4i+3, times d * dx, fused-added block by block) and a fifth of the m * c products; it
 * ends with ((s0 + s2) + (s1 + s3)) + 8 * that fifth, fused. Here each of those sums is one zmm of 16 tokens,
 * and the two weight dwords of a partial dot are broadcast to all 16: a weight byte loaded once serves 16
 * tokens. pf: prefetch the rows ahead (a batch this small streams the weights from memory, as decode does). */

/* Byte e is 16 where bit e of the nibble is set: the fifth bits of four Q5 codes. */
static const uint32_t bw_q5_bits4[16] = {
    0x00000000, 0x00000010, 0x00001000, 0x00001010, 0x00100000, 0x00100010, 0x00101000, 0x00101010,
    0x10000000, 0x10000010, 0x10001000, 0x10001010, 0x10100000, 0x10100010, 0x10101000, 0x10101010,
};

BW_AVX512_INLINE void bw_q4t_rows(const enum bw_type type, const int R, const int V, const int pf, const uint8_t *w,
                                  size_t wrow, const struct bw_lane_block *lb, int64_t tile_stride, int64_t nb,
                                  float *y, int64_t ys, int nt)
{
    const size_t bb = bw_q45_bytes(type), qoff = bw_q45_qoff(type);
    const int five = type == BW_TYPE_Q5_0 || type == BW_TYPE_Q5_1;
    const int has_m = type == BW_TYPE_Q4_1 || type == BW_TYPE_Q5_1;
    __m512 acc[2][2][4], accm[2][2];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) {
            accm[r][v] = _mm512_setzero_ps();
            for (int i = 0; i < 4; i++) acc[r][v][i] = _mm512_setzero_ps();
        }
    for (int64_t b = 0; b < nb; b++) {
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + r * wrow + b * bb;
            if (pf) _mm_prefetch((const char *)blk + BW_PF_BYTES, _MM_HINT_T0);
            uint16_t hd, hm;
            memcpy(&hd, blk, 2);
            hm = hd;
            if (has_m) memcpy(&hm, blk + 2, 2);
            uint32_t qh = 0;
            if (five) memcpy(&qh, blk + qoff - 4, 4);
            const __m512 dw = _mm512_cvtph_ps(_mm256_set1_epi16((short)hd));
            const __m512 mw = _mm512_cvtph_ps(_mm256_set1_epi16((short)hm));
            __m512i wlo[4], whi[4];
            for (int i = 0; i < 4; i++) {
                uint32_t q;
                memcpy(&q, blk + qoff + 4 * i, 4);
                uint32_t lo = q & 0x0f0f0f0fu, hi = (q >> 4) & 0x0f0f0f0fu;
                if (five) {
                    lo |= bw_q5_bits4[(qh >> (4 * i)) & 15];
                    hi |= bw_q5_bits4[(qh >> (16 + 4 * i)) & 15];
                }
                wlo[i] = _mm512_set1_epi32((int)lo);
                whi[i] = _mm512_set1_epi32((int)hi);
            }
            for (int v = 0; v < V; v++) {
                const struct bw_lane_block *L = lb + v * tile_stride + b;
                const __m512 ddx = _mm512_mul_ps(dw, _mm512_loadu_ps(L->d));
                __m512 mc = _mm512_mul_ps(mw, _mm512_loadu_ps(L->c));
                /* rounded before the add, as bw_vnni_tile does it: the compiler must not fuse them into an fma */
                __asm__("" : "+v"(mc));
                accm[r][v] = _mm512_add_ps(accm[r][v], mc);
                for (int i = 0; i < 4; i++) {
                    __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wlo[i], _mm512_loadu_si512(L->x[i]));
                    dot = _mm512_dpbusd_epi32(dot, whi[i], _mm512_loadu_si512(L->x[4 + i]));
                    acc[r][v][i] = _mm512_fmadd_ps(ddx, _mm512_cvtepi32_ps(dot), acc[r][v][i]);
                }
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) {
            const __m512 s =
                _mm512_add_ps(_mm512_add_ps(acc[r][v][0], acc[r][v][2]), _mm512_add_ps(acc[r][v][1], acc[r][v][3]));
            float o[BW_LANE_TOK];
            _mm512_storeu_ps(o, _mm512_fmadd_ps(accm[r][v], _mm512_set1_ps(8.0f), s));
            const int n = nt - BW_LANE_TOK * v < BW_LANE_TOK ? nt - BW_LANE_TOK * v : BW_LANE_TOK;
            for (int i = 0; i < n; i++) y[(BW_LANE_TOK * v + i) * ys + r] = o[i];
        }
}

/* Rows [r0, r4) of a Q4/Q5 W: decode in 4-row tiles of one token, small batches in 4 x 4 tiles, and from
 * BW_LANE_MIN tokens on, tiles of 16 tokens in the lanes (the last tile's few tokens, under 4, one at a time). */
BW_AVX512_INLINE void bw_q45_rows512(const enum bw_type type, const struct bw_rows_args *a, int64_t n_tok, int64_t r0,
                                     int64_t r4)
{
    if (n_tok < BW_LANE_MIN) {
        bw_vnni_rows(type, a, n_tok, r0, r4);
        return;
    }
    const int64_t nb = a->cols / BW_QK;
    const struct bw_lane_block *lanes = (const struct bw_lane_block *)(a->act + (size_t)n_tok * a->astride);
    const int pf = n_tok <= BW_LANE_TOK;
    for (int64_t t = 0; t < n_tok;) {
        int nt = n_tok - t < 2 * BW_LANE_TOK ? (int)(n_tok - t) : 2 * BW_LANE_TOK;
        if (nb > 32 && nt > BW_LANE_TOK) nt = BW_LANE_TOK;
        if (nt < 4) { /* the last few tokens: the one-token kernels, on their records */
            struct bw_rows_args tail = *a;
            tail.act = a->act + t * a->astride;
            tail.y = a->y + t * a->ys;
            bw_vnni_rows(type, &tail, nt, r0, r4);
            break;
        }
        /* Two tiles at once while 17 or more tokens are left, so that each weight dword feeds 32, when both
         * tiles' codes stay in L1 (1 thread, 512 tokens: 576 columns 340 -> 382 GFLOP/s; at 1536 columns,
         * 61 KB of codes, 336 -> 226). */
        const struct bw_lane_block *lb = lanes + t / BW_LANE_TOK * nb;
        float *y = a->y + t * a->ys;
        const uint8_t *w = a->w;
        if (nt > BW_LANE_TOK)
            for (int64_t r = r0; r < r4; r++)
                bw_q4t_rows(type, 1, 2, pf, w + r * a->wrow, a->wrow, lb, nb, nb, y + r, a->ys, nt);
        else
            for (int64_t r = r0; r < r4; r += 2)
                bw_q4t_rows(type, 2, 1, pf, w + r * a->wrow, a->wrow, lb, nb, nb, y + r, a->ys, nt);
        t += nt;
    }
}

/* Q8_0 on the AVX-512 path. Each output is
 *   y = 0; for blocks b in order: y = fma(dw_b * dx_b, (float)dot_b, y)
 * with dot_b the exact integer dot of the block's 32 weight and 32 activation codes (|dot_b| <= 520192, so the
 * conversion is exact too). Any tile shape that computes the integer dots exactly and applies those float
 * steps in that order gives the same bits: prefill puts tokens in the lanes, decode puts rows in the lanes.
 * Prefill: up to 32 tokens (two zmm of 16 lanes), their activation codes transposed once per tile into a
 * buffer (dword j of block b of token i in lane i), so that one broadcast weight dword feeds 16 tokens per
 * vpdpbusd. vpdpbusd wants an unsigned operand: the weights enter as w + 128 (w ^ 0x80) and the lanes start
 * at -128 * sum(x) of their block, which takes the excess out exactly. A weight byte loaded once serves
 * every token of the tile, and the tile's codes (20 KB at 576 columns) stay in L1 while the rows stream. */

#define BW_Q8T_NB 32 /* blocks per column chunk of the transposed buffer */

struct bw_q8t_buf {
    int32_t x[BW_Q8T_NB][2][8][16]; /* [block][token vector][dword j][token lane] */
    int32_t c[BW_Q8T_NB][2][16];    /* -128 * sum of the block's codes */
    float dx[BW_Q8T_NB][2][16];     /* the block's activation scale (0 in lanes past the tile) */
};

/* Fills buf with blocks [b0, b0 + nbc) of tokens [t, t + nt), nt <= 32. */
BW_AVX512_INLINE void bw_q8t_fill(struct bw_q8t_buf *buf, const uint8_t *act, size_t astride, int64_t cols, int64_t t,
                                  int nt, int64_t b0, int nbc)
{
    for (int i = 0; i < 32; i++) {
        const uint8_t *rec = act + (t + i) * astride;
        const float *d = (const float *)(rec + cols);
        for (int bb = 0; bb < nbc; bb++) {
            for (int j = 0; j < 8; j++) {
                int32_t v = 0;
                if (i < nt) memcpy(&v, rec + (b0 + bb) * BW_QK + 4 * j, 4);
                buf->x[bb][i >> 4][j][i & 15] = v;
            }
            buf->dx[bb][i >> 4][i & 15] = i < nt ? d[b0 + bb] : 0.0f;
        }
    }
    const __m512i ones = _mm512_set1_epi8(1);
    for (int bb = 0; bb < nbc; bb++)
        for (int v = 0; v < 2; v++) {
            __m512i s = _mm512_setzero_si512();
            for (int j = 0; j < 8; j++) s = _mm512_dpbusd_epi32(s, ones, _mm512_load_si512(buf->x[bb][v][j]));
            _mm512_store_si512(buf->c[bb][v], _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(s, 7)));
        }
}

/* R rows (w = first row) times the V token vectors of buf over its nbc blocks; acc[r][v] holds the outputs. */
BW_AVX512_INLINE void bw_q8t_rows(const int R, const int V, const int pf, const uint8_t *w, size_t wrow,
                                  const struct bw_q8t_buf *buf, int nbc, __m512 acc[4][2])
{
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (int bb = 0; bb < nbc; bb++) {
        __m512i ai[4][2];
        for (int r = 0; r < R; r++) {
            if (pf) _mm_prefetch((const char *)w + r * wrow + bb * sizeof(bw_block_q8_0) + BW_PF_BYTES, _MM_HINT_T0);
            for (int v = 0; v < V; v++) ai[r][v] = _mm512_load_si512(buf->c[bb][v]);
        }
        for (int j = 0; j < 8; j++) {
            __m512i xv[2];
            for (int v = 0; v < V; v++) xv[v] = _mm512_load_si512(buf->x[bb][v][j]);
            for (int r = 0; r < R; r++) {
                int32_t wd;
                memcpy(&wd, w + r * wrow + bb * sizeof(bw_block_q8_0) + 2 + 4 * j, 4);
                __m512i u = _mm512_xor_si512(_mm512_set1_epi32(wd), flip);
                for (int v = 0; v < V; v++) ai[r][v] = _mm512_dpbusd_epi32(ai[r][v], u, xv[v]);
            }
        }
        for (int r = 0; r < R; r++) {
            uint16_t h;
            memcpy(&h, w + r * wrow + bb * sizeof(bw_block_q8_0), 2);
            __m512 dw = _mm512_cvtph_ps(_mm256_set1_epi16((short)h));
            for (int v = 0; v < V; v++)
                acc[r][v] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_load_ps(buf->dx[bb][v])),
                                            _mm512_cvtepi32_ps(ai[r][v]), acc[r][v]);
        }
    }
}

/* Rows [r0, r1) x the nt (<= 32) tokens from t, column chunk by column chunk; between chunks the running
 * sums wait in y (stored and reloaded exactly). */
BW_AVX512_INLINE void bw_q8t_tile(const int V, const int pf, const struct bw_rows_args *a, struct bw_q8t_buf *buf,
                                  int64_t t, int nt, int64_t r0, int64_t r1)
{
    const int64_t nb = a->cols / BW_QK;
    for (int64_t b0 = 0; b0 < nb; b0 += BW_Q8T_NB) {
        int nbc = nb - b0 < BW_Q8T_NB ? (int)(nb - b0) : BW_Q8T_NB;
        bw_q8t_fill(buf, a->act, a->astride, a->cols, t, nt, b0, nbc);
        for (int64_t r = r0; r < r1;) {
            const int R = r + 4 <= r1 ? 4 : 1;
            __m512 acc[4][2];
            float tmp[16] __attribute__((aligned(64)));
            for (int k = 0; k < R; k++)
                for (int v = 0; v < V; v++) {
                    if (b0 == 0) {
                        acc[k][v] = _mm512_setzero_ps();
                        continue;
                    }
                    for (int i = 0; i < 16; i++) {
                        int ti = 16 * v + i;
                        tmp[i] = ti < nt ? a->y[(t + ti) * a->ys + r + k] : 0.0f;
                    }
                    acc[k][v] = _mm512_load_ps(tmp);
                }
            const uint8_t *w = a->w + r * a->wrow + b0 * sizeof(bw_block_q8_0);
            if (R == 4) bw_q8t_rows(4, V, pf, w, a->wrow, buf, nbc, acc);
            else bw_q8t_rows(1, V, pf, w, a->wrow, buf, nbc, acc);
            for (int k = 0; k < R; k++)
                for (int v = 0; v < V; v++) {
                    _mm512_store_ps(tmp, acc[k][v]);
                    for (int i = 0; i < 16 && 16 * v + i < nt; i++) a->y[(t + 16 * v + i) * a->ys + r + k] = tmp[i];
                }
            r += R;
        }
    }
}

/* Decode: NR (1..8) rows x one token, rows in the lanes; the same integer dots (signs moved onto the
 * activation, |w| unsigned) and the same float steps as bw_q8t_rows. */
BW_AVX512_INLINE void bw_q8r_tile(const int NR, const int pf, const uint8_t *w, size_t wrow, const uint8_t *rec,
                                  int64_t cols, float *y)
{
    const int64_t nb = cols / BW_QK;
    const float *dx = (const float *)(rec + cols);
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 0, 0, 0, 0, 0, 0, 0, 0);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * sizeof(bw_block_q8_0);
        if (pf) {
            const char *ahead = (const char *)w + BW_PF_BYTES + b * 8 * sizeof(bw_block_q8_0);
            for (int k = 0; k < 5; k++) _mm_prefetch(ahead + 64 * k, _MM_HINT_T0);
        }
        __m256i r[8];
        uint16_t h[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int k = 0; k < 8; k++) {
            r[k] = k < NR ? _mm256_loadu_si256((const __m256i *)(blk + k * wrow + 2)) : _mm256_setzero_si256();
            if (k < NR) memcpy(&h[k], blk + k * wrow, 2);
        }
        const __m512i xb = _mm512_broadcast_i64x4(_mm256_load_si256((const __m256i *)(rec + b * BW_QK)));
        const __m512i z = _mm512_setzero_si512();
        __m512i d[4];
        for (int p = 0; p < 4; p++) {
            __m512i wp = _mm512_inserti64x4(_mm512_castsi256_si512(r[2 * p]), r[2 * p + 1], 1);
            __m512i xp = _mm512_mask_sub_epi8(xb, _mm512_movepi8_mask(wp), z, xb);
            d[p] = _mm512_dpbusd_epi32(z, _mm512_abs_epi8(wp), xp);
        }
        /* 128-bit lanes of A: [row0 lo + hi, row1, row2, row3] (four partial sums each), B the same for rows 4-7 */
        __m512i A = _mm512_add_epi32(_mm512_shuffle_i64x2(d[0], d[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm512_shuffle_i64x2(d[0], d[1], _MM_SHUFFLE(3, 1, 3, 1)));
        __m512i B = _mm512_add_epi32(_mm512_shuffle_i64x2(d[2], d[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm512_shuffle_i64x2(d[2], d[3], _MM_SHUFFLE(3, 1, 3, 1)));
        __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi64(A, B), _mm512_unpackhi_epi64(A, B));
        u = _mm512_add_epi32(u, _mm512_shuffle_epi32(u, (_MM_PERM_ENUM)0xb1)); /* lane k: row k at 0, row k+4 at 2 */
        __m256i dot = _mm512_castsi512_si256(_mm512_permutexvar_epi32(idx, u));
        __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
        acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(dx[b])), _mm256_cvtepi32_ps(dot), acc);
    }
    float o[8];
    _mm256_storeu_ps(o, acc);
    for (int k = 0; k < NR; k++) y[k] = o[k];
}

static void BW_AVX512 bw_q8_0_rows512(const struct bw_rows_args *a, int64_t n_tok, int64_t r0, int64_t r1)
{
    if (n_tok <= BW_SOLO_MAX) {
        int64_t r_pf = bw_last_prefetch_row(a, r1);
        for (int64_t t = 0; t < n_tok; t++) {
            const uint8_t *rec = a->act + t * a->astride;
            float *y = a->y + t * a->ys;
            int64_t r = r0;
            for (; r + 8 <= r_pf; r += 8) bw_q8r_tile(8, 1, a->w + r * a->wrow, a->wrow, rec, a->cols, y + r);
            for (; r + 8 <= r1; r += 8) bw_q8r_tile(8, 0, a->w + r * a->wrow, a->wrow, rec, a->cols, y + r);
            for (; r < r1; r++) bw_q8r_tile(1, 0, a->w + r * a->wrow, a->wrow, rec, a->cols, y + r);
        }
        return;
    }
    struct bw_q8t_buf *buf = &(struct bw_q8t_buf){0};
    for (int64_t t = 0; t < n_tok; t += 32) {
        int nt = n_tok - t < 32 ? (int)(n_tok - t) : 32;
        if (nt > 16) bw_q8t_tile(2, 0, a, buf, t, nt, r0, r1);
        else bw_q8t_tile(1, n_tok <= 16, a, buf, t, nt, r0, r1);
    }
}

/* K types on the AVX-512 path: bw_k_tile for up to 16 tokens, with the codes and scales of two chunks per
 * zmm, vpmaddubsw on 64 bytes and vpdpwssd applying the scales and accumulating in one step. Same integers, same
 * bw_k_shares: the bits of the AVX2 and portable paths. */
BW_AVX512_INLINE void bw_k_tile512(const enum bw_type type, const int NT, const int pf, const uint8_t *w,
                                   const uint8_t *act, size_t astride, int64_t cols, float *y, int64_t ys)
{
    const size_t bb = bw_kq_bytes(type);
    const int64_t nb = cols / BW_QK_K;
    /* lane i: i / 8 (_mm512_set_epi16 lists lanes from the highest) */
    const __m512i spread = _mm512_set_epi16(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 0,
                                            0, 0, 0, 0, 0, 0, 0);
    float sum[16] = {0.0f};
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * bb;
        if (pf)
            for (size_t o = 0; o < bb; o += 64) _mm_prefetch((const char *)blk + BW_PF_BYTES + o, _MM_HINT_T0);
        struct bw_kq_unpacked k;
        bw_kq_unpack(type, blk, &k);
        __m512i u[4], sc[4];
        for (int j = 0; j < 4; j++) {
            u[j] = _mm512_inserti64x4(_mm512_castsi256_si512(k.u[2 * j]), k.u[2 * j + 1], 1);
            /* int16 lane i of zmm j: the scale of group 4j + i / 8 */
            sc[j] = _mm512_permutexvar_epi16(_mm512_add_epi16(spread, _mm512_set1_epi16((short)(4 * j))),
                                             _mm512_castsi256_si512(k.sc16));
        }
        float d, dmin, dy[16];
        bw_kq_dmin(type, blk, &d, &dmin);
        __m256i accI[16], accC[16];
        for (int t = 0; t < NT; t++) {
            const uint8_t *rec = act + t * astride;
            const int8_t *xq = (const int8_t *)rec + b * BW_QK_K;
            __m512i acc = _mm512_setzero_si512();
            for (int j = 0; j < 4; j++)
                acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(u[j], _mm512_loadu_si512(xq + 64 * j)), sc[j]);
            accI[t] = _mm256_add_epi32(_mm512_castsi512_si256(acc), _mm512_extracti64x4_epi64(acc, 1));
            const int16_t *bsums = bw_q8k_bsums(rec, cols) + 16 * b;
            accC[t] = _mm256_madd_epi16(k.corr, _mm256_loadu_si256((const __m256i *)bsums));
            dy[t] = bw_q8k_d(rec, cols)[b];
        }
        bw_k_shares(type, NT, accI, accC, d, dmin, dy, sum);
    }
    for (int t = 0; t < NT; t++) y[t * ys] = sum[t];
}

/* K-type prefill with tokens in the lanes (as bw_q8t_* for Q8_0): up to 32 tokens per tile, their Q8_K codes
 * transposed once per tile (dword j of super-block b of token i in lane i), so that one broadcast dword of unpacked
 * weight codes (unsigned, vpdpbusd's unsigned operand) feeds 16 tokens. Per 16-element group g the lanes hold the
 * group's dot G_g, exactly; then
 *   Q3_K, Q6_K (cm = off * sc):  I - C = sum_g sc_g * (G_g - off * bsum_g)  (the lanes start at -off * bsum_g)
 *   Q2_K, Q4_K, Q5_K:            I = sum_g sc_g * G_g,  C = sum_g cm_g * bsum_g  (vpdpwssd on pairs of groups)
 * and the float steps of bw_kq_share lane by lane: the bits of the other tilings and paths. */

#define BW_KT_NB 4 /* super-blocks per column chunk of the transposed buffer */

struct bw_kt_buf {
    int32_t x[BW_KT_NB][2][64][16]; /* [super-block][token vector][dword][token lane] */
    int32_t bs[BW_KT_NB][2][16]
              [16]; /* no minimum: -off * bsum_g per group; else bsums of groups 2k, 2k+1 as int16 pairs */
    float dy[BW_KT_NB][2][16];
};

BW_AVX512_INLINE void bw_kt_fill(const enum bw_type type, struct bw_kt_buf *buf, const uint8_t *act, size_t astride,
                                 int64_t cols, int64_t t, int nt, int64_t b0, int nbc)
{
    const int off = bw_kq_code_offset(type), has_min = bw_kq_has_min(type);
    for (int i = 0; i < 32; i++) {
        const uint8_t *rec = act + (t + i) * astride;
        const int v = i >> 4, l = i & 15;
        for (int bb = 0; bb < nbc; bb++) {
            const int16_t *bsums = bw_q8k_bsums(rec, cols) + 16 * (b0 + bb);
            for (int j = 0; j < 64; j++) {
                int32_t x = 0;
                if (i < nt) memcpy(&x, rec + (b0 + bb) * BW_QK_K + 4 * j, 4);
                buf->x[bb][v][j][l] = x;
            }
            for (int g = 0; g < 16; g++) {
                int32_t e = 0;
                if (i < nt) {
                    if (!has_min) e = -off * bsums[g];
                    else if (g < 8) memcpy(&e, bsums + 2 * g, 4);
                }
                buf->bs[bb][v][g][l] = e;
            }
            buf->dy[bb][v][l] = i < nt ? bw_q8k_d(rec, cols)[b0 + bb] : 0.0f;
        }
    }
}

/* R rows (w = first row) times the V token vectors of buf over its nbc super-blocks; sum[r][v] holds the outputs. */
BW_AVX512_INLINE void bw_kt_rows(const enum bw_type type, const int R, const int V, const int pf, const uint8_t *w,
                                 size_t wrow, const struct bw_kt_buf *buf, int nbc, __m512 sum[4][2])
{
    const size_t bb_bytes = bw_kq_bytes(type);
    const int has_min = bw_kq_has_min(type);
    for (int bb = 0; bb < nbc; bb++) {
        uint8_t u[4][BW_QK_K] __attribute__((aligned(64)));
        int32_t sc[4][16] __attribute__((aligned(64))), cm[4][8] __attribute__((aligned(64)));
        float d[4], dmin[4];
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + r * wrow + bb * bb_bytes;
            if (pf)
                for (size_t o = 0; o < bb_bytes; o += 64)
                    _mm_prefetch((const char *)blk + BW_PF_BYTES + o, _MM_HINT_T0);
            struct bw_kq_unpacked k;
            bw_kq_unpack(type, blk, &k);
            for (int c = 0; c < 8; c++) _mm256_store_si256((__m256i *)(u[r] + 32 * c), k.u[c]);
            _mm512_store_si512(sc[r], _mm512_cvtepi16_epi32(k.sc16));
            if (has_min) _mm256_store_si256((__m256i *)cm[r], k.corr);
            bw_kq_dmin(type, blk, &d[r], &dmin[r]);
        }
        __m512i tot[4][2], cc[4][2];
        for (int r = 0; r < R; r++)
            for (int v = 0; v < V; v++) tot[r][v] = cc[r][v] = _mm512_setzero_si512();
        for (int g = 0; g < 16; g++) {
            __m512i a[4][2];
            for (int r = 0; r < R; r++)
                for (int v = 0; v < V; v++)
                    a[r][v] = has_min ? _mm512_setzero_si512() : _mm512_load_si512(buf->bs[bb][v][g]);
            for (int j = 4 * g; j < 4 * g + 4; j++) {
                __m512i xv[2];
                for (int v = 0; v < V; v++) xv[v] = _mm512_load_si512(buf->x[bb][v][j]);
                for (int r = 0; r < R; r++) {
                    int32_t wd;
                    memcpy(&wd, u[r] + 4 * j, 4);
                    const __m512i wb = _mm512_set1_epi32(wd);
                    for (int v = 0; v < V; v++) a[r][v] = _mm512_dpbusd_epi32(a[r][v], wb, xv[v]);
                }
            }
            for (int r = 0; r < R; r++) {
                const __m512i s = _mm512_set1_epi32(sc[r][g]);
                for (int v = 0; v < V; v++) tot[r][v] = _mm512_add_epi32(tot[r][v], _mm512_mullo_epi32(a[r][v], s));
            }
        }
        if (has_min)
            for (int k2 = 0; k2 < 8; k2++)
                for (int r = 0; r < R; r++) {
                    const __m512i m = _mm512_set1_epi32(cm[r][k2]);
                    for (int v = 0; v < V; v++)
                        cc[r][v] = _mm512_dpwssd_epi32(cc[r][v], _mm512_load_si512(buf->bs[bb][v][k2]), m);
                }
        for (int r = 0; r < R; r++)
            for (int v = 0; v < V; v++) {
                const __m512 dy = _mm512_load_ps(buf->dy[bb][v]);
                __m512 share;
                if (!has_min) {
                    share = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(d[r]), dy), _mm512_cvtepi32_ps(tot[r][v]));
                    BW_FP_ROUNDED(share);
                } else {
                    __m512 pp = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(d[r]), dy), _mm512_cvtepi32_ps(tot[r][v]));
                    __m512 qq = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(dmin[r]), dy), _mm512_cvtepi32_ps(cc[r][v]));
                    BW_FP_ROUNDED(pp);
                    BW_FP_ROUNDED(qq);
                    share = _mm512_sub_ps(pp, qq);
                }
                sum[r][v] = _mm512_add_ps(sum[r][v], share);
            }
    }
}

BW_AVX512_INLINE void bw_kt_tile(const enum bw_type type, const int V, const int pf, const struct bw_rows_args *a,
                                 struct bw_kt_buf *buf, int64_t t, int nt, int64_t r0, int64_t r1)
{
    const int64_t nb = a->cols / BW_QK_K;
    const size_t bb_bytes = bw_kq_bytes(type);
    for (int64_t b0 = 0; b0 < nb; b0 += BW_KT_NB) {
        int nbc = nb - b0 < BW_KT_NB ? (int)(nb - b0) : BW_KT_NB;
        bw_kt_fill(type, buf, a->act, a->astride, a->cols, t, nt, b0, nbc);
        for (int64_t r = r0; r < r1;) {
            const int R = r + 4 <= r1 ? 4 : 1;
            __m512 acc[4][2];
            float tmp[16] __attribute__((aligned(64)));
            for (int k = 0; k < R; k++)
                for (int v = 0; v < V; v++) {
                    if (b0 == 0) {
                        acc[k][v] = _mm512_setzero_ps();
                        continue;
                    }
                    for (int i = 0; i < 16; i++) {
                        int ti = 16 * v + i;
                        tmp[i] = ti < nt ? a->y[(t + ti) * a->ys + r + k] : 0.0f;
                    }
                    acc[k][v] = _mm512_load_ps(tmp);
                }
            const uint8_t *w = a->w + r * a->wrow + b0 * bb_bytes;
            if (R == 4) bw_kt_rows(type, 4, V, pf, w, a->wrow, buf, nbc, acc);
            else bw_kt_rows(type, 1, V, pf, w, a->wrow, buf, nbc, acc);
            for (int k = 0; k < R; k++)
                for (int v = 0; v < V; v++) {
                    _mm512_store_ps(tmp, acc[k][v]);
                    for (int i = 0; i < 16 && 16 * v + i < nt; i++) a->y[(t + 16 * v + i) * a->ys + r + k] = tmp[i];
                }
            r += R;
        }
    }
}

/* Rows [r0, r1) of a K-type W: decode one token at a time down the rows (bw_k_tile512), prefill in tiles of up to
 * 32 tokens in the lanes (bw_kt_tile); both give the bits of bw_kq_share. */
BW_AVX512_INLINE void bw_k_rows512(const enum bw_type type, const struct bw_rows_args *a, int64_t n_tok, int64_t r0,
                                   int64_t r1)
{
#define BW_K_TILE(NT, pf, r, t)                                                                                        \
    bw_k_tile512(type, NT, pf, a->w + (r)*a->wrow, a->act + (t)*a->astride, a->astride, a->cols,                       \
                 a->y + (t)*a->ys + (r), a->ys)
    if (n_tok <= BW_SOLO_MAX) {
        int64_t r_pf = bw_last_prefetch_row(a, r1);
        for (int64_t t = 0; t < n_tok; t++)
            for (int64_t r = r0; r < r1; r++) BW_K_TILE(1, r < r_pf, r, t);
        return;
    }
    struct bw_kt_buf *buf = &(struct bw_kt_buf){0};
    for (int64_t t = 0; t < n_tok; t += 32) {
        int nt = n_tok - t < 32 ? (int)(n_tok - t) : 32;
        if (nt > 16) bw_kt_tile(type, 2, 0, a, buf, t, nt, r0, r1);
        else bw_kt_tile(type, 1, n_tok <= 16, a, buf, t, nt, r0, r1);
    }
#undef BW_K_TILE
}

#define BW_K_ROWS512_FN(name, type)                                                                                    \
    static void BW_AVX512 name(const struct bw_rows_args *a, int64_t n_tok, int64_t r0, int64_t r1)                    \
    {                                                                                                                  \
        bw_k_rows512(type, a, n_tok, r0, r1);                                                                          \
    }
BW_K_ROWS512_FN(bw_vnni_rows_q2_k, BW_TYPE_Q2_K)
BW_K_ROWS512_FN(bw_vnni_rows_q3_k, BW_TYPE_Q3_K)
BW_K_ROWS512_FN(bw_vnni_rows_q4_k, BW_TYPE_Q4_K)
BW_K_ROWS512_FN(bw_vnni_rows_q5_k, BW_TYPE_Q5_K)
BW_K_ROWS512_FN(bw_vnni_rows_q6_k, BW_TYPE_Q6_K)

#define BW_VNNI_ROWS_FN(name, type, rows_fn)                                                                           \
    static void BW_AVX512 name(const struct bw_rows_args *a, int64_t n_tok, int64_t r0, int64_t r4)                    \
    {                                                                                                                  \
        rows_fn(type, a, n_tok, r0, r4);                                                                               \
    }
BW_VNNI_ROWS_FN(bw_vnni_rows_q4_0, BW_TYPE_Q4_0, bw_q45_rows512)
BW_VNNI_ROWS_FN(bw_vnni_rows_q4_1, BW_TYPE_Q4_1, bw_q45_rows512)
BW_VNNI_ROWS_FN(bw_vnni_rows_q5_0, BW_TYPE_Q5_0, bw_q45_rows512)
BW_VNNI_ROWS_FN(bw_vnni_rows_q5_1, BW_TYPE_Q5_1, bw_q45_rows512)
BW_VNNI_ROWS_FN(bw_vnni_rows_iq4_nl, BW_TYPE_IQ4_NL, bw_vnni_rows)

/* Float weights and the rows past the last multiple of 4 go to the AVX2 kernels. */
void BW_AVX512 bw_avx512_matmul_rows(const bw_tensor *W, const float *x, int64_t x_stride, const void *act,
                                     size_t act_stride, int64_t n_tok, float *y, int64_t y_stride, int64_t r0,
                                     int64_t r1)
{
    struct bw_rows_args a = {W->data, W->row_bytes, W->cols, x, x_stride, act, act_stride, y, y_stride};
    int64_t r4 = r0 + (r1 - r0) / 4 * 4;
    switch (W->type) {
    case BW_TYPE_Q4_0: bw_vnni_rows_q4_0(&a, n_tok, r0, r4); break;
    case BW_TYPE_Q4_1: bw_vnni_rows_q4_1(&a, n_tok, r0, r4); break;
    case BW_TYPE_Q8_0: bw_q8_0_rows512(&a, n_tok, r0, r1); return;
    case BW_TYPE_Q5_0: bw_vnni_rows_q5_0(&a, n_tok, r0, r4); break;
    case BW_TYPE_Q5_1: bw_vnni_rows_q5_1(&a, n_tok, r0, r4); break;
    case BW_TYPE_IQ4_NL: bw_vnni_rows_iq4_nl(&a, n_tok, r0, r4); break;
    case BW_TYPE_Q2_K: bw_vnni_rows_q2_k(&a, n_tok, r0, r1); return;
    case BW_TYPE_Q3_K: bw_vnni_rows_q3_k(&a, n_tok, r0, r1); return;
    case BW_TYPE_Q4_K: bw_vnni_rows_q4_k(&a, n_tok, r0, r1); return;
    case BW_TYPE_Q5_K: bw_vnni_rows_q5_k(&a, n_tok, r0, r1); return;
    case BW_TYPE_Q6_K: bw_vnni_rows_q6_k(&a, n_tok, r0, r1); return;
    default: r4 = r0; break;
    }
    if (r4 < r1) bw_avx2_matmul_rows(W, x, x_stride, act, act_stride, n_tok, y, y_stride, r4, r1);
}

/* The AVX2 kernel's arithmetic (each output adds its positions in order, one FMA each) with 32
 * registers: 64 outputs of up to four heads at a time, sixteen independent chains, a value row's 64
 * floats loaded once per position for the group. */
void BW_AVX512 bw_avx512_attn_values(const float *scores, int group, int n, int hd, const float *v, int64_t stride,
                                     float *o)
{
    int i = 0;
    for (; i + 64 <= hd; i += 64)
        for (int h0 = 0; h0 < group; h0 += 4) {
            const int nh = group - h0 < 4 ? group - h0 : 4;
            __m512 acc[4][4];
            for (int h = 0; h < nh; h++)
                for (int c = 0; c < 4; c++) acc[h][c] = _mm512_loadu_ps(o + (size_t)(h0 + h) * hd + i + 16 * c);
            for (int p = 0; p < n; p++) {
                const float *vp = v + p * stride + i;
                const __m512 v0 = _mm512_loadu_ps(vp), v1 = _mm512_loadu_ps(vp + 16);
                const __m512 v2 = _mm512_loadu_ps(vp + 32), v3 = _mm512_loadu_ps(vp + 48);
                for (int h = 0; h < nh; h++) {
                    const __m512 w = _mm512_set1_ps(scores[(size_t)(h0 + h) * n + p]);
                    acc[h][0] = _mm512_fmadd_ps(w, v0, acc[h][0]);
                    acc[h][1] = _mm512_fmadd_ps(w, v1, acc[h][1]);
                    acc[h][2] = _mm512_fmadd_ps(w, v2, acc[h][2]);
                    acc[h][3] = _mm512_fmadd_ps(w, v3, acc[h][3]);
                }
            }
            for (int h = 0; h < nh; h++)
                for (int c = 0; c < 4; c++) _mm512_storeu_ps(o + (size_t)(h0 + h) * hd + i + 16 * c, acc[h][c]);
        }
    if (i < hd) { /* the rest of a head_dim that is not a multiple of 64 */
        for (int h = 0; h < group; h++) {
            float *oh = o + (size_t)h * hd + i;
            const float *sh = scores + (size_t)h * n;
            int j = i;
            for (; j + 16 <= hd; j += 16, oh += 16) {
                __m512 acc = _mm512_loadu_ps(oh);
                for (int p = 0; p < n; p++)
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(sh[p]), _mm512_loadu_ps(v + p * stride + j), acc);
                _mm512_storeu_ps(oh, acc);
            }
            for (; j < hd; j++, oh++)
                for (int p = 0; p < n; p++) *oh = fmaf(sh[p], v[p * stride + j], *oh);
        }
    }
}

#endif
