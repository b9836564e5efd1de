/* Throughput of bw_matmul on the shapes of SmolLM2-135M (Q4_1 layers, Q8_0 output matrix; and the types of
 * its K-quant re-quantizations): decode
 * (n_tok = 1) and prefill (n_tok = 512), 1 and 2 threads, the AVX2 and portable paths.
 *
 * "streamed" rotates over enough copies of the matrix (>= 192 MB) that every call reads its weights
 * from DRAM, as a decode step does (the whole model is ~100 MB); "cached" repeats one matrix, which
 * shows the compute ceiling. Each figure is the best over many calls, since the machine is shared.
 * GB/s counts weight bytes only; GFLOP/s counts 2 * rows * cols * n_tok. The last line replays the
 * matrix products of one whole decode step (30 layers + output) over distinct buffers.
 * Usage: bench_kernels [seconds per figure, default 0.3] [only shapes whose name contains this] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/cpu/kernels.h"
#include "engine/cpu/pool.h"
#include "tests/kernel_path.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static size_t row_bytes(enum bw_type t, int64_t cols) { return bw_type_row_bytes(t, (uint64_t)cols); }

static const char *type_name(enum bw_type t) { return bw_type_info(t)->name; }

static uint64_t g_rng = 12345;

static uint64_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

/* Random codes with small, finite scales: what a model file holds, as far as speed is concerned. */
static void *make_matrix(enum bw_type t, int64_t cols, int64_t rows)
{
    size_t rb = row_bytes(t, cols), n = rb * (size_t)rows;
    uint8_t *m = aligned_alloc(64, (n + 63) / 64 * 64);
    if (!m) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) m[i] = (uint8_t)rnd();
    /* Where each block keeps its f16 scales (d, then m or dmin when there is one). */
    size_t bb = t == BW_TYPE_F32 || t == BW_TYPE_F16 || t == BW_TYPE_BF16 ? 0 : (size_t)bw_type_info(t)->block_bytes;
    size_t d_at = t == BW_TYPE_Q2_K ? 80 : t == BW_TYPE_Q3_K ? 108 : t == BW_TYPE_Q6_K ? 208 : 0;
    int two = t == BW_TYPE_Q4_1 || t == BW_TYPE_Q5_1 || t == BW_TYPE_Q2_K || t == BW_TYPE_Q4_K || t == BW_TYPE_Q5_K;
    if (bb)
        for (size_t o = 0; o < n; o += bb) {
            uint16_t d = (uint16_t)(0x1c00 + (rnd() & 0x3ff)); /* ~0.004..0.008 */
            memcpy(m + o + d_at, &d, 2);
            if (two) memcpy(m + o + d_at + 2, &d, 2);
        }
    else if (t == BW_TYPE_F16)
        for (size_t o = 0; o < n; o += 2) {
            uint16_t h = (uint16_t)(0x3000 + (rnd() & 0x7ff)) | (uint16_t)(rnd() & 0x8000);
            memcpy(m + o, &h, 2);
        }
    else
        for (size_t o = 0; o < n; o += 4) {
            float f = (float)(rnd() % 2001) / 1000.0f - 1.0f;
            memcpy(m + o, &f, 4);
        }
    return m;
}

struct shape {
    const char *what;
    enum bw_type type;
    int64_t cols, rows, n_tok;
};

static double g_secs = 0.3;

/* Best seconds per call of W x over `copies` matrices in rotation. */
static double time_matmul(bw_pool *pool, bw_tensor *Ws, int copies, const float *x, int64_t n_tok, float *y,
                          void *scratch)
{
    double best = 1e30, start = now_s();
    int calls = 0;
    for (;;) {
        bw_tensor *W = &Ws[calls % copies];
        double t0 = now_s();
        bw_matmul(pool, W, x, W->cols, n_tok, y, W->rows, scratch);
        double dt = now_s() - t0;
        if (dt < best) best = dt;
        calls++;
        if (calls >= 3 && now_s() - start > g_secs) break;
    }
    return best;
}

static void bench_shape(const struct shape *s, bw_pool **pools, const char **paths, int n_paths)
{
    size_t bytes = row_bytes(s->type, s->cols) * (size_t)s->rows;
    int copies = (int)((192u << 20) / bytes) + 1;
    if (s->n_tok > 1) copies = 1; /* prefill reuses each weight block 512 times: DRAM is not the limit */
    bw_tensor *Ws = calloc((size_t)copies, sizeof(*Ws));
    for (int c = 0; c < copies; c++) {
        Ws[c] = (bw_tensor){
            s->what, s->type, s->cols, s->rows, make_matrix(s->type, s->cols, s->rows), row_bytes(s->type, s->cols)};
    }
    float *x = malloc(sizeof(float) * (size_t)(s->cols * s->n_tok));
    for (int64_t i = 0; i < s->cols * s->n_tok; i++) x[i] = (float)(rnd() % 2001) / 1000.0f - 1.0f;
    float *y = malloc(sizeof(float) * (size_t)(s->rows * s->n_tok));
    size_t sb = bw_matmul_scratch_bytes(s->type, s->cols, s->n_tok);
    void *scratch = sb ? aligned_alloc(64, (sb + 63) / 64 * 64) : NULL;
    double flop = 2.0 * (double)s->rows * (double)s->cols * (double)s->n_tok;

    for (int p = 0; p < n_paths; p++) {
        use_path(paths[p]);
        for (int th = 0; th < 2; th++) {
            double ts = time_matmul(pools[th], Ws, copies, x, s->n_tok, y, scratch);
            double tc = copies > 1 ? time_matmul(pools[th], Ws, 1, x, s->n_tok, y, scratch) : ts;
            if (s->n_tok == 1)
                printf("%-24s %-4s %4lldx%-5lld ntok=%-3lld %-8s %dT  streamed %7.1f us %6.1f GB/s %6.1f GFLOP/s"
                       " | cached %7.1f us %6.1f GB/s\n",
                       s->what, type_name(s->type), (long long)s->cols, (long long)s->rows, (long long)s->n_tok,
                       paths[p], th + 1, ts * 1e6, bytes / ts * 1e-9, flop / ts * 1e-9, tc * 1e6, bytes / tc * 1e-9);
            else
                printf("%-24s %-4s %4lldx%-5lld ntok=%-3lld %-8s %dT  %9.2f ms %6.1f GFLOP/s  (%.0f tok/s for this "
                       "matrix)\n",
                       s->what, type_name(s->type), (long long)s->cols, (long long)s->rows, (long long)s->n_tok,
                       paths[p], th + 1, ts * 1e3, flop / ts * 1e-9, (double)s->n_tok / ts);
            fflush(stdout);
        }
    }
    for (int c = 0; c < copies; c++) free((void *)Ws[c].data);
    free(Ws);
    free(x);
    free(y);
    free(scratch);
}

/* The products of one SmolLM2-135M decode step, every matrix its own buffer; then, on the best path, of a
 * step of n_tok tokens that all want logits (a job's token and n_tok - 1 drafts being verified). */
static void bench_decode_step(bw_pool **pools, const char **paths, int n_paths)
{
    enum { N_LAYER = 30 };
    static const int64_t layer_shapes[7][2] = {{576, 576},  {576, 192},  {576, 192}, {576, 576},
                                               {576, 1536}, {576, 1536}, {1536, 576}};
    bw_tensor Ws[N_LAYER * 7 + 1];
    size_t total = 0;
    for (int l = 0; l < N_LAYER; l++)
        for (int k = 0; k < 7; k++) {
            int64_t cols = layer_shapes[k][0], rows = layer_shapes[k][1];
            Ws[l * 7 + k] = (bw_tensor){"layer",
                                        BW_TYPE_Q4_1,
                                        cols,
                                        rows,
                                        make_matrix(BW_TYPE_Q4_1, cols, rows),
                                        row_bytes(BW_TYPE_Q4_1, cols)};
            total += row_bytes(BW_TYPE_Q4_1, cols) * (size_t)rows;
        }
    Ws[N_LAYER * 7] = (bw_tensor){
        "output", BW_TYPE_Q8_0, 576, 49152, make_matrix(BW_TYPE_Q8_0, 576, 49152), row_bytes(BW_TYPE_Q8_0, 576)};
    total += row_bytes(BW_TYPE_Q8_0, 576) * 49152;
    enum { MAX_TOK = 16 };
    float *x = calloc(1536 * MAX_TOK, sizeof(float)), *y = calloc((size_t)49152 * MAX_TOK, sizeof(float));
    for (int i = 0; i < 1536 * MAX_TOK; i++) x[i] = (float)(rnd() % 2001) / 1000.0f - 1.0f;
    void *scratch = aligned_alloc(64, bw_matmul_scratch_bytes(BW_TYPE_Q4_1, 1536, MAX_TOK) + 4096);

    for (int p = 0; p < n_paths; p++) {
        use_path(paths[p]);
        for (int th = 0; th < 2; th++) {
            double best = 1e30, start = now_s();
            for (int rep = 0; rep < 3 || now_s() - start < 3 * g_secs; rep++) {
                double t0 = now_s();
                for (int i = 0; i < N_LAYER * 7 + 1; i++) bw_matmul(pools[th], &Ws[i], x, 1536, 1, y, 49152, scratch);
                double dt = now_s() - t0;
                if (dt < best) best = dt;
            }
            printf("decode step (211 products, %.1f MB)  %-8s %dT  %6.2f ms  %6.1f GB/s  -> %.0f tok/s if "
                   "products were all\n",
                   total / 1048576.0, paths[p], th + 1, best * 1e3, total / best * 1e-9, 1.0 / best);
            fflush(stdout);
        }
    }
    use_path(paths[0]);
    double t1 = 0;
    static const int step_tokens[] = {1, 2, 3, 4, 5, 8, 9, 12, 16};
    for (size_t k = 0; k < 2 * sizeof(step_tokens) / sizeof(step_tokens[0]); k++) {
        const int th = (int)(k / (sizeof(step_tokens) / sizeof(step_tokens[0])));
        const int n = step_tokens[k % (sizeof(step_tokens) / sizeof(step_tokens[0]))];
        double best = 1e30, best_out = 1e30, start = now_s();
        for (int rep = 0; rep < 3 || now_s() - start < 3 * g_secs; rep++) {
            double t0 = now_s();
            for (int i = 0; i < N_LAYER * 7; i++) bw_matmul(pools[th], &Ws[i], x, 1536, n, y, 49152, scratch);
            double t_mid = now_s();
            bw_matmul(pools[th], &Ws[N_LAYER * 7], x, 1536, n, y, 49152, scratch);
            double dt = now_s() - t0;
            if (dt < best) best = dt;
            if (now_s() - t_mid < best_out) best_out = now_s() - t_mid;
        }
        if (n == 1) t1 = best;
        printf("step of %2d tokens %-8s %dT  %6.2f ms (output matrix %5.2f ms)  %.2fx one token's, %.2f ms per "
               "token\n",
               n, paths[0], th + 1, best * 1e3, best_out * 1e3, best / t1, best * 1e3 / n);
        fflush(stdout);
    }
    for (int i = 0; i < N_LAYER * 7 + 1; i++) free((void *)Ws[i].data);
    free(x);
    free(y);
    free(scratch);
}

static void nop_fn(void *ctx, int ith, int nth)
{
    (void)ctx;
    (void)ith;
    (void)nth;
}

int main(int argc, char **argv)
{
    if (argc > 1) g_secs = atof(argv[1]);
    unsetenv("BW_KERNELS");
    const char *best = bw_kernels_init(0);
    const char *paths[3] = {best, "avx2", "portable"};
    int n_paths = strcmp(best, "avx512vnni") == 0 ? 3 : strcmp(best, "avx2") == 0 ? 2 : 1;
    if (n_paths == 2) paths[1] = "portable";
    /* BW_BENCH_FAST=1 skips the (slow) portable path. */
    if (getenv("BW_BENCH_FAST") && n_paths > 1) n_paths--;
    bw_pool *pools[2] = {bw_pool_create(1), bw_pool_create(2)};
    if (!pools[0] || !pools[1]) return 1;

    double t0 = now_s();
    for (int i = 0; i < 100000; i++) bw_pool_run(pools[1], nop_fn, NULL);
    printf("bw_pool_run, 2 threads, empty task: %.2f us per run\n", (now_s() - t0) / 100000 * 1e6);

    static const struct shape shapes[] = {
        {"attn_q/attn_output", BW_TYPE_Q4_1, 576, 576, 1},
        {"attn_k/attn_v", BW_TYPE_Q4_1, 576, 192, 1},
        {"ffn_gate/ffn_up", BW_TYPE_Q4_1, 576, 1536, 1},
        {"ffn_down", BW_TYPE_Q4_1, 1536, 576, 1},
        {"output", BW_TYPE_Q8_0, 576, 49152, 1},
        {"(Q4_0 ffn_up)", BW_TYPE_Q4_0, 576, 1536, 1},
        {"(F16 ffn_up)", BW_TYPE_F16, 576, 1536, 1},
        {"ffn_gate/ffn_up prefill", BW_TYPE_Q4_1, 576, 1536, 512},
        {"ffn_down prefill", BW_TYPE_Q4_1, 1536, 576, 512},
        {"(Q8_0 ffn_up prefill)", BW_TYPE_Q8_0, 576, 1536, 512},
        /* The types of the K-quant files (Q4_K_M: Q5_0 at width 576, Q4_K / Q6_K ffn_down). */
        {"(Q5_0 ffn_up)", BW_TYPE_Q5_0, 576, 1536, 1},
        {"(Q4_K ffn_down)", BW_TYPE_Q4_K, 1536, 576, 1},
        {"(Q6_K ffn_down)", BW_TYPE_Q6_K, 1536, 576, 1},
        {"(Q5_0 ffn_up prefill)", BW_TYPE_Q5_0, 576, 1536, 512},
        {"(Q4_K ffn_down prefill)", BW_TYPE_Q4_K, 1536, 576, 512},
        {"(Q6_K ffn_down prefill)", BW_TYPE_Q6_K, 1536, 576, 512},
    };
    const char *only = argc > 2 ? argv[2] : NULL;
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
        if (!only || strstr(shapes[i].what, only)) bench_shape(&shapes[i], pools, paths, n_paths);
    if (!only || strstr("decode step", only)) bench_decode_step(pools, paths, n_paths);
    bw_pool_destroy(pools[0]);
    bw_pool_destroy(pools[1]);
    return 0;
}
