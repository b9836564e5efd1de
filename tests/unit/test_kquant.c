/* Guards the Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q5_0, Q5_1 and IQ4_NL kernels against rows quantized by
 * llama.cpp (tests/unit/data/kquant_rows.bin, written by tests/tools/make_kquant_fixture.py with gguf-py's
 * dequantization of each row stored beside it as the reference):
 *  - bw_dequant_row gives gguf-py's values;
 *  - bw_matmul on every SIMD path and thread count, for matrices assembled from the fixture's blocks,
 *    against two double-precision references over the dequantized weights:
 *      tight: x quantized by this file's copy of llama.cpp's activation rule (Q8_K for the K types: per
 *             256, iscale = -127 / (the element of largest magnitude), q = round(x * iscale),
 *             d = 1 / iscale; Q8_0 / Q8_1 per 32 for the others). Allowed error: float rounding,
 *             2^-20 * sum over elements of (|w| + max|w| of its block) * |x_q|.
 *      loose: the unquantized x. Allowed: sum |w| * (half an activation step) + tight.
 *  - the K types give the same bits on every path (their sums are exact integers and one float routine);
 *    the others agree within the tight bound;
 *  - batch invariance: a token's outputs are the same bits alone and in any batch, on every path;
 *  - llama.cpp's own CPU products (ggml's vec_dot, stored in the fixture) of the fixture rows with the
 *    fixture's activations: ours agree within twice the tight bound on every path.
 * Inputs are random and fresh each run; the seed is printed (argv[2] replays it). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/cpu/kernels.h"
#include "engine/cpu/pool.h"
#include "tests/kernel_path.h"

#define CHECK_MAX_REPORTS 29
#include "check.h"
#include "rand.h"

/* ---- the fixture --------------------------------------------------------------------------------- */

struct fixture {
    enum bw_type type;
    uint32_t rows, cols;
    size_t row_bytes;
    const uint8_t *q; /* rows x row_bytes */
    const float *ref; /* rows x cols, gguf-py's dequantization */
    uint32_t nx;
    const float *x, *y; /* nx x cols activations, nx x rows llama.cpp products */
    int block, bbytes;  /* elements and bytes per block */
    int64_t n_blocks;   /* in the whole fixture */
};

static uint8_t *g_file;

static int load_fixture(const char *path, struct fixture *fx, int max)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s (run tests/tools/make_kquant_fixture.py)\n", path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    g_file = xaligned((size_t)n);
    if (fread(g_file, 1, (size_t)n, f) != (size_t)n) exit(2);
    fclose(f);
    int k = 0;
    for (long off = 0; off + 12 <= n && k < max; k++) {
        uint32_t h[4];
        memcpy(h, g_file + off, 16);
        const struct bw_type_info *ti = bw_type_info(h[0]);
        if (!ti) {
            fprintf(stderr, "fixture: unknown type %u\n", h[0]);
            exit(2);
        }
        fx[k] = (struct fixture){
            (enum bw_type)h[0], h[1], h[2], bw_type_row_bytes(h[0], h[2]), NULL, NULL, h[3], NULL, NULL, ti->block_size,
            ti->block_bytes,    0};
        fx[k].q = g_file + off + 16;
        off += 16 + (long)(fx[k].row_bytes * h[1]);
        /* The floats follow the blocks at an arbitrary offset: copy them to aligned memory. */
        size_t nf = (size_t)h[1] * h[2] + (size_t)h[3] * h[2] + (size_t)h[3] * h[1];
        if (off + (long)(sizeof(float) * nf) > n) {
            fprintf(stderr, "fixture truncated\n");
            exit(2);
        }
        float *f = malloc(sizeof(float) * nf);
        memcpy(f, g_file + off, sizeof(float) * nf);
        fx[k].ref = f;
        fx[k].x = f + (size_t)h[1] * h[2];
        fx[k].y = fx[k].x + (size_t)h[3] * h[2];
        off += (long)(sizeof(float) * nf);
        fx[k].n_blocks = (int64_t)h[1] * h[2] / ti->block_size;
    }
    return k;
}

static const char *tname(enum bw_type t) { return bw_type_info(t)->name; }

static int is_k(enum bw_type t) { return bw_type_info(t)->block_size == BW_QK_K; }

/* Fixture block i: its bytes and its reference values. */
static const uint8_t *fx_block(const struct fixture *fx, int64_t i)
{
    int64_t per_row = fx->cols / fx->block;
    return fx->q + (i / per_row) * fx->row_bytes + (i % per_row) * fx->bbytes;
}

static const float *fx_ref(const struct fixture *fx, int64_t i) { return fx->ref + i * fx->block; }

/* A rows x cols matrix of fixture blocks in a scrambled order; wd gets the reference values. */
static uint8_t *assemble(const struct fixture *fx, int64_t rows, int64_t cols, double *wd, uint8_t **buf)
{
    size_t rb = bw_type_row_bytes(fx->type, (uint64_t)cols);
    *buf = xaligned(rb * (size_t)rows + 1);
    uint8_t *w = *buf + 1; /* unaligned, as a mapped file may be */
    int64_t nb = cols / fx->block;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t b = 0; b < nb; b++) {
            int64_t i = (r * 7 + b * 3 + r * b) % fx->n_blocks;
            memcpy(w + r * rb + b * fx->bbytes, fx_block(fx, i), (size_t)fx->bbytes);
            for (int j = 0; j < fx->block; j++) wd[r * cols + b * fx->block + j] = fx_ref(fx, i)[j];
        }
    return w;
}

/* ---- reference activation quantization ----------------------------------------------------------- */

static float ref_round_f16(float f) { return bw_f16_to_f32(bw_f32_to_f16(f)); }

/* x quantized and dequantized by llama.cpp's rule for the weight type; step[c]: half an activation step
 * (with the rounding of the scale), what the loose reference allows per element. */
static void ref_quant(enum bw_type t, const float *x, int64_t cols, double *xq, double *step, double *s1)
{
    int n = is_k(t) ? BW_QK_K : BW_QK;
    for (int64_t b = 0; b < cols / n; b++) {
        const float *xb = x + b * n;
        float amax = 0, max = 0;
        for (int j = 0; j < n; j++)
            if (fabsf(xb[j]) > amax) {
                amax = fabsf(xb[j]);
                max = xb[j];
            }
        if (is_k(t)) {
            float iscale = amax ? -127.0f / max : 0.0f;
            double d = amax ? 1.0f / iscale : 0.0;
            for (int j = 0; j < n; j++) {
                xq[b * n + j] = d * nearbyintf(xb[j] * iscale);
                step[b * n + j] = fabs(d) * (0.5 + 0x1p-16);
            }
        } else {
            float d = amax / 127.0f, id = amax ? 127.0f / amax : 0.0f;
            double dr = ref_round_f16(d);
            for (int j = 0; j < n; j++) {
                xq[b * n + j] = dr * nearbyintf(xb[j] * id);
                step[b * n + j] = d * (0.5 + 0x1p-16) + 127 * fabs(dr - d);
            }
            if (t == BW_TYPE_Q5_1) {
                /* Q5_1's minimum meets Q8_1's s = fp16(d * sum q), not sum of the dequantized codes. */
                double sq = 0;
                for (int j = 0; j < n; j++) sq += nearbyintf(xb[j] * id);
                double s = ref_round_f16(d * (float)sq);
                s1[b] = s;
                for (int j = 0; j < n; j++) step[b * n + j] += fabs(s - dr * sq) / n;
            }
        }
    }
}

/* ---- checks -------------------------------------------------------------------------------------- */

static void test_dequant(const struct fixture *fx)
{
    float *out = malloc(sizeof(float) * fx->cols);
    double worst = 0;
    for (uint32_t r = 0; r < fx->rows; r++) {
        for (uint32_t c = 0; c < fx->cols; c++) out[c] = NAN;
        bw_dequant_row(fx->type, fx->q + r * fx->row_bytes, out, fx->cols);
        for (uint32_t c = 0; c < fx->cols; c++) {
            float ref = fx->ref[(size_t)r * fx->cols + c];
            double e = fabs((double)out[c] - ref);
            CHECK(e <= 0x1p-22 * fabs(ref) + 1e-30, "dequant %s row %u [%u] = %.9g, gguf-py %.9g", tname(fx->type), r,
                  c, out[c], ref);
            if (e > worst) worst = e;
        }
    }
    printf("dequant %-6s: %u x %u llama.cpp-quantized values vs gguf-py, max |diff| %.2e\n", tname(fx->type), fx->rows,
           fx->cols, worst);
    free(out);
}

/* Our products of the fixture rows with the fixture's activations against llama.cpp's, on every path. */
static void test_vs_llama_cpp(const struct fixture *fx, bw_pool *pool, const char **paths, int n_paths)
{
    int64_t cols = fx->cols, rows = fx->rows;
    uint8_t *w = xaligned(fx->row_bytes * (size_t)rows);
    memcpy(w, fx->q, fx->row_bytes * (size_t)rows);
    bw_tensor W = {"test", fx->type, cols, rows, w, fx->row_bytes};
    void *scratch = xaligned(bw_matmul_scratch_bytes(fx->type, cols, fx->nx));
    float *y = malloc(sizeof(float) * fx->nx * (size_t)rows);
    double *xq = malloc(sizeof(double) * (size_t)cols), *step = malloc(sizeof(double) * (size_t)cols);
    double *s1 = malloc(sizeof(double) * (size_t)(cols / BW_QK)), worst = 0;
    for (int p = 0; p < n_paths; p++) {
        use_path(paths[p]);
        bw_matmul(pool, &W, fx->x, cols, fx->nx, y, rows, scratch);
        for (uint32_t i = 0; i < fx->nx; i++) {
            ref_quant(fx->type, fx->x + (size_t)i * cols, cols, xq, step, s1);
            for (int64_t r = 0; r < rows; r++) {
                double a = 0;
                for (int64_t b = 0; b < cols / fx->block; b++) {
                    double mx = 0;
                    for (int j = 0; j < fx->block; j++) mx = fmax(mx, fabs(fx->ref[r * cols + b * fx->block + j]));
                    for (int j = 0; j < fx->block; j++)
                        a += (fabs(fx->ref[r * cols + b * fx->block + j]) + mx) * fabs(xq[b * fx->block + j]);
                }
                double bound = 2 * 0x1p-20 * a + 1e-30, ours = y[i * rows + r], theirs = fx->y[i * rows + r];
                CHECK(fabs(ours - theirs) <= bound, "%s %s: x%u . row %lld = %.9g, llama.cpp %.9g (bound %.3g)",
                      tname(fx->type), paths[p], i, (long long)r, ours, theirs, bound);
                worst = fmax(worst, fabs(ours - theirs) / bound);
            }
        }
    }
    printf("vs llama.cpp %-6s: %u x %u products on %d paths, max |ours - llama.cpp| / bound %.3f\n", tname(fx->type),
           fx->nx, fx->rows, n_paths, worst);
    free(w);
    free(scratch);
    free(y);
    free(xq);
    free(step);
    free(s1);
}

struct stats {
    double tight, loose, paths; /* max error / bound */
    long n;
};

static void check_product(const struct fixture *fx, int64_t cols, int64_t rows, int64_t n_tok, bw_pool **pools,
                          const char **paths, int n_paths, struct stats *st)
{
    double *wd = malloc(sizeof(double) * (size_t)(rows * cols));
    uint8_t *buf;
    const uint8_t *w = assemble(fx, rows, cols, wd, &buf);
    bw_tensor W = {"test", fx->type, cols, rows, w, bw_type_row_bytes(fx->type, (uint64_t)cols)};
    int64_t xs = cols + 5, ys = rows + 3;
    float *x = malloc(sizeof(float) * (size_t)(n_tok * xs));
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t c = 0; c < cols; c++) {
            /* Blocks of very different magnitude, as activations have, and an occasional outlier. */
            double s = (c / 32) % 5 == 0 ? 8.0 : (c / 32) % 3 == 0 ? 0.05 : 1.0;
            x[t * xs + c] = rnd_range(-s, s) * (rnd_u64() % 97 == 0 ? 20.0f : 1.0f);
        }
    double *xq = malloc(sizeof(double) * (size_t)cols), *step = malloc(sizeof(double) * (size_t)cols);
    double *s1 = malloc(sizeof(double) * (size_t)(cols / BW_QK));
    double *rt = malloc(sizeof(double) * (size_t)(n_tok * rows)), *bt = malloc(sizeof(double) * (size_t)(n_tok * rows));
    double *rl = malloc(sizeof(double) * (size_t)(n_tok * rows)), *bl = malloc(sizeof(double) * (size_t)(n_tok * rows));
    for (int64_t t = 0; t < n_tok; t++) {
        ref_quant(fx->type, x + t * xs, cols, xq, step, s1);
        for (int64_t r = 0; r < rows; r++) {
            const double *wr = wd + r * cols;
            double yt = 0, yl = 0, at = 0, al = 0;
            for (int64_t b = 0; b < cols / fx->block; b++) {
                double mx = 0, m = 0;
                for (int j = 0; j < fx->block; j++) mx = fmax(mx, fabs(wr[b * fx->block + j]));
                if (fx->type == BW_TYPE_Q5_1) { /* the block's minimum meets Q8_1's s */
                    uint16_t h;
                    memcpy(&h, w + r * W.row_bytes + b * fx->bbytes + 2, 2);
                    m = bw_f16_to_f32(h);
                    yt += m * s1[b];
                    at += fabs(m * s1[b]);
                }
                for (int j = 0; j < fx->block; j++) {
                    int64_t c = b * fx->block + j;
                    yt += (wr[c] - m) * xq[c];
                    yl += wr[c] * x[t * xs + c];
                    at += (fabs(wr[c]) + mx) * fabs(xq[c]);
                    al += fabs(wr[c]) * step[c];
                }
            }
            rt[t * rows + r] = yt;
            bt[t * rows + r] = at * 0x1p-20 + 1e-30;
            rl[t * rows + r] = yl;
            bl[t * rows + r] = al + at * 0x1p-20 + 1e-30;
        }
    }
    size_t sb = bw_matmul_scratch_bytes(fx->type, cols, n_tok);
    void *scratch = xaligned(sb);
    float *y = malloc(sizeof(float) * (size_t)(n_tok * ys)), *y0 = malloc(sizeof(float) * (size_t)(n_tok * ys));
    float *yp = malloc(sizeof(float) * (size_t)(n_tok * ys));
    for (int p = 0; p < n_paths; p++) {
        use_path(paths[p]);
        for (int th = 0; th < 2; th++) {
            for (int64_t i = 0; i < n_tok * ys; i++) y[i] = NAN;
            memset(scratch, 0xa5, sb);
            bw_matmul(pools[th], &W, x, xs, n_tok, y, ys, scratch);
            for (int64_t t = 0; t < n_tok; t++) {
                for (int64_t r = 0; r < rows; r++) {
                    float v = y[t * ys + r];
                    double et = fabs(v - rt[t * rows + r]), el = fabs(v - rl[t * rows + r]);
                    CHECK(et <= bt[t * rows + r],
                          "%s %s %dT %lldx%lld ntok %lld y[%lld][%lld] = %.9g, tight ref %.9g (bound %.3g)",
                          tname(fx->type), paths[p], th + 1, (long long)rows, (long long)cols, (long long)n_tok,
                          (long long)t, (long long)r, v, rt[t * rows + r], bt[t * rows + r]);
                    CHECK(el <= bl[t * rows + r], "%s %s y[%lld][%lld] = %.9g, float-x ref %.9g (bound %.3g)",
                          tname(fx->type), paths[p], (long long)t, (long long)r, v, rl[t * rows + r], bl[t * rows + r]);
                    st->tight = fmax(st->tight, et / bt[t * rows + r]);
                    st->loose = fmax(st->loose, el / bl[t * rows + r]);
                    if (th == 1)
                        CHECK(memcmp(&v, &yp[t * ys + r], 4) == 0, "%s %s: 2 threads differ from 1 at [%lld][%lld]",
                              tname(fx->type), paths[p], (long long)t, (long long)r);
                    if (p > 0 && th == 0) {
                        double ep = fabs(v - y0[t * ys + r]);
                        if (is_k(fx->type))
                            CHECK(memcmp(&v, &y0[t * ys + r], 4) == 0,
                                  "%s: %s and %s differ at [%lld][%lld]: %.9g vs %.9g", tname(fx->type), paths[0],
                                  paths[p], (long long)t, (long long)r, v, y0[t * ys + r]);
                        else
                            CHECK(ep <= 2 * bt[t * rows + r], "%s: paths disagree at [%lld][%lld]", tname(fx->type),
                                  (long long)t, (long long)r);
                        st->paths = fmax(st->paths, ep / (2 * bt[t * rows + r]));
                    }
                }
                for (int64_t r = rows; r < ys; r++)
                    CHECK(isnan(y[t * ys + r]), "%s %s wrote past its output row", tname(fx->type), paths[p]);
            }
            st->n += rows * n_tok;
            if (th == 0) memcpy(yp, y, sizeof(float) * (size_t)(n_tok * ys));
            if (p == 0 && th == 0) memcpy(y0, y, sizeof(float) * (size_t)(n_tok * ys));
        }
    }
    free(buf);
    free(wd);
    free(x);
    free(xq);
    free(step);
    free(s1);
    free(rt);
    free(bt);
    free(rl);
    free(bl);
    free(scratch);
    free(y);
    free(y0);
    free(yp);
}

#define INV_MAX_TOK 130

static int check_invariance(const struct fixture *fx, int64_t cols, int64_t rows, bw_pool **pools, const char *path,
                            long *n_compared)
{
    static const int64_t sizes[] = {1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 63, 64, 65, INV_MAX_TOK};
    double *wd = malloc(sizeof(double) * (size_t)(rows * cols));
    uint8_t *buf;
    const uint8_t *w = assemble(fx, rows, cols, wd, &buf);
    bw_tensor W = {"test", fx->type, cols, rows, w, bw_type_row_bytes(fx->type, (uint64_t)cols)};
    int64_t xs = cols + 1, ys = rows + 2;
    float *x = malloc(sizeof(float) * (size_t)(INV_MAX_TOK * xs)),
          *xb = malloc(sizeof(float) * (size_t)(INV_MAX_TOK * xs));
    for (int64_t i = 0; i < INV_MAX_TOK * xs; i++) x[i] = rnd_range(-2, 2);
    size_t sb = bw_matmul_scratch_bytes(fx->type, cols, INV_MAX_TOK);
    void *scratch = xaligned(sb);
    float *solo = malloc(sizeof(float) * (size_t)(INV_MAX_TOK * rows)),
          *y = malloc(sizeof(float) * (size_t)(INV_MAX_TOK * ys));
    int64_t order[INV_MAX_TOK];
    int bad = 0;
    use_path(path);
    for (int64_t t = 0; t < INV_MAX_TOK; t++) {
        bw_matmul(pools[0], &W, x + t * xs, xs, 1, y, ys, scratch);
        memcpy(solo + t * rows, y, sizeof(float) * (size_t)rows);
    }
    for (int th = 0; th < 2; th++)
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            int64_t n = sizes[si];
            for (int64_t i = 0; i < INV_MAX_TOK; i++) order[i] = i;
            for (int64_t i = 0; i < n; i++) {
                int64_t j = i + (int64_t)(rnd_u64() % (uint64_t)(INV_MAX_TOK - i)), k = order[i];
                order[i] = order[j];
                order[j] = k;
            }
            for (int64_t i = 0; i < n; i++) memcpy(xb + i * xs, x + order[i] * xs, sizeof(float) * (size_t)cols);
            for (int64_t i = 0; i < n * ys; i++) y[i] = NAN;
            bw_matmul(pools[th], &W, xb, xs, n, y, ys, scratch);
            int64_t differ = 0;
            for (int64_t i = 0; i < n; i++)
                for (int64_t r = 0; r < rows; r++) differ += memcmp(&y[i * ys + r], &solo[order[i] * rows + r], 4) != 0;
            *n_compared += n * rows;
            bad += differ != 0;
            CHECK(differ == 0, "%s %s %dT %lldx%lld: a batch of %lld differs from one-token calls in %lld outputs",
                  tname(fx->type), path, th + 1, (long long)rows, (long long)cols, (long long)n, (long long)differ);
        }
    free(wd);
    free(buf);
    free(x);
    free(xb);
    free(scratch);
    free(solo);
    free(y);
    return bad;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "tests/unit/data/kquant_rows.bin";
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20);
    g_rng = seed;
    printf("test_kquant seed %llu\n", (unsigned long long)seed);
    struct fixture fx[16];
    int n_fx = load_fixture(path, fx, 16);

    unsetenv("BW_KERNELS");
    const char *best = bw_kernels_init(0);
    const char *paths[3] = {best, "avx2", "portable"};
    int n_paths = strcmp(best, "avx512vnni") == 0 ? 3 : strcmp(best, "avx2") == 0 ? 2 : 1;
    if (n_paths == 2) paths[1] = "portable";
    printf("simd paths checked:");
    for (int p = 0; p < n_paths; p++) printf(" %s", paths[p]);
    printf("\n");
    bw_pool *pools[2] = {bw_pool_create(1), bw_pool_create(2)};

    for (int k = 0; k < n_fx; k++) test_dequant(&fx[k]);
    for (int k = 0; k < n_fx; k++) test_vs_llama_cpp(&fx[k], pools[0], paths, n_paths);
    for (int k = 0; k < n_fx; k++) {
        /* Widths of 1, 2, 3 and 6 super-blocks (SmolLM2's n_ff is 1536); row counts around the 4-row tiles. */
        static const int64_t shapes[][3] = {{256, 5, 1},    {512, 8, 3},  {768, 37, 17}, {1536, 33, 1},
                                            {1536, 12, 64}, {256, 64, 5}, {1536, 70, 2}};
        struct stats st = {0};
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            check_product(&fx[k], shapes[s][0], shapes[s][1], shapes[s][2], pools, paths, n_paths, &st);
        printf("matmul %-6s: %ld outputs; max err/bound: tight %.3f, float-x %.3f, path vs path %.3f%s\n",
               tname(fx[k].type), st.n, st.tight, st.loose, st.paths,
               is_k(fx[k].type) ? " (bit-identical required)" : "");
    }
    for (int p = 0; p < n_paths; p++) {
        long compared = 0;
        int bad = 0;
        for (int k = 0; k < n_fx; k++) {
            bad += check_invariance(&fx[k], 1536, 70, pools, paths[p], &compared);
            bad += check_invariance(&fx[k], 512, 13, pools, paths[p], &compared);
        }
        printf("batch invariance (%s): %ld batched outputs compared bit for bit with one-token calls; differing calls "
               "%d\n",
               paths[p], compared, bad);
    }
    bw_pool_destroy(pools[0]);
    bw_pool_destroy(pools[1]);
    for (int k = 0; k < n_fx; k++) free((void *)fx[k].ref);
    free(g_file);
    if (check_failed) {
        printf("test_kquant: %d FAILED checks (seed %llu)\n", check_failed, (unsigned long long)seed);
        return 1;
    }
    printf("test_kquant: all checks passed\n");
    return 0;
}
