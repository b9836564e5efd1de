/* Tensor element types as numbered by GGUF, and the byte layout of each quantized block.
 *
 * Owns: the type table (block size, bytes per block, name). Knows nothing of files or backends.
 * A 2-D weight matrix is stored row-major: `cols` elements per row (GGUF ne[0]), `rows` rows (ne[1]);
 * a row of a quantized type is cols/block_size blocks. */
#ifndef BW_ENGINE_TENSOR_H
#define BW_ENGINE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

enum bw_type {
    BW_TYPE_F32 = 0,
    BW_TYPE_F16 = 1,
    BW_TYPE_Q4_0 = 2,
    BW_TYPE_Q4_1 = 3,
    BW_TYPE_Q5_0 = 6,
    BW_TYPE_Q5_1 = 7,
    BW_TYPE_Q8_0 = 8,
    BW_TYPE_Q8_1 = 9, /* activations only: never a weight type we load */
    BW_TYPE_Q2_K = 10,
    BW_TYPE_Q3_K = 11,
    BW_TYPE_Q4_K = 12,
    BW_TYPE_Q5_K = 13,
    BW_TYPE_Q6_K = 14,
    BW_TYPE_Q8_K = 15, /* activations only */
    BW_TYPE_IQ4_NL = 20,
    BW_TYPE_BF16 = 30,
};

#define BW_QK 32    /* elements per block of the 32-element types (Q4_0 ... Q8_1, IQ4_NL) */
#define BW_QK_K 256 /* elements per super-block of the K types */

typedef uint16_t bw_f16;  /* IEEE half, bit pattern */
typedef uint16_t bw_bf16; /* bfloat16, bit pattern */

/* Block layouts, identical to the GGUF on-disk format. */
typedef struct {
    bw_f16 d;
    uint8_t qs[BW_QK / 2];
} bw_block_q4_0; /* x = d * (q - 8) */
typedef struct {
    bw_f16 d;
    bw_f16 m;
    uint8_t qs[BW_QK / 2];
} bw_block_q4_1; /* x = d * q + m */
typedef struct {
    bw_f16 d;
    int8_t qs[BW_QK];
} bw_block_q8_0; /* x = d * q */
typedef struct {
    bw_f16 d;
    bw_f16 s;
    int8_t qs[BW_QK];
} bw_block_q8_1; /* s = d * sum(q) */
typedef struct {
    bw_f16 d;
    uint8_t qh[4];
    uint8_t qs[BW_QK / 2];
} bw_block_q5_0; /* x = d * (q - 16) */
typedef struct {
    bw_f16 d;
    bw_f16 m;
    uint8_t qh[4];
    uint8_t qs[BW_QK / 2];
} bw_block_q5_1; /* x = d * q + m */
typedef struct {
    bw_f16 d;
    uint8_t qs[BW_QK / 2];
} bw_block_iq4_nl; /* x = d * bw_iq4nl_values[q] */
/* Nibble order in q4/q5/iq4 blocks: element j (j < 16) is the low nibble of qs[j], element j + 16 the
 * high. Q5: bit j of the little-endian 32-bit qh is the fifth (value 16) bit of element j. */

/* K types: a 256-element super-block of sub-blocks, each sub-block with its own integer scale (and
 * minimum) applied to the super-block's f16 d (and dmin). Element e sits in sub-block e/16 (Q2_K, Q3_K,
 * Q6_K) or e/32 (Q4_K, Q5_K). Where the bits of element e live:
 *   Q2_K  x = d * sc * q - dmin * m, q 2 bits: half h = e/128, j = (e%128)/32, l = e%32:
 *         (qs[32h + l] >> 2j) & 3; scales[s] low nibble sc, high nibble m (s = e/16).
 *   Q3_K  x = d * (sc - 32) * (q - 4 * !hbit): q as Q2_K's, hbit = bit (4h + j) of hmask[l]; sc 6 bits,
 *         12 bytes for 16 scales: low 4 bits of scale s in scales[s % 8] (low nibble for s < 8, high
 *         nibble after), high 2 bits in bits 2(s/4).. of scales[8 + s%4].
 *   Q4_K  x = d * sc * q - dmin * m, q 4 bits: chunk c = e/64, l = e%32: qs[32c + l], low nibble for
 *         (e%64) < 32, high nibble after; sc, m 6 bits each for sub-block s = e/32, packed in 12 bytes:
 *         s < 4: sc = scales[s] & 63, m = scales[s+4] & 63; s >= 4: sc = (scales[s+4] & 15) |
 *         (scales[s-4] >> 6) << 4, m = (scales[s+4] >> 4) | (scales[s] >> 6) << 4.
 *   Q5_K  Q4_K plus a fifth bit (value 16): bit s of qh[e%32].
 *   Q6_K  x = d * sc * (q - 32), sc int8 per 16, q 6 bits: half h = e/128, i = e%128, l = i%32, k = i/32:
 *         low 4 bits from ql[64h + l + 32(k%2)] (low nibble for k < 2), high 2 bits
 *         (qh[32h + l] >> 2k) & 3.
 *   Q8_K  (activations) x = d * q, bsums[g] = sum of q over elements 16g .. 16g+15. */
typedef struct {
    uint8_t scales[BW_QK_K / 16];
    uint8_t qs[BW_QK_K / 4];
    bw_f16 d;
    bw_f16 dmin;
} bw_block_q2_k;
typedef struct {
    uint8_t hmask[BW_QK_K / 8];
    uint8_t qs[BW_QK_K / 4];
    uint8_t scales[12];
    bw_f16 d;
} bw_block_q3_k;
typedef struct {
    bw_f16 d;
    bw_f16 dmin;
    uint8_t scales[12];
    uint8_t qs[BW_QK_K / 2];
} bw_block_q4_k;
typedef struct {
    bw_f16 d;
    bw_f16 dmin;
    uint8_t scales[12];
    uint8_t qh[BW_QK_K / 8];
    uint8_t qs[BW_QK_K / 2];
} bw_block_q5_k;
typedef struct {
    uint8_t ql[BW_QK_K / 2];
    uint8_t qh[BW_QK_K / 4];
    int8_t scales[BW_QK_K / 16];
    bw_f16 d;
} bw_block_q6_k;
typedef struct {
    float d;
    int8_t qs[BW_QK_K];
    int16_t bsums[BW_QK_K / 16];
} bw_block_q8_k;

/* The 16 levels of IQ4_NL, indexed by the 4-bit code. */
extern const int8_t bw_iq4nl_values[16];

struct bw_type_info {
    const char *name;
    int block_size;     /* elements per block (1 for float types) */
    int block_bytes;    /* bytes per block */
    int is_weight_type; /* loadable as a weight */
};

/* NULL for a type number we do not support. */
const struct bw_type_info *bw_type_info(uint32_t type);

/* Bytes of one row of `cols` elements; 0 if cols is not a multiple of the block size or the type is
 * unknown. */
size_t bw_type_row_bytes(uint32_t type, uint64_t cols);

/* A weight matrix as the engine sees it, whatever holds its bytes (the mapped file, a GPU buffer). */
typedef struct {
    const char *name;
    enum bw_type type;
    int64_t cols; /* elements per row (GGUF ne[0]) */
    int64_t rows; /* GGUF ne[1]; 1 for vectors */
    const void *data;
    size_t row_bytes;
} bw_tensor;

float bw_f16_to_f32(bw_f16 h);
bw_f16 bw_f32_to_f16(float f);
float bw_bf16_to_f32(bw_bf16 h);

#endif
