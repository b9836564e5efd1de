/* The GPU layout of a weight matrix, and the host-side conversion from GGUF rows into it.
 *
 * Owns: the byte layout the CUDA kernels read. Quantized matrices (Q4_0, Q4_1, Q8_0) are split into two
 * regions so every load on the GPU is aligned and coalesced (GGUF's 18- and 34-byte blocks are only
 * 2-byte aligned):
 *   quants: rows x nb blocks x QB bytes, row-major (QB = 16 for Q4_0/Q4_1 with GGUF's nibble order kept,
 *           32 for Q8_0);
 *   scales: rows x nb entries, row-major: one f16 d (Q4_0, Q8_0) or the pair f16 d, f16 m (Q4_1).
 * Float matrices (F32, F16, BF16) keep GGUF's row-major bytes and have no scale region. The values are
 * the file's, bit for bit: nothing is dequantized or requantized. Pure C, no CUDA: tested on any host. */
#ifndef BW_ENGINE_CUDA_REPACK_H
#define BW_ENGINE_CUDA_REPACK_H

#include <stddef.h>
#include <stdint.h>

#include "engine/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    enum bw_type type;
    int64_t rows, cols;
    int64_t nb;      /* quant blocks per row (0 for float types) */
    int quant_bytes; /* QB: bytes of quants per block (0 for float types) */
    int scale_bytes; /* bytes of scales per block (0 for float types) */
    size_t q_bytes;  /* size of the quant region (the whole matrix for float types) */
    size_t s_bytes;  /* size of the scale region */
} bw_cu_layout;

/* 1 if the GPU kernels read weights of this type (F32, F16, BF16, Q4_0, Q4_1, Q8_0), else 0: the CPU
 * backend's other types (Q5_0, Q5_1, IQ4_NL, the K types) have no GPU kernels yet. */
int bw_cu_type_supported(enum bw_type type);

/* 0 and *l filled, or -1 if the type is not a weight type the GPU kernels read or cols does not divide
 * into blocks. */
int bw_cu_layout_of(enum bw_type type, int64_t rows, int64_t cols, bw_cu_layout *l);

/* Converts `rows` consecutive GGUF rows at src into the GPU layout of a matrix with `cols` columns.
 * q_dst and s_dst point at the first destination row inside their regions, so several GGUF tensors with
 * the same type and width can be stacked into one matrix (Q, K and V into one QKV matrix). s_dst is
 * unused for float types. */
void bw_cu_repack_rows(enum bw_type type, const void *src, int64_t rows, int64_t cols, void *q_dst, void *s_dst);

/* Reads element (r, c) back from the GPU layout (as the kernels interpret it): tests use it to prove
 * the layout holds exactly what GGUF's dequantization gives. */
float bw_cu_layout_get(const bw_cu_layout *l, const void *q, const void *s, int64_t r, int64_t c);

#ifdef __cplusplus
}
#endif

#endif
