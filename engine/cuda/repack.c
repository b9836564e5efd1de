#include "engine/cuda/repack.h"

#include <string.h>

int bw_cu_type_supported(enum bw_type type)
{
    bw_cu_layout l;
    return bw_cu_layout_of(type, 1, BW_QK, &l) == 0;
}

int bw_cu_layout_of(enum bw_type type, int64_t rows, int64_t cols, bw_cu_layout *l)
{
    memset(l, 0, sizeof *l);
    l->type = type;
    l->rows = rows;
    l->cols = cols;
    if (rows <= 0 || cols <= 0) return -1;
    switch (type) {
    case BW_TYPE_F32: l->q_bytes = (size_t)(rows * cols) * 4; return 0;
    case BW_TYPE_F16:
    case BW_TYPE_BF16: l->q_bytes = (size_t)(rows * cols) * 2; return 0;
    case BW_TYPE_Q4_0:
        l->quant_bytes = BW_QK / 2;
        l->scale_bytes = 2;
        break;
    case BW_TYPE_Q4_1:
        l->quant_bytes = BW_QK / 2;
        l->scale_bytes = 4;
        break;
    case BW_TYPE_Q8_0:
        l->quant_bytes = BW_QK;
        l->scale_bytes = 2;
        break;
    default: return -1;
    }
    if (cols % BW_QK != 0) return -1;
    l->nb = cols / BW_QK;
    l->q_bytes = (size_t)(rows * l->nb) * (size_t)l->quant_bytes;
    l->s_bytes = (size_t)(rows * l->nb) * (size_t)l->scale_bytes;
    return 0;
}

void bw_cu_repack_rows(enum bw_type type, const void *src, int64_t rows, int64_t cols, void *q_dst, void *s_dst)
{
    bw_cu_layout l;
    if (bw_cu_layout_of(type, rows, cols, &l) != 0) return;
    if (l.nb == 0) { /* float types: GGUF rows are already what the kernels read */
        memcpy(q_dst, src, l.q_bytes);
        return;
    }
    uint8_t *q = q_dst;
    uint8_t *s = s_dst;
    int64_t n = rows * l.nb;
    /* memcpy per field: GGUF blocks are packed and unaligned. */
    for (int64_t i = 0; i < n; i++) {
        switch (type) {
        case BW_TYPE_Q4_0: {
            const bw_block_q4_0 *b = (const bw_block_q4_0 *)src + i;
            memcpy(q + i * 16, b->qs, 16);
            memcpy(s + i * 2, &b->d, 2);
            break;
        }
        case BW_TYPE_Q4_1: {
            const bw_block_q4_1 *b = (const bw_block_q4_1 *)src + i;
            memcpy(q + i * 16, b->qs, 16);
            memcpy(s + i * 4, &b->d, 2);
            memcpy(s + i * 4 + 2, &b->m, 2);
            break;
        }
        case BW_TYPE_Q8_0: {
            const bw_block_q8_0 *b = (const bw_block_q8_0 *)src + i;
            memcpy(q + i * 32, b->qs, 32);
            memcpy(s + i * 2, &b->d, 2);
            break;
        }
        default: return;
        }
    }
}

float bw_cu_layout_get(const bw_cu_layout *l, const void *q, const void *s, int64_t r, int64_t c)
{
    const uint8_t *qb = q;
    const uint8_t *sb = s;
    int64_t i = r * l->cols + c;
    switch (l->type) {
    case BW_TYPE_F32: {
        float f;
        memcpy(&f, qb + i * 4, 4);
        return f;
    }
    case BW_TYPE_F16:
    case BW_TYPE_BF16: {
        uint16_t h;
        memcpy(&h, qb + i * 2, 2);
        return l->type == BW_TYPE_F16 ? bw_f16_to_f32(h) : bw_bf16_to_f32(h);
    }
    default: break;
    }
    int64_t blk = r * l->nb + c / BW_QK;
    int j = (int)(c % BW_QK);
    uint16_t d, m;
    memcpy(&d, sb + blk * l->scale_bytes, 2);
    if (l->type == BW_TYPE_Q8_0) return bw_f16_to_f32(d) * (float)(int8_t)qb[blk * 32 + j];
    uint8_t byte = qb[blk * 16 + (j & 15)];
    int nib = j < 16 ? (byte & 0x0f) : (byte >> 4);
    if (l->type == BW_TYPE_Q4_0) return bw_f16_to_f32(d) * (float)(nib - 8);
    memcpy(&m, sb + blk * 4 + 2, 2);
    return bw_f16_to_f32(d) * (float)nib + bw_f16_to_f32(m);
}
