/* Guards the CPU kernels and the thread pool: bw_matmul for every weight type against double-precision
 * references on both SIMD paths and thread counts, bw_matmul's batch invariance (a token's outputs are
 * the same bits whatever batch it is in), dequantization, the vector ops, and the pool's fork-join
 * coverage. Inputs are random and fresh each run; the seed is printed (pass one as argv[1] to replay a
 * failure).
 *
 * References for a product y[t][r] = sum_c W[r][c] x[t][c]:
 *  - tight: the weights dequantized exactly and the activations quantized by this file's own copy of
 *    the documented rule (d = fp16(max|x|/127), q = round_half_even(x * 127/max|x|), s = fp16(d*sum q)),
 *    summed in double. Allowed error (n + 16) * 2^-23 * A, with A the sum of |terms| and n the number of
 *    float additions in a row (blocks for quantized types, columns for float types): float accumulation
 *    error, nothing else.
 *  - loose: the plain product of the dequantized weights with the unquantized x, in double. Allowed
 *    error: sum_c (|w_c| + |m_b|) E_b + sum_b |m_b| (32 E_b + 2^-10 |s_b|) + tight, where
 *    E_b = d_b / 2 + 127 |d_b - fp16(d_b)| bounds how far one quantized activation is from x. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/cpu/kernels.h"
#include "engine/cpu/pool.h"
#include "tests/kernel_path.h"

/* A broken kernel fails every element of every shape: report the first few. */
#define CHECK_MAX_REPORTS 29
#include "check.h"
#include "rand.h"

/* ---- reference conversions (double arithmetic, independent of the kernels' bit tricks) ------------ */

static double ref_h2d(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

/* Round to nearest even; finite |v| < 65504 only. */
static uint16_t ref_d2h(double v)
{
    uint16_t sign = signbit(v) ? 0x8000 : 0;
    double a = fabs(v);
    if (a < 0x1p-14) return sign | (uint16_t)nearbyint(a * 0x1p24);
    int e;
    frexp(a, &e);
    int E = e - 1;
    double q = nearbyint(a / ldexp(1.0, E - 10));
    if (q == 2048) {
        q = 1024;
        E++;
    }
    return sign | (uint16_t)((E + 15) << 10) | (uint16_t)(q - 1024);
}

static float ref_round_f16(float f) { return (float)ref_h2d(ref_d2h(f)); }

static uint16_t ref_f2bf(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static double ref_bf2d(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void put_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

static uint16_t get_u16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* ---- weights ------------------------------------------------------------------------------------- */

static const enum bw_type k_types[] = {BW_TYPE_F32,  BW_TYPE_F16,  BW_TYPE_BF16,
                                       BW_TYPE_Q4_0, BW_TYPE_Q4_1, BW_TYPE_Q8_0};

static const char *type_name(enum bw_type t)
{
    switch (t) {
    case BW_TYPE_F32: return "F32";
    case BW_TYPE_F16: return "F16";
    case BW_TYPE_BF16: return "BF16";
    case BW_TYPE_Q4_0: return "Q4_0";
    case BW_TYPE_Q4_1: return "Q4_1";
    case BW_TYPE_Q8_0: return "Q8_0";
    case BW_TYPE_Q8_1: return "Q8_1";
    default: break; /* the other types are checked by test_kquant.c */
    }
    return "?";
}

static int is_quant(enum bw_type t) { return t == BW_TYPE_Q4_0 || t == BW_TYPE_Q4_1 || t == BW_TYPE_Q8_0; }

static size_t row_bytes(enum bw_type t, int64_t cols)
{
    switch (t) {
    case BW_TYPE_F32: return (size_t)cols * 4;
    case BW_TYPE_F16:
    case BW_TYPE_BF16: return (size_t)cols * 2;
    case BW_TYPE_Q4_0: return (size_t)(cols / 32) * 18;
    case BW_TYPE_Q4_1: return (size_t)(cols / 32) * 20;
    case BW_TYPE_Q8_0: return (size_t)(cols / 32) * 34;
    case BW_TYPE_Q8_1: return (size_t)(cols / 32) * 36;
    default: break;
    }
    return 0;
}

/* A random scale as the quantizers of real files produce them (either sign for d of Q4_0). */
static uint16_t rnd_scale(int allow_negative)
{
    float d = rnd_range(1e-3, 3e-2);
    if (allow_negative && (rnd_u64() & 1)) d = -d;
    return ref_d2h(d);
}

/* Random weight row with its exact value per element (wd) and, for Q4_1, the block minimum (md). */
static void make_row(enum bw_type t, int64_t cols, uint8_t *row, double *wd, double *md)
{
    for (int64_t b = 0; b < cols / 32; b++) md[b] = 0.0;
    switch (t) {
    case BW_TYPE_F32:
        for (int64_t i = 0; i < cols; i++) {
            float f = rnd_range(-1, 1);
            memcpy(row + 4 * i, &f, 4);
            wd[i] = f;
        }
        return;
    case BW_TYPE_F16:
        for (int64_t i = 0; i < cols; i++) {
            uint16_t h = ref_d2h(rnd_range(-1, 1));
            put_u16(row + 2 * i, h);
            wd[i] = ref_h2d(h);
        }
        return;
    case BW_TYPE_BF16:
        for (int64_t i = 0; i < cols; i++) {
            uint16_t h = ref_f2bf(rnd_range(-1, 1));
            put_u16(row + 2 * i, h);
            wd[i] = ref_bf2d(h);
        }
        return;
    case BW_TYPE_Q4_0:
    case BW_TYPE_Q4_1: {
        int has_m = t == BW_TYPE_Q4_1;
        size_t bb = has_m ? 20 : 18;
        for (int64_t b = 0; b < cols / 32; b++) {
            uint8_t *blk = row + b * (int64_t)bb;
            uint16_t d = rnd_scale(!has_m), m = ref_d2h(rnd_range(-0.2, 0.2));
            put_u16(blk, d);
            if (has_m) put_u16(blk + 2, m);
            uint8_t *qs = blk + (has_m ? 4 : 2);
            double dd = ref_h2d(d), mm = has_m ? ref_h2d(m) : 0.0;
            for (int j = 0; j < 16; j++) {
                qs[j] = (uint8_t)rnd_u64();
                int lo = qs[j] & 15, hi = qs[j] >> 4;
                wd[b * 32 + j] = has_m ? dd * lo + mm : dd * (lo - 8);
                wd[b * 32 + j + 16] = has_m ? dd * hi + mm : dd * (hi - 8);
            }
            md[b] = mm;
        }
        return;
    }
    case BW_TYPE_Q8_0:
        for (int64_t b = 0; b < cols / 32; b++) {
            uint8_t *blk = row + b * 34;
            uint16_t d = rnd_scale(0);
            put_u16(blk, d);
            for (int j = 0; j < 32; j++) {
                int8_t q = (int8_t)rnd_u64(); /* -128 included: the sign trick must survive it */
                blk[2 + j] = (uint8_t)q;
                wd[b * 32 + j] = ref_h2d(d) * q;
            }
        }
        return;
    default: /* Q8_1 is never a weight; the other types are checked by test_kquant.c */ return;
    }
}

/* ---- reference activation quantization (the documented rule) ------------------------------------ */

struct ref_act {
    int8_t q[32];
    double d;  /* fp16-rounded scale */
    double du; /* unrounded scale, float */
    double s;  /* fp16(du * sum q) */
};

static void ref_quant_block(const float *x, struct ref_act *a)
{
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f;
    float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int sum = 0;
    for (int j = 0; j < 32; j++) {
        float v = x[j] * id;
        a->q[j] = (int8_t)nearbyintf(v);
        sum += a->q[j];
    }
    a->du = d;
    a->d = ref_round_f16(d);
    a->s = ref_round_f16(d * (float)sum);
}

/* ---- matmul checks --------------------------------------------------------------------------------- */

struct err_stats {
    double tight_ratio, loose_ratio, paths_ratio; /* max error / bound seen */
    double tight_abs, loose_abs, paths_abs;       /* max absolute error seen */
    long n_outputs;
};

static void note(double *ratio, double *absmax, double err, double bound)
{
    if (err / bound > *ratio) *ratio = err / bound;
    if (err > *absmax) *absmax = err;
}

static void check_matmul_shape(enum bw_type type, int64_t cols, int64_t rows, int64_t n_tok, bw_pool **pools,
                               const char **paths, int n_paths, struct err_stats *st)
{
    size_t rb = row_bytes(type, cols);
    uint8_t *wbuf = xaligned(rb * (size_t)rows + 1);
    /* An odd base address for the matrix: mapped files only guarantee 32-byte tensor alignment, and
     * unaligned loads must be safe anyway. */
    uint8_t *wdata = is_quant(type) ? wbuf + 1 : wbuf;
    double *wd = malloc(sizeof(double) * (size_t)(rows * cols));
    double *md = malloc(sizeof(double) * (size_t)(rows * (cols / 32 + 1)));
    for (int64_t r = 0; r < rows; r++) make_row(type, cols, wdata + r * rb, wd + r * cols, md + r * (cols / 32 + 1));
    bw_tensor W = {"test", type, cols, rows, wdata, rb};

    int64_t xs = cols + 3, ys = rows + 5;
    float *x = malloc(sizeof(float) * (size_t)(n_tok * xs));
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t c = 0; c < cols; c++) {
            /* Blocks of very different magnitude, as activations have. */
            double scale = (c / 32) % 5 == 0 ? 8.0 : (c / 32) % 3 == 0 ? 0.05 : 1.0;
            x[t * xs + c] = rnd_range(-scale, scale);
        }

    int64_t nb = cols / 32;
    struct ref_act *qa = malloc(sizeof(struct ref_act) * (size_t)(n_tok * (nb ? nb : 1)));
    if (is_quant(type))
        for (int64_t t = 0; t < n_tok; t++)
            for (int64_t b = 0; b < nb; b++) ref_quant_block(x + t * xs + b * 32, &qa[t * nb + b]);

    double *ref_t = malloc(sizeof(double) * (size_t)(n_tok * rows)),
           *bnd_t = malloc(sizeof(double) * (size_t)(n_tok * rows));
    double *ref_l = malloc(sizeof(double) * (size_t)(n_tok * rows)),
           *bnd_l = malloc(sizeof(double) * (size_t)(n_tok * rows));
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t r = 0; r < rows; r++) {
            const double *w = wd + r * cols, *m = md + r * (cols / 32 + 1);
            const float *xr = x + t * xs;
            double yt = 0, at = 0, yl = 0, al = 0;
            for (int64_t c = 0; c < cols; c++) yl += w[c] * xr[c];
            if (!is_quant(type)) {
                for (int64_t c = 0; c < cols; c++) at += fabs(w[c] * xr[c]);
                yt = yl;
                at *= (double)(cols + 16) * 0x1p-23;
            } else {
                const uint8_t *row = wdata + r * rb;
                for (int64_t b = 0; b < nb; b++) {
                    const struct ref_act *a = &qa[t * nb + b];
                    double E = a->du / 2 * (1 + 0x1p-20) + 127 * fabs(a->du - a->d);
                    for (int j = 0; j < 32; j++) {
                        double wq = w[b * 32 + j] - m[b]; /* d * q, without the Q4_1 minimum */
                        yt += wq * a->d * a->q[j];
                        /* Q4_0's -8 is folded into a per-block term: count both halves in A. */
                        double extra = type == BW_TYPE_Q4_0 ? 8 * fabs(ref_h2d(get_u16(row + b * 18))) : 0;
                        at += (fabs(wq) + extra) * a->d * abs(a->q[j]);
                        al += (fabs(w[b * 32 + j]) + fabs(m[b])) * E;
                    }
                    if (type == BW_TYPE_Q4_1) {
                        yt += m[b] * a->s;
                        at += fabs(m[b] * a->s);
                        al += fabs(m[b]) * (32 * E + 0x1p-10 * fabs(a->s));
                    }
                }
                at *= (double)(nb + 16) * 0x1p-23;
            }
            ref_t[t * rows + r] = yt;
            bnd_t[t * rows + r] = at + 1e-30;
            ref_l[t * rows + r] = yl;
            bnd_l[t * rows + r] = al + at + 1e-30;
        }

    size_t sbytes = bw_matmul_scratch_bytes(type, cols, n_tok);
    void *scratch = sbytes ? xaligned(sbytes) : NULL;
    float *y = malloc(sizeof(float) * (size_t)(n_tok * ys));
    float *y_first = malloc(sizeof(float) * (size_t)(n_tok * ys)); /* first path, 1 thread */
    float *y_path0 = malloc(sizeof(float) * (size_t)(n_tok * ys)); /* current path, 1 thread */

    for (int p = 0; p < n_paths; p++) {
        use_path(paths[p]);
        for (int th = 0; th < 2; th++) {
            for (int64_t i = 0; i < n_tok * ys; i++) y[i] = NAN;
            if (scratch) memset(scratch, 0xa5, sbytes);
            bw_matmul(pools[th], &W, x, xs, n_tok, y, ys, scratch);
            for (int64_t t = 0; t < n_tok; t++) {
                for (int64_t r = 0; r < rows; r++) {
                    float v = y[t * ys + r];
                    double et = fabs(v - ref_t[t * rows + r]), el = fabs(v - ref_l[t * rows + r]);
                    CHECK(et <= bnd_t[t * rows + r],
                          "%s %s %dth cols=%lld rows=%lld ntok=%lld y[%lld][%lld]=%.9g tight ref %.9g (bound %.3g)",
                          type_name(type), paths[p], th + 1, (long long)cols, (long long)rows, (long long)n_tok,
                          (long long)t, (long long)r, v, ref_t[t * rows + r], bnd_t[t * rows + r]);
                    CHECK(el <= bnd_l[t * rows + r], "%s %s cols=%lld y[%lld][%lld]=%.9g float ref %.9g (bound %.3g)",
                          type_name(type), paths[p], (long long)cols, (long long)t, (long long)r, v,
                          ref_l[t * rows + r], bnd_l[t * rows + r]);
                    if (et == et) note(&st->tight_ratio, &st->tight_abs, et, bnd_t[t * rows + r]);
                    if (el == el) note(&st->loose_ratio, &st->loose_abs, el, bnd_l[t * rows + r]);
                    if (p > 0 && th == 0) {
                        double ep = fabs(v - y_first[t * ys + r]);
                        CHECK(ep <= 2 * bnd_t[t * rows + r], "%s paths disagree at [%lld][%lld]: %.9g vs %.9g",
                              type_name(type), (long long)t, (long long)r, v, y_first[t * ys + r]);
                        note(&st->paths_ratio, &st->paths_abs, ep, 2 * bnd_t[t * rows + r]);
                    }
                    if (th == 1)
                        CHECK(memcmp(&v, &y_path0[t * ys + r], 4) == 0,
                              "%s %s: 2 threads differ from 1 at [%lld][%lld]", type_name(type), paths[p], (long long)t,
                              (long long)r);
                }
                for (int64_t r = rows; r < ys; r++)
                    CHECK(isnan(y[t * ys + r]), "%s %s wrote outside its output row (col %lld)", type_name(type),
                          paths[p], (long long)r);
            }
            st->n_outputs += rows * n_tok;
            if (th == 0) memcpy(y_path0, y, sizeof(float) * (size_t)(n_tok * ys));
            if (p == 0 && th == 0) memcpy(y_first, y, sizeof(float) * (size_t)(n_tok * ys));
        }
    }
    free(wbuf);
    free(wd);
    free(md);
    free(x);
    free(qa);
    free(ref_t);
    free(bnd_t);
    free(ref_l);
    free(bnd_l);
    free(scratch);
    free(y);
    free(y_first);
    free(y_path0);
}

static void test_matmul(bw_pool **pools, const char **paths, int n_paths)
{
    static const int64_t shapes[][3] = {
        /* cols, rows, n_tok */
        {32, 7, 1},    {32, 8, 3},    {576, 64, 1},   {576, 37, 17}, {576, 130, 64},
        {1536, 40, 1}, {1536, 33, 3}, {1536, 22, 64}, {64, 9, 5},    {576, 192, 1},
    };
    for (size_t ti = 0; ti < sizeof(k_types) / sizeof(k_types[0]); ti++) {
        enum bw_type type = k_types[ti];
        struct err_stats st = {0};
        for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++)
            check_matmul_shape(type, shapes[si][0], shapes[si][1], shapes[si][2], pools, paths, n_paths, &st);
        if (!is_quant(type)) /* float rows whose length is not a multiple of the vector width */
            check_matmul_shape(type, 37, 11, 6, pools, paths, n_paths, &st);
        printf("matmul %-4s: %ld outputs; max err/bound: tight %.3f (abs %.2e), float-product %.3f (abs %.2e),"
               " path vs path %.3f (abs %.2e)\n",
               type_name(type), st.n_outputs, st.tight_ratio, st.tight_abs, st.loose_ratio, st.loose_abs,
               st.paths_ratio, st.paths_abs);
    }
}

/* ---- batch invariance ----------------------------------------------------------------------------- */

/* A token's outputs must not depend on how many tokens share the call or where it sits in the batch:
 * continuous batching promises each job the output it would get alone, and resuming a job re-prefills
 * its tokens in one batch where they were first decoded one at a time, and must rebuild the same KV
 * cache. So for one path and any thread count, bw_matmul over a batch is compared bit for bit against
 * one n_tok = 1 call per token, for batch sizes around every tile and token-block edge, with the tokens
 * in order and in a shuffled order. */
#define INV_MAX_TOK 130

/* Returns how many of its batched calls differed from the one-token calls. */
static int check_batch_invariance(enum bw_type type, int64_t cols, int64_t rows, bw_pool **pools, const char *path,
                                  long *n_compared)
{
    static const int64_t batch_sizes[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 63, 64, 65, INV_MAX_TOK};
    size_t rb = row_bytes(type, cols);
    uint8_t *wbuf = xaligned(rb * (size_t)rows + 1);
    uint8_t *wdata = is_quant(type) ? wbuf + 1 : wbuf; /* unaligned, as in check_matmul_shape */
    double *wd = malloc(sizeof(double) * (size_t)cols), *md = malloc(sizeof(double) * (size_t)(cols / 32 + 1));
    for (int64_t r = 0; r < rows; r++) make_row(type, cols, wdata + r * rb, wd, md);
    bw_tensor W = {"test", type, cols, rows, wdata, rb};

    int64_t xs = cols + 1, ys = rows + 3;
    float *x = malloc(sizeof(float) * (size_t)(INV_MAX_TOK * xs));
    float *xb = malloc(sizeof(float) * (size_t)(INV_MAX_TOK * xs));
    for (int64_t t = 0; t < INV_MAX_TOK; t++)
        for (int64_t c = 0; c < cols; c++) {
            double scale = (c / 32) % 5 == 0 ? 8.0 : (c / 32) % 3 == 0 ? 0.05 : 1.0;
            x[t * xs + c] = rnd_range(-scale, scale);
        }
    size_t sbytes = bw_matmul_scratch_bytes(type, cols, INV_MAX_TOK);
    void *scratch = sbytes ? xaligned(sbytes) : NULL;
    float *solo = malloc(sizeof(float) * (size_t)(INV_MAX_TOK * rows));
    float *y = malloc(sizeof(float) * (size_t)(INV_MAX_TOK * ys));
    int64_t order[INV_MAX_TOK];
    int bad_calls = 0;

    use_path(path);
    for (int64_t t = 0; t < INV_MAX_TOK; t++) {
        for (int64_t r = 0; r < ys; r++) y[r] = NAN;
        bw_matmul(pools[0], &W, x + t * xs, xs, 1, y, ys, scratch);
        memcpy(solo + t * rows, y, sizeof(float) * (size_t)rows);
    }
    for (int th = 0; th < 2; th++)
        for (size_t bi = 0; bi < sizeof(batch_sizes) / sizeof(batch_sizes[0]); bi++)
            for (int shuffled = 0; shuffled < 2; shuffled++) {
                int64_t n = batch_sizes[bi];
                /* Shuffled: n distinct tokens drawn from all of them, so each lands at a new position. */
                for (int64_t i = 0; i < INV_MAX_TOK; i++) order[i] = i;
                if (shuffled)
                    for (int64_t i = 0; i < n; i++) {
                        int64_t j = i + (int64_t)(rnd_u64() % (uint64_t)(INV_MAX_TOK - i)), k = order[i];
                        order[i] = order[j];
                        order[j] = k;
                    }
                for (int64_t i = 0; i < n; i++) memcpy(xb + i * xs, x + order[i] * xs, sizeof(float) * (size_t)cols);
                for (int64_t i = 0; i < n * ys; i++) y[i] = NAN;
                if (scratch) memset(scratch, 0xa5, sbytes);
                bw_matmul(pools[th], &W, xb, xs, n, y, ys, scratch);
                int64_t differ = 0, first = -1;
                for (int64_t i = 0; i < n; i++)
                    for (int64_t r = 0; r < rows; r++)
                        if (memcmp(&y[i * ys + r], &solo[order[i] * rows + r], sizeof(float)) != 0) {
                            if (first < 0) first = i * rows + r;
                            differ++;
                        }
                *n_compared += n * rows;
                bad_calls += differ != 0;
                CHECK(differ == 0,
                      "%s %s %dT cols=%lld rows=%lld: batch of %lld (%s) differs from one-token calls in %lld "
                      "of %lld outputs, first at batch position %lld row %lld: %.9g vs %.9g",
                      type_name(type), path, th + 1, (long long)cols, (long long)rows, (long long)n,
                      shuffled ? "shuffled" : "in order", (long long)differ, (long long)(n * rows),
                      (long long)(first < 0 ? 0 : first / rows), (long long)(first < 0 ? 0 : first % rows),
                      first < 0 ? 0.0 : y[first / rows * ys + first % rows],
                      first < 0 ? 0.0 : solo[order[first / rows] * rows + first % rows]);
            }
    free(wbuf);
    free(wd);
    free(md);
    free(x);
    free(xb);
    free(scratch);
    free(solo);
    free(y);
    return bad_calls;
}

static void test_batch_invariance(bw_pool **pools, const char **paths, int n_paths)
{
    /* Row counts that leave every remainder modulo the 2- and 4-row tiles, and enough rows that two
     * threads claim several chunks; cols = 37 leaves a tail past the float kernels' vector width. */
    static const int64_t shapes[][2] = {{576, 70}, {1536, 13}, {64, 7}, {32, 4}};
    for (int p = 0; p < n_paths; p++) {
        long compared = 0;
        char per_type[256];
        size_t len = 0;
        for (size_t ti = 0; ti < sizeof(k_types) / sizeof(k_types[0]); ti++) {
            int bad = 0;
            for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++)
                bad += check_batch_invariance(k_types[ti], shapes[si][0], shapes[si][1], pools, paths[p], &compared);
            if (!is_quant(k_types[ti])) bad += check_batch_invariance(k_types[ti], 37, 11, pools, paths[p], &compared);
            len += (size_t)snprintf(per_type + len, sizeof(per_type) - len, " %s %d", type_name(k_types[ti]), bad);
        }
        printf("batch invariance (%s): %ld outputs of batched calls compared bit for bit with one-token calls;"
               " batched calls that differ:%s\n",
               paths[p], compared, per_type);
    }
}

/* ---- dequantization ------------------------------------------------------------------------------- */

/* Quantizes a float row the way model files are made (scale rounded to fp16 first, codes from it). */
static void quantize_row(enum bw_type t, const float *x, int64_t cols, uint8_t *row, double *bound)
{
    for (int64_t b = 0; b < cols / 32; b++) {
        const float *xb = x + b * 32;
        float lo = xb[0], hi = xb[0], amax = 0;
        for (int j = 0; j < 32; j++) {
            lo = fminf(lo, xb[j]);
            hi = fmaxf(hi, xb[j]);
            amax = fmaxf(amax, fabsf(xb[j]));
        }
        double d, m = 0;
        uint8_t *blk;
        if (t == BW_TYPE_Q8_0) {
            blk = row + b * 34;
            uint16_t h = ref_d2h(amax / 127.0);
            put_u16(blk, h);
            d = ref_h2d(h);
            for (int j = 0; j < 32; j++) {
                double q = d ? nearbyint(xb[j] / d) : 0;
                blk[2 + j] = (uint8_t)(int8_t)fmax(-127, fmin(127, q));
            }
        } else if (t == BW_TYPE_Q4_0) {
            blk = row + b * 18;
            uint16_t h = ref_d2h(amax / 7.0);
            put_u16(blk, h);
            d = ref_h2d(h);
            for (int j = 0; j < 16; j++) {
                int q0 = (int)fmax(0, fmin(15, (d ? nearbyint(xb[j] / d) : 0) + 8));
                int q1 = (int)fmax(0, fmin(15, (d ? nearbyint(xb[j + 16] / d) : 0) + 8));
                blk[2 + j] = (uint8_t)(q0 | q1 << 4);
            }
        } else {
            blk = row + b * 20;
            uint16_t hd = ref_d2h((hi - lo) / 15.0), hm = ref_d2h(lo);
            put_u16(blk, hd);
            put_u16(blk + 2, hm);
            d = ref_h2d(hd);
            m = ref_h2d(hm);
            for (int j = 0; j < 16; j++) {
                int q0 = (int)fmax(0, fmin(15, d ? nearbyint((xb[j] - m) / d) : 0));
                int q1 = (int)fmax(0, fmin(15, d ? nearbyint((xb[j + 16] - m) / d) : 0));
                blk[4 + j] = (uint8_t)(q0 | q1 << 4);
            }
        }
        /* Half a step, plus what rounding the scale and minimum to fp16 moved the grid by. */
        for (int j = 0; j < 32; j++) bound[b * 32 + j] = 0.5 * fabs(d) + 0x1p-9 * (fabs(xb[j]) + fabs(m)) + 1e-7;
    }
}

static void test_dequant(void)
{
    const int64_t cols = 1536;
    float *x = malloc(sizeof(float) * cols), *out = malloc(sizeof(float) * cols);
    uint8_t *row = malloc(row_bytes(BW_TYPE_F32, cols));
    double *wd = malloc(sizeof(double) * cols), *md = malloc(sizeof(double) * cols),
           *bound = malloc(sizeof(double) * cols);
    double max_exact = 0, max_trip[6] = {0};
    /* Random blocks against the format's formula. */
    for (size_t ti = 0; ti < sizeof(k_types) / sizeof(k_types[0]); ti++)
        for (int rep = 0; rep < 20; rep++) {
            enum bw_type t = k_types[ti];
            make_row(t, cols, row, wd, md);
            for (int64_t i = 0; i < cols; i++) out[i] = NAN;
            bw_dequant_row(t, row, out, cols);
            for (int64_t i = 0; i < cols; i++) {
                double e = fabs(out[i] - wd[i]);
                CHECK(e <= 0x1p-23 * fabs(wd[i]) + 1e-12, "dequant %s [%lld] = %.9g, expected %.9g", type_name(t),
                      (long long)i, out[i], wd[i]);
                if (e > max_exact) max_exact = e;
            }
        }
    /* Round trips float -> format -> float, within the format's resolution. */
    for (size_t ti = 0; ti < sizeof(k_types) / sizeof(k_types[0]); ti++)
        for (int rep = 0; rep < 20; rep++) {
            enum bw_type t = k_types[ti];
            for (int64_t i = 0; i < cols; i++) x[i] = rnd_range(-2, 2) * (rep % 3 == 0 ? 100.0f : 1.0f);
            if (t == BW_TYPE_F32) {
                memcpy(row, x, sizeof(float) * cols);
                for (int64_t i = 0; i < cols; i++) bound[i] = 0;
            } else if (t == BW_TYPE_F16 || t == BW_TYPE_BF16) {
                for (int64_t i = 0; i < cols; i++) {
                    put_u16(row + 2 * i, t == BW_TYPE_F16 ? ref_d2h(x[i]) : ref_f2bf(x[i]));
                    bound[i] = t == BW_TYPE_F16 ? fabs(x[i]) * 0x1p-11 + 0x1p-25 : fabs(x[i]) * 0x1p-8;
                }
            } else {
                quantize_row(t, x, cols, row, bound);
            }
            bw_dequant_row(t, row, out, cols);
            for (int64_t i = 0; i < cols; i++) {
                double e = fabs(out[i] - x[i]);
                CHECK(e <= bound[i], "round trip %s [%lld]: %.9g -> %.9g (bound %.3g)", type_name(t), (long long)i,
                      x[i], out[i], bound[i]);
                if (e > max_trip[ti]) max_trip[ti] = e;
            }
        }
    printf("dequant: random blocks exact (max err %.2e); round-trip max err F32 %.2e F16 %.2e BF16 %.2e "
           "Q4_0 %.2e Q4_1 %.2e Q8_0 %.2e\n",
           max_exact, max_trip[0], max_trip[1], max_trip[2], max_trip[3], max_trip[4], max_trip[5]);
    free(x);
    free(out);
    free(row);
    free(wd);
    free(md);
    free(bound);
}

/* ---- vector ops ---------------------------------------------------------------------------------- */

static void test_vector_ops(const char *path)
{
    static const int64_t sizes[] = {1, 7, 8, 31, 576, 1536, 1003};
    double worst_rms = 0, worst_swi = 0, worst_dot = 0, worst_axpy = 0; /* err / bound */
    for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
        int64_t n = sizes[si];
        float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n), *o = malloc(sizeof(float) * (n + 1));
        float *y0 = malloc(sizeof(float) * n);
        for (int64_t i = 0; i < n; i++) {
            a[i] = rnd_range(-3, 3);
            b[i] = rnd_range(-2, 2);
        }
        if (n > 8) { /* silu over its whole range, saturated ends included */
            a[0] = -100.0f;
            a[1] = 100.0f;
            a[2] = -88.0f;
            a[3] = 20.0f;
        }

        o[n] = 12345.0f;
        for (int64_t i = 0; i < n; i++) o[i] = NAN;
        bw_rmsnorm(o, a, b, n, 1e-5f);
        double ss = 0;
        for (int64_t i = 0; i < n; i++) ss += (double)a[i] * a[i];
        double sc = 1.0 / sqrt(ss / n + 1e-5);
        for (int64_t i = 0; i < n; i++) {
            double ref = a[i] * sc * b[i], bound = 1e-6 * fabs(ref) + 1e-30, e = fabs(o[i] - ref);
            CHECK(e <= bound, "%s rmsnorm n=%lld [%lld] %.9g vs %.9g", path, (long long)n, (long long)i, o[i], ref);
            if (e / bound > worst_rms) worst_rms = e / bound;
        }
        CHECK(o[n] == 12345.0f, "%s rmsnorm wrote past n", path);

        for (int64_t i = 0; i < n; i++) o[i] = NAN;
        bw_swiglu(o, a, b, n);
        for (int64_t i = 0; i < n; i++) {
            double ref = a[i] / (1.0 + exp(-(double)a[i])) * b[i];
            double bound = 3e-6 * fabs(ref) + 1e-30, e = fabs(o[i] - ref);
            CHECK(e <= bound, "%s swiglu [%lld] g=%.9g: %.9g vs %.9g", path, (long long)i, a[i], o[i], ref);
            if (e / bound > worst_swi) worst_swi = e / bound;
        }
        CHECK(o[n] == 12345.0f, "%s swiglu wrote past n", path);

        double dref = 0, dabs = 0;
        for (int64_t i = 0; i < n; i++) {
            dref += (double)a[i] * b[i];
            dabs += fabs((double)a[i] * b[i]);
        }
        double dbound = (double)(n + 16) * 0x1p-24 * dabs + 1e-30, de = fabs(bw_dot_f32(a, b, n) - dref);
        CHECK(de <= dbound, "%s dot n=%lld err %.3g bound %.3g", path, (long long)n, de, dbound);
        if (de / dbound > worst_dot) worst_dot = de / dbound;

        for (int64_t i = 0; i < n; i++) o[i] = y0[i] = rnd_range(-1, 1);
        float alpha = rnd_range(-2, 2);
        bw_axpy_f32(o, alpha, b, n);
        for (int64_t i = 0; i < n; i++) {
            double ref = y0[i] + (double)alpha * b[i];
            double bound = 0x1p-23 * (fabs(y0[i]) + fabs(alpha * b[i])) + 1e-30, e = fabs(o[i] - ref);
            CHECK(e <= bound, "%s axpy [%lld] %.9g vs %.9g", path, (long long)i, o[i], ref);
            if (e / bound > worst_axpy) worst_axpy = e / bound;
        }
        CHECK(o[n] == 12345.0f, "%s axpy wrote past n", path);
        free(a);
        free(b);
        free(o);
        free(y0);
    }
    printf("vector ops (%s): max err/bound rmsnorm %.3f (bound 1e-6 rel), swiglu %.3f (3e-6 rel), dot %.3f "
           "((n+16) 2^-24 sum|ab|), axpy %.3f (2^-23 rel)\n",
           path, worst_rms, worst_swi, worst_dot, worst_axpy);
}

/* ---- attention span ---------------------------------------------------------------------------- */

/* bw_attend against a double-precision softmax, on key/value rows stride apart with NaN between them
 * (a read outside the rows poisons the result). Compared: out = o / l per head. An output's error comes
 * from the scores (each within (hd+16) 2^-24 sum|q k| scale, so a weight's relative error is at most
 * twice that), the exponential (2 ulp), and the sums over n positions; bound = max|v| times
 * 2 (2 ds + (2n + 16) 2^-24). */
static void test_attend(const char *path)
{
    static const struct {
        int group, hd, n;
        float qscale;
    } cases[] = {
        {3, 64, 1, 1},  {3, 64, 7, 1},   {3, 64, 8, 1}, {3, 64, 9, 1},  {3, 64, 256, 1}, {3, 64, 100, 8},
        {1, 64, 33, 1}, {5, 128, 65, 2}, {4, 8, 17, 1}, {2, 12, 23, 1}, {8, 64, 256, 8}, {6, 32, 3, 20},
    };
    double worst = 0;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int group = cases[ci].group, hd = cases[ci].hd, n = cases[ci].n;
        const int64_t stride = hd + 5;
        const float scale = 1.0f / sqrtf((float)hd);
        float *q = malloc(sizeof(float) * group * hd), *k = malloc(sizeof(float) * n * stride);
        float *v = malloc(sizeof(float) * n * stride), *o = malloc(sizeof(float) * (group * hd + 1));
        float *sc = malloc(sizeof(float) * group * n), m[8], l[8];
        for (int i = 0; i < group * hd; i++) q[i] = rnd_range(-1, 1) * cases[ci].qscale;
        for (int64_t i = 0; i < n * stride; i++) {
            k[i] = i % stride < hd ? rnd_range(-1, 1) : NAN;
            v[i] = i % stride < hd ? rnd_range(-2, 2) : NAN;
        }
        for (int i = 0; i < group * hd; i++) o[i] = NAN;
        o[group * hd] = 12345.0f;
        bw_attend(q, group, hd, k, v, stride, n, scale, sc, m, l, o);
        CHECK(o[group * hd] == 12345.0f, "%s attend wrote past its outputs", path);
        for (int h = 0; h < group; h++) {
            double *s = malloc(sizeof(double) * n), mx = -INFINITY, ds = 0, sum = 0, vmax = 0;
            for (int p = 0; p < n; p++) {
                double d = 0, a = 0;
                for (int i = 0; i < hd; i++) {
                    d += (double)q[h * hd + i] * k[p * stride + i];
                    a += fabs((double)q[h * hd + i] * k[p * stride + i]);
                }
                s[p] = d * scale;
                if (s[p] > mx) mx = s[p];
                if ((hd + 16) * 0x1p-24 * a * scale > ds) ds = (hd + 16) * 0x1p-24 * a * scale;
            }
            for (int p = 0; p < n; p++) sum += exp(s[p] - mx);
            for (int p = 0; p < n; p++)
                for (int i = 0; i < hd; i++) vmax = fmax(vmax, fabs(v[p * stride + i]));
            const double bound = vmax * 2 * (2 * ds + (2.0 * n + 16) * 0x1p-24) + 1e-30;
            CHECK(fabs(m[h] - mx) <= ds + 1e-30, "%s attend case %zu head %d max %.9g vs %.9g", path, ci, h, m[h], mx);
            for (int i = 0; i < hd; i++) {
                double ref = 0;
                for (int p = 0; p < n; p++) ref += exp(s[p] - mx) / sum * v[p * stride + i];
                const double got = (double)o[h * hd + i] / l[h], e = fabs(got - ref);
                CHECK(e <= bound, "%s attend case %zu (group %d hd %d n %d) head %d [%d]: %.9g vs %.9g (bound %.3g)",
                      path, ci, group, hd, n, h, i, got, ref, bound);
                if (e / bound > worst) worst = e / bound;
            }
            free(s);
        }
        free(q);
        free(k);
        free(v);
        free(o);
        free(sc);
    }
    printf("attention span (%s): max err/bound %.3f over %zu shapes\n", path, worst, sizeof cases / sizeof cases[0]);
}

/* ---- pool ----------------------------------------------------------------------------------------- */

struct pool_probe {
    atomic_int calls[8];
    atomic_int bad_nth;
    int expect_nth;
};

static void probe_fn(void *ctx, int ith, int nth)
{
    struct pool_probe *p = ctx;
    if (nth != p->expect_nth || ith < 0 || ith >= nth) atomic_fetch_add(&p->bad_nth, 1);
    else atomic_fetch_add(&p->calls[ith], 1);
}

struct pool_sum {
    int64_t n;
    int64_t part[8];
};

/* Every index is covered once by the ranges [n*ith/nth, n*(ith+1)/nth). */
static void sum_fn(void *ctx, int ith, int nth)
{
    struct pool_sum *s = ctx;
    int64_t acc = 0;
    for (int64_t i = s->n * ith / nth; i < s->n * (ith + 1) / nth; i++) acc += i;
    s->part[ith] = acc;
}

/* Shares long enough (~20 us) that the workers, not only the caller, should get some. */
struct pool_busy {
    pthread_t caller;
    atomic_int by_worker, total;
};

static void busy_fn(void *ctx, int ith, int nth)
{
    struct pool_busy *b = ctx;
    (void)ith;
    (void)nth;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do clock_gettime(CLOCK_MONOTONIC, &t1);
    while ((t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec) < 20000);
    if (!pthread_equal(pthread_self(), b->caller)) atomic_fetch_add(&b->by_worker, 1);
    atomic_fetch_add(&b->total, 1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_pool(void)
{
    for (int n = 1; n <= 4; n++) {
        bw_pool *p = bw_pool_create(n);
        CHECK(p != NULL, "bw_pool_create(%d) failed", n);
        if (!p) continue;
        CHECK(bw_pool_threads(p) == n, "bw_pool_threads = %d, want %d", bw_pool_threads(p), n);
        struct pool_probe pr = {.expect_nth = n};
        /* Wider than the machine, every run waits for a descheduled thread: fewer runs there. */
        const int runs = n <= 2 ? 20000 : 500;
        double t0 = now_s();
        for (int i = 0; i < runs; i++) bw_pool_run(p, probe_fn, &pr);
        double per_run = (now_s() - t0) / runs;
        /* Let the workers park, then check that a run still wakes them all. */
        struct timespec nap = {0, 5 * 1000 * 1000};
        for (int i = 0; i < 5; i++) {
            nanosleep(&nap, NULL);
            bw_pool_run(p, probe_fn, &pr);
        }
        for (int i = 0; i < n; i++)
            CHECK(atomic_load(&pr.calls[i]) == runs + 5, "pool %d threads: ith %d ran %d times, want %d", n, i,
                  atomic_load(&pr.calls[i]), runs + 5);
        CHECK(atomic_load(&pr.bad_nth) == 0, "pool %d threads: %d calls with a bad (ith, nth)", n,
              atomic_load(&pr.bad_nth));
        for (int rep = 0; rep < 200; rep++) {
            struct pool_sum s = {.n = 1000 + rep};
            bw_pool_run(p, sum_fn, &s);
            int64_t tot = 0;
            for (int i = 0; i < n; i++) tot += s.part[i];
            CHECK(tot == s.n * (s.n - 1) / 2, "pool %d threads: sum %lld, want %lld", n, (long long)tot,
                  (long long)(s.n * (s.n - 1) / 2));
        }
        struct pool_busy busy = {.caller = pthread_self()};
        for (int rep = 0; rep < 100; rep++) bw_pool_run(p, busy_fn, &busy);
        CHECK(atomic_load(&busy.total) == 100 * n, "pool %d threads: %d busy shares ran, want %d", n,
              atomic_load(&busy.total), 100 * n);
        /* Informational: on a loaded machine the caller may legitimately run a late worker's share. */
        printf("pool %d threads: %d runs, every share once per run, %.2f us per empty run; %d%% of 20-us "
               "shares ran on workers\n",
               n, runs + 305, per_run * 1e6, 100 * atomic_load(&busy.by_worker) / (100 * n));
        fflush(stdout);
        bw_pool_destroy(p);
    }
}

int main(int argc, char **argv)
{
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20);
    g_rng = seed;
    printf("test_kernels seed %llu\n", (unsigned long long)seed);

    unsetenv("BW_KERNELS");
    const char *best = bw_kernels_init(0);
    const char *paths[3] = {best, "avx2", "portable"};
    int n_paths = strcmp(best, "avx512vnni") == 0 ? 3 : strcmp(best, "avx2") == 0 ? 2 : 1;
    if (n_paths == 2) paths[1] = "portable";
    printf("simd paths checked: %s%s%s%s%s\n", paths[0], n_paths > 1 ? ", " : "", n_paths > 1 ? paths[1] : "",
           n_paths > 2 ? ", " : "", n_paths > 2 ? paths[2] : "");

    test_pool();

    bw_pool *pools[2] = {bw_pool_create(1), bw_pool_create(2)};
    if (!pools[0] || !pools[1]) {
        fprintf(stderr, "cannot create pools\n");
        return 2;
    }
    test_dequant();
    for (int p = 0; p < n_paths; p++) {
        use_path(paths[p]);
        test_vector_ops(paths[p]);
        test_attend(paths[p]);
    }
    test_matmul(pools, paths, n_paths);
    test_batch_invariance(pools, paths, n_paths);
    bw_pool_destroy(pools[0]);
    bw_pool_destroy(pools[1]);

    if (check_failed) {
        printf("test_kernels: %d FAILED checks (seed %llu)\n", check_failed, (unsigned long long)seed);
        return 1;
    }
    printf("test_kernels: all checks passed\n");
    return 0;
}
