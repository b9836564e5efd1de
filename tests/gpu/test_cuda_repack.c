/* The GPU weight layout holds exactly GGUF's values: every element of random matrices of every weight
 * type, read back through the layout (bw_cu_layout_get, the kernels' interpretation), equals GGUF's
 * dequantization; stacking several tensors puts each row where the stacked matrix expects it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cpu/kernels.h"
#include "engine/cuda/repack.h"

static unsigned rng = 12345;
static unsigned rnd(void)
{
    rng = rng * 1103515245u + 12345u;
    return rng >> 8;
}

static int check_type(enum bw_type type, int rows, int cols)
{
    size_t rb = bw_type_row_bytes(type, (uint64_t)cols);
    uint8_t *g = malloc(rb * (size_t)rows);
    for (size_t i = 0; i < rb * (size_t)rows; i++) g[i] = (uint8_t)rnd();
    /* Keep scales finite: random bytes can make NaN/inf f16 scales, which compare unequal. */
    const struct bw_type_info *ti = bw_type_info(type);
    if (ti->block_size == 32) {
        for (size_t b = 0; b < (size_t)rows * (size_t)(cols / 32); b++) {
            uint8_t *blk = g + b * (size_t)ti->block_bytes;
            blk[1] &= 0x3b;
            if (type == BW_TYPE_Q4_1) blk[3] &= 0x3b;
        }
    } else if (type == BW_TYPE_F16 || type == BW_TYPE_BF16) {
        for (size_t i = 0; i < (size_t)rows * (size_t)cols; i++) g[2 * i + 1] &= 0x3b;
    } else {
        for (size_t i = 0; i < (size_t)rows * (size_t)cols; i++) g[4 * i + 3] &= 0x3b;
    }
    /* Stack the matrix as two parts (rows split unevenly) like Q|K|V on the GPU. */
    bw_cu_layout l;
    if (bw_cu_layout_of(type, rows, cols, &l) != 0) {
        printf("FAIL %s: no layout\n", ti->name);
        return 1;
    }
    uint8_t *q = calloc(1, l.q_bytes + 1), *s = calloc(1, l.s_bytes + 1);
    int split = rows / 3;
    bw_cu_repack_rows(type, g, split, cols, q, s);
    size_t qrow = l.nb ? (size_t)l.nb * (size_t)l.quant_bytes : l.q_bytes / (size_t)rows;
    bw_cu_repack_rows(type, g + rb * (size_t)split, rows - split, cols, q + qrow * (size_t)split,
                      s + (size_t)l.nb * (size_t)l.scale_bytes * (size_t)split);
    float *ref = malloc(sizeof(float) * (size_t)cols);
    int bad = 0;
    for (int r = 0; r < rows; r++) {
        bw_dequant_row(type, g + rb * (size_t)r, ref, cols);
        for (int c = 0; c < cols; c++) {
            float v = bw_cu_layout_get(&l, q, s, r, c);
            if (memcmp(&v, &ref[c], sizeof v) != 0 && bad++ < 3)
                printf("  %s (%d,%d): layout %g, GGUF %g\n", ti->name, r, c, v, ref[c]);
        }
    }
    printf("%s %s %dx%d: %s\n", bad ? "FAIL" : "ok", ti->name, rows, cols, bad ? "values differ" : "bit-exact");
    free(g);
    free(q);
    free(s);
    free(ref);
    return bad != 0;
}

int main(void)
{
    const enum bw_type types[] = {BW_TYPE_F32, BW_TYPE_F16, BW_TYPE_BF16, BW_TYPE_Q4_0, BW_TYPE_Q4_1, BW_TYPE_Q8_0};
    int fail = 0;
    bw_kernels_init(0);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        fail += check_type(types[i], 7, 96);
        fail += check_type(types[i], 37, 576);
    }
    bw_cu_layout l;
    if (bw_cu_layout_of(BW_TYPE_Q4_1, 4, 48, &l) == 0 || bw_cu_layout_of(BW_TYPE_Q8_1, 4, 64, &l) == 0) {
        printf("FAIL: layout accepted a width off the block size or an activation-only type\n");
        fail++;
    }
    /* The CPU-only types must be refused up front (the backend names the tensor), the GPU's accepted. */
    const enum bw_type cpu_only[] = {BW_TYPE_Q5_0, BW_TYPE_Q5_1, BW_TYPE_IQ4_NL, BW_TYPE_Q2_K,
                                     BW_TYPE_Q3_K, BW_TYPE_Q4_K, BW_TYPE_Q5_K,   BW_TYPE_Q6_K};
    for (size_t i = 0; i < sizeof cpu_only / sizeof cpu_only[0]; i++)
        if (bw_cu_type_supported(cpu_only[i]) || bw_cu_layout_of(cpu_only[i], 4, 256, &l) == 0) {
            printf("FAIL: the GPU layout accepts %s, which it has no kernels for\n", bw_type_info(cpu_only[i])->name);
            fail++;
        }
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!bw_cu_type_supported(types[i])) {
            printf("FAIL: the GPU layout refuses %s\n", bw_type_info(types[i])->name);
            fail++;
        }
    if (!fail) printf("ok   CPU-only types (Q5_0, Q5_1, IQ4_NL, Q2_K..Q6_K) refused, the GPU's accepted\n");
    return fail ? 1 : 0;
}
