/* CPU math kernels: dequantization, dot products and matrix products over every weight type.
 *
 * Owns: the SIMD code. An AVX-512 VNNI path (quantized products) or an AVX2/FMA path is chosen at run
 * time (bw_kernels_init, capped by BW_KERNELS=avx2|portable); the portable path computes the same sums in
 * the same order of blocks and agrees within float rounding.
 * Quantized weights are multiplied against activations quantized to 8 bits per block the way llama.cpp
 * does for each type, integer dot products per block, so results track the reference implementation
 * closely: Q8_0 activations (32 per block) for Q4_0, Q5_0, Q8_0 and IQ4_NL weights, Q8_1 for Q4_1 and
 * Q5_1, Q8_K (256 per super-block, kquant.h) for the K types Q2_K, Q3_K, Q4_K, Q5_K and Q6_K. Float
 * weights (F32, F16, BF16) use float dots.
 * Knows nothing of models, layers or files. */
#ifndef BW_ENGINE_CPU_KERNELS_H
#define BW_ENGINE_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/cpu/pool.h"
#include "engine/tensor.h"

/* Selects the SIMD path. force_portable != 0 selects the portable path (tests compare both). Returns
 * the name of the chosen path ("avx2", "portable"). */
const char *bw_kernels_init(int force_portable);

/* Dequantize one row of `cols` elements of `type` into out. */
void bw_dequant_row(enum bw_type type, const void *row, float *out, int64_t cols);

/* Scratch for the activation side of a product: bw_matmul needs bw_matmul_scratch_bytes(...) bytes. */
size_t bw_matmul_scratch_bytes(enum bw_type wtype, int64_t cols, int64_t n_tok);

/* y[t][r] = sum_c W[r][c] * x[t][c] for t < n_tok, r < W->rows. x is n_tok rows of W->cols floats
 * (stride x_stride floats), y is n_tok rows of W->rows floats (stride y_stride). scratch as above
 * (64-byte aligned). Parallel over the pool; n_tok == 1 is the decode path and must be as fast as the
 * memory allows. Batch-invariant: on a given path, y[t] is bit-identical whatever n_tok is and wherever token
 * t sits in the batch, so continuous batching and a resumed job's one-batch prefill change no result. */
void bw_matmul(bw_pool *pool, const bw_tensor *W, const float *x, int64_t x_stride, int64_t n_tok, float *y,
               int64_t y_stride, void *scratch);

/* Small vector ops used by the forward pass (single-threaded; they are cheap next to the products). */
void bw_rmsnorm(float *out, const float *x, const float *weight, int64_t n, float eps);
void bw_swiglu(float *out, const float *gate, const float *up, int64_t n); /* out = silu(gate) * up */
float bw_dot_f32(const float *a, const float *b, int64_t n);
void bw_axpy_f32(float *y, float a, const float *x, int64_t n); /* y += a * x */

/* One span of attention for the `group` query heads that share a KV head: q holds the group's heads
 * (group x hd floats, one after the other), k and v the span's first cached position, rows `stride`
 * floats apart, n positions. Per head h, with s_p = (q_h . k_p) * scale:
 *   m[h] = max s_p,  l[h] = sum exp(s_p - m[h]),  o[h*hd + i] = sum exp(s_p - m[h]) * v_p[i]
 * (o is not divided by l: spans are merged first). Each k and v row is read from memory once for the
 * whole group. Sums run over positions in order, so a head's result depends only on its inputs.
 * scores: scratch of group * n floats. */
void bw_attend(const float *q, int group, int hd, const float *k, const float *v, int64_t stride, int n, float scale,
               float *scores, float *m, float *l, float *o);

#endif
