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
    BW_TYPE_Q8_0 = 8,
    BW_TYPE_Q8_1 = 9, /* activations only: never a weight type we load */
    BW_TYPE_BF16 = 30,
};

#define BW_QK 32 /* elements per block in every quantized type we support */

typedef uint16_t bw_f16;  /* IEEE half, bit pattern */
typedef uint16_t bw_bf16; /* bfloat16, bit pattern */

/* Block layouts, identical to the GGUF on-disk format. */
typedef struct { bw_f16 d; uint8_t qs[BW_QK / 2]; } bw_block_q4_0;          /* x = d * (q - 8) */
typedef struct { bw_f16 d; bw_f16 m; uint8_t qs[BW_QK / 2]; } bw_block_q4_1; /* x = d * q + m */
typedef struct { bw_f16 d; int8_t qs[BW_QK]; } bw_block_q8_0;                /* x = d * q */
typedef struct { bw_f16 d; bw_f16 s; int8_t qs[BW_QK]; } bw_block_q8_1;     /* s = d * sum(q) */
/* Nibble order in q4 blocks: element j (j < 16) is the low nibble of qs[j], element j + 16 the high. */

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
