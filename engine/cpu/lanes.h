/* Token-lane copy of the activations of a Q4_0/Q4_1/Q5_0/Q5_1 product, for the AVX512-VNNI path's prefill and
 * verification kernel (kernels_avx2.c, bw_q4t_*). Internal to engine/cpu/.
 *
 * bw_matmul quantizes every token into its record (kernels.c) and, for a batch of at least BW_LANE_MIN tokens on
 * that path, also copies the records into tiles of BW_LANE_TOK tokens that put the tokens side by side: tile T,
 * block b holds, for token 16T + i in lane i, the block's eight code dwords (elements 4j .. 4j + 3 in dword j), its
 * scale d and its constant c (the record's two floats). One broadcast weight dword then feeds all 16 tokens in
 * one vpdpbusd. Lanes past the last token hold zeros. The copy sits in the scratch right after the records. */
#ifndef BW_ENGINE_CPU_LANES_H
#define BW_ENGINE_CPU_LANES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "engine/tensor.h"

#define BW_LANE_TOK 16 /* tokens per tile: the int32 lanes of a zmm */
#define BW_LANE_MIN 5  /* fewer tokens run one at a time (kernels_avx2.c, BW_SOLO_MAX) */

struct bw_lane_block {
    int32_t x[8][BW_LANE_TOK]; /* [code dword j][token lane] */
    float d[BW_LANE_TOK];      /* the record's block scale */
    float c[BW_LANE_TOK];      /* the record's block constant */
};

static inline int bw_lane_type(enum bw_type t)
{
    return t == BW_TYPE_Q4_0 || t == BW_TYPE_Q4_1 || t == BW_TYPE_Q5_0 || t == BW_TYPE_Q5_1;
}

static inline int64_t bw_lane_tiles(int64_t n_tok) { return (n_tok + BW_LANE_TOK - 1) / BW_LANE_TOK; }

/* Bytes of the token-lane copy of n_tok records of `cols` columns (0 where no kernel reads one). */
static inline size_t bw_lane_bytes(enum bw_type t, int64_t cols, int64_t n_tok)
{
    if (!bw_lane_type(t) || n_tok < BW_LANE_MIN) return 0;
    return (size_t)bw_lane_tiles(n_tok) * (size_t)(cols / BW_QK) * sizeof(struct bw_lane_block);
}

/* Copies token t's record (codes, then cols/32 scales d, then cols/32 constants c) into its lane of lanes. */
static inline void bw_lane_put(struct bw_lane_block *lanes, const uint8_t *rec, int64_t cols, int64_t t)
{
    const int64_t nb = cols / BW_QK;
    const float *d = (const float *)(rec + cols);
    struct bw_lane_block *tile = lanes + t / BW_LANE_TOK * nb;
    const int i = (int)(t % BW_LANE_TOK);
    for (int64_t b = 0; b < nb; b++) {
        for (int j = 0; j < 8; j++) memcpy(&tile[b].x[j][i], rec + b * BW_QK + 4 * j, 4);
        tile[b].d[i] = d[b];
        tile[b].c[i] = d[nb + b];
    }
}

/* Zeroes the lanes past the last of n_tok tokens, so that no kernel computes on stale bytes. */
static inline void bw_lane_clear_tail(struct bw_lane_block *lanes, int64_t cols, int64_t n_tok)
{
    const int64_t nb = cols / BW_QK;
    const int used = (int)(n_tok - (bw_lane_tiles(n_tok) - 1) * BW_LANE_TOK);
    struct bw_lane_block *tile = lanes + (bw_lane_tiles(n_tok) - 1) * nb;
    for (int64_t b = 0; b < nb; b++)
        for (int i = used; i < BW_LANE_TOK; i++) {
            for (int j = 0; j < 8; j++) tile[b].x[j][i] = 0;
            tile[b].d[i] = tile[b].c[i] = 0.0f;
        }
}

#endif
