/* The CUDA numerics contract (engine/cuda/numerics.h, NUMERICS.md) run on the CPU: the scalar mirror the
 * GPU tests compare the kernels to with memcmp. Runs everywhere, with or without nvcc. Checks:
 *  - the half conversions against the compiler's _Float16 (all 65,536 halves, and a sweep of floats
 *    that covers every rounding boundary, subnormals and overflow);
 *  - a row product per the contract against the exact (double) sum of the same block terms, within
 *    the contract's own error bound: each block term rounds at most 3 times and each output sees at
 *    most GROUP - 1 + log2(fold width) additions, so |err| <= (3 + GROUP + log2 P) * 2^-24 * S, S the
 *    sum of the terms' magnitudes;
 *  - the warp's way of running the contract (lane j owns a run of adjacent groups, folds in-lane, then
 *    shuffles down; the RMS partials by a butterfly) and a streaming way (a stack of subtree sums, as a
 *    kernel walking K in order would keep) give the scalar mirror's bits, for every K the models use;
 *  - the quantized activation against its definition (q within 0.5 of v/d, codes in -127..127);
 *  - the RMS scale against a double reference;
 *  - a pinned case: the mirror's bits for one fixed input, so any change to the contract's arithmetic
 *    is seen here and must come with NUMERICS.md and the GPU tests.
 * The seed is printed; BW_TEST_SEED=N repeats a run. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/cuda/numerics.h"

/* See test_pinned_case. */
#define BW_NM_PINNED_HASH 0x6f5975a2470d9caeull

static int fails, checks;
static uint64_t rng;

#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        checks++;                                                                                                      \
        if (!(cond)) {                                                                                                 \
            if (fails++ < 20) {                                                                                        \
                printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                            \
                printf(__VA_ARGS__);                                                                                   \
                printf("\n");                                                                                          \
            }                                                                                                          \
        }                                                                                                              \
    } while (0)

static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

static float frand(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() & 0xffffff) / 16777216.0f; }

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void test_half_conversions(void)
{
#ifdef __FLT16_MAX__
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        _Float16 x;
        uint16_t hh = (uint16_t)h;
        memcpy(&x, &hh, 2);
        const float want = (float)x, got = bw_nm_h2f(hh);
        if (!(fbits(want) == fbits(got) || (want != want && got != got))) bad++;
    }
    CHECK(bad == 0, "h2f differs from _Float16 on %d halves", bad);
    bad = 0;
    /* Every float whose bits step by 97 through the whole range, plus the halfway points. */
    for (uint64_t u = 0; u < 0x100000000ull; u += 97) {
        float f;
        uint32_t b = (uint32_t)u;
        memcpy(&f, &b, 4);
        _Float16 w = (_Float16)f;
        uint16_t want;
        memcpy(&want, &w, 2);
        const uint16_t got = bw_nm_f2h(f);
        if (want != got && !(f != f)) {
            if (bad++ < 3) printf("  f2h(%a) = %04x, _Float16 gives %04x\n", f, got, want);
        }
    }
    for (uint32_t h = 0; h < 0x7c00; h++) { /* ties between neighbouring halves round to even */
        const float lo = bw_nm_h2f((uint16_t)h), hi = bw_nm_h2f((uint16_t)(h + 1));
        const float mid = (float)(((double)lo + (double)hi) / 2.0);
        _Float16 w = (_Float16)mid;
        uint16_t want;
        memcpy(&want, &w, 2);
        if (bw_nm_f2h(mid) != want || bw_nm_f2h(-mid) != (want | 0x8000u)) bad++;
    }
    CHECK(bad == 0, "f2h differs from _Float16 on %d floats", bad);
#else
    /* No _Float16 here: check the round trip of every finite half instead. */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00u) == 0x7c00u) continue;
        if (bw_nm_f2h(bw_nm_h2f((uint16_t)h)) != h) bad++;
    }
    CHECK(bad == 0, "half round trip fails on %d halves", bad);
#endif
}

/* A random GGUF row of nb blocks with realistic scales. */
static void random_row(int kind, uint8_t *w, int nb)
{
    const int bb = bw_nm_block_bytes(kind);
    for (int b = 0; b < nb; b++) {
        uint8_t *blk = w + (size_t)b * bb;
        const uint16_t d = bw_nm_f2h(frand(1e-4f, 2e-2f) * (rnd() & 1 ? 1.0f : -1.0f));
        blk[0] = (uint8_t)d, blk[1] = (uint8_t)(d >> 8);
        int q0 = 2;
        if (kind == BW_NM_Q4_1) {
            const uint16_t m = bw_nm_f2h(frand(-0.1f, 0.1f));
            blk[2] = (uint8_t)m, blk[3] = (uint8_t)(m >> 8);
            q0 = 4;
        }
        for (int i = q0; i < bb; i++) blk[i] = (uint8_t)rnd();
    }
}

typedef struct {
    int8_t *q;
    uint16_t *d, *s;
} qact;

static void quantize(const float *x, int K, qact *a)
{
    for (int b = 0; b < K / 32; b++) bw_nm_quant_block(x + b * 32, a->q + b * 32, &a->d[b], &a->s[b]);
}

/* Exact sum (double) of the contract's block terms, each from the same float inputs. */
static double exact_dot(int kind, const uint8_t *w, int nb, const qact *a, double *mag)
{
    const int bb = bw_nm_block_bytes(kind);
    double sum = 0.0;
    *mag = 0.0;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = w + (size_t)b * bb;
        const double dw = bw_nm_h2f((uint16_t)(blk[0] | blk[1] << 8));
        const double mw = kind == BW_NM_Q4_1 ? bw_nm_h2f((uint16_t)(blk[2] | blk[3] << 8)) : 0.0;
        const int is = bw_nm_block_idot(kind, blk + (kind == BW_NM_Q4_1 ? 4 : 2), a->q + b * 32);
        const double t1 = dw * bw_nm_h2f(a->d[b]) * is, t2 = mw * bw_nm_h2f(a->s[b]);
        sum += t1 + t2;
        *mag += fabs(t1) + fabs(t2);
    }
    return sum;
}

/* A group's sum, as every schedule computes it. */
static float group_sum(int kind, const uint8_t *w, int nb, int grp, const qact *a)
{
    const int bb = bw_nm_block_bytes(kind);
    float acc = 0.0f;
    for (int b = grp * BW_NM_GROUP; b < nb && b < (grp + 1) * BW_NM_GROUP; b++) {
        const uint8_t *blk = w + (size_t)b * bb;
        const float dw = bw_nm_h2f((uint16_t)(blk[0] | blk[1] << 8));
        const float mw = kind == BW_NM_Q4_1 ? bw_nm_h2f((uint16_t)(blk[2] | blk[3] << 8)) : 0.0f;
        const int is = bw_nm_block_idot(kind, blk + (kind == BW_NM_Q4_1 ? 4 : 2), a->q + b * 32);
        acc = bw_nm_group_add(acc, bw_nm_block_term(kind, dw, mw, bw_nm_h2f(a->d[b]), bw_nm_h2f(a->s[b]), is),
                              b == grp * BW_NM_GROUP);
    }
    return acc;
}

/* The warp kernel's schedule: 32 lanes, lane j owns groups j*per .. j*per+per-1, folds them in-lane,
 * then shuffles down 1, 2, 4, 8, 16 (lane j adds lane j + o). */
static float warp_schedule_dot(int kind, const uint8_t *w, int nb, const qact *a)
{
    const int ng = (nb + BW_NM_GROUP - 1) / BW_NM_GROUP, P = bw_nm_fold_width(ng), per = P > 32 ? P / 32 : 1;
    float lane[32][64], v[32];
    for (int j = 0; j < 32; j++) {
        for (int k = 0; k < per; k++) lane[j][k] = j * per + k < ng ? group_sum(kind, w, nb, j * per + k, a) : 0.0f;
        for (int s = 1; s < per; s <<= 1)
            for (int k = 0; k + s < per; k += 2 * s) lane[j][k] = bw_nm_add(lane[j][k], lane[j][k + s]);
        v[j] = lane[j][0];
    }
    for (int o = 1; o < (P < 32 ? P : 32); o <<= 1) {
        float nv[32];
        for (int j = 0; j < 32; j++) nv[j] = j + o < 32 ? bw_nm_add(v[j], v[j + o]) : v[j];
        memcpy(v, nv, sizeof v);
    }
    return v[0];
}

/* A streaming schedule (a tensor-core kernel walking K in order): a stack of subtree sums, the top two
 * merged (left + right) while they have the same height, P leaves with +0.0f after the last group. */
static float stream_schedule_dot(int kind, const uint8_t *w, int nb, const qact *a)
{
    const int ng = (nb + BW_NM_GROUP - 1) / BW_NM_GROUP, P = bw_nm_fold_width(ng);
    float val[32];
    int height[32], top = 0;
    for (int g = 0; g < P; g++) {
        val[top] = g < ng ? group_sum(kind, w, nb, g, a) : 0.0f;
        height[top++] = 0;
        while (top >= 2 && height[top - 1] == height[top - 2]) {
            val[top - 2] = bw_nm_add(val[top - 2], val[top - 1]);
            height[top - 2]++;
            top--;
        }
    }
    return val[0];
}

static void test_row_products(void)
{
    /* K of the default model (576, 1536), of Llama-3-8B (4096, 14336), odd group counts, K = 32. */
    static const int Ks[] = {32, 64, 288, 576, 1536, 4096, 14336, 8192 + 32};
    static const char *kn[] = {"Q4_0", "Q4_1", "Q8_0"};
    for (int kind = 0; kind < 3; kind++) {
        double worst = 0.0;
        int mismatch = 0;
        for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++) {
            const int K = Ks[ki], nb = K / 32;
            uint8_t *w = malloc((size_t)nb * 34);
            float *x = malloc((size_t)K * sizeof *x), g[512];
            qact a = {malloc((size_t)K), malloc((size_t)nb * 2), malloc((size_t)nb * 2)};
            for (int rep = 0; rep < 40; rep++) {
                random_row(kind, w, nb);
                const float scale = rep % 3 == 0 ? 1e-3f : rep % 3 == 1 ? 1.0f : 30.0f;
                for (int k = 0; k < K; k++) x[k] = frand(-scale, scale) * (rnd() % 17 == 0 ? 8.0f : 1.0f);
                if (rep == 5) memset(x, 0, (size_t)K * sizeof *x); /* an all-zero activation row */
                quantize(x, K, &a);
                const float got = bw_nm_row_dot(kind, w, nb, a.q, a.d, a.s, g);
                double mag;
                const double ref = exact_dot(kind, w, nb, &a, &mag);
                const int P = bw_nm_fold_width((nb + BW_NM_GROUP - 1) / BW_NM_GROUP);
                const double bound = (3 + BW_NM_GROUP + log2((double)P)) * ldexp(1.0, -24) * mag + 1e-30;
                const double e = fabs((double)got - ref) / bound;
                if (e > worst) worst = e;
                CHECK(e <= 1.0, "%s K=%d: contract %.9g, exact %.9g, error %.3g of the bound", kn[kind], K, got, ref,
                      e);
                const float ws = warp_schedule_dot(kind, w, nb, &a), ss = stream_schedule_dot(kind, w, nb, &a);
                if (fbits(ws) != fbits(got) || fbits(ss) != fbits(got)) mismatch++;
            }
            free(w), free(x), free(a.q), free(a.d), free(a.s);
        }
        CHECK(mismatch == 0, "%s: the warp or streaming schedule differs from the scalar mirror in %d rows", kn[kind],
              mismatch);
        printf("%s row products: worst error %.3g of the contract's bound; warp and streaming schedules "
               "bit-identical\n",
               kn[kind], worst);
    }
}

static void test_quantization_and_norm(void)
{
    int bad = 0;
    double worst_rms = 0.0;
    for (int rep = 0; rep < 200; rep++) {
        const int K = 32 * (1 + (int)(rnd() % 64));
        float x[2048], nw[2048], v[2048];
        const float scale = rep % 2 ? 1e-2f : 50.0f;
        for (int k = 0; k < K; k++) x[k] = frand(-scale, scale), nw[k] = frand(0.5f, 2.0f);
        const float eps = 1e-5f, rs = bw_nm_rms_scale(x, K, eps);
        double ss = 0.0;
        for (int k = 0; k < K; k++) ss += (double)x[k] * x[k];
        const double ref = 1.0 / sqrt(ss / K + eps), e = fabs(rs - ref) / ref;
        if (e > worst_rms) worst_rms = e;
        /* the warp's butterfly over 32 partials gives the scalar fold's bits */
        double p[32];
        for (int j = 0; j < 32; j++) {
            p[j] = 0.0;
            for (int k = j; k < K; k += 32) p[j] = bw_nm_dadd(p[j], (double)bw_nm_mul(x[k], x[k]));
        }
        for (int o = 16; o > 0; o >>= 1) { /* __shfl_xor_sync: lane j adds lane j ^ o */
            double np[32];
            for (int j = 0; j < 32; j++) np[j] = bw_nm_dadd(p[j], p[j ^ o]);
            memcpy(p, np, sizeof p);
        }
        if (fbits(bw_nm_rms_scale_from(p[0], K, eps)) != fbits(rs)) bad++;
        for (int k = 0; k < K; k++) v[k] = bw_nm_normed(x[k], rs, nw[k]);
        for (int b = 0; b < K / 32; b++) {
            int8_t q[32];
            uint16_t d, s;
            bw_nm_quant_block(v + 32 * b, q, &d, &s);
            float amax = 0.0f;
            int sum = 0;
            for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(v[32 * b + i]));
            const double dd = amax / 127.0;
            for (int i = 0; i < 32; i++) {
                sum += q[i];
                if (q[i] == -128 || fabs(q[i] - v[32 * b + i] / dd) > 0.5 + 1e-5) bad++;
            }
            if (fabs(bw_nm_h2f(d) - dd) > dd * 1e-3 + 1e-30) bad++;
            if (fabs(bw_nm_h2f(s) - dd * sum) > fabs(dd * sum) * 1e-3 + 1e-7) bad++;
        }
    }
    CHECK(bad == 0, "%d quantized elements or scales off their definition", bad);
    CHECK(worst_rms < 1e-6, "RMS scale off the double reference by %.3g relative", worst_rms);
    printf("quantization: codes within 0.5 of v/d, scales to half precision; RMS scale worst %.3g relative, "
           "butterfly bit-identical\n",
           worst_rms);
}

/* The pinned case: a fixed input (no random state), its mirror outputs folded into one hash. */
static void test_pinned_case(void)
{
    uint64_t h = 1469598103934665603ull;
    for (int kind = 0; kind < 3; kind++) {
        const int K = 1536, nb = K / 32;
        uint8_t w[48 * 34];
        float x[1536], g[8];
        int8_t q[1536];
        uint16_t d[48], s[48];
        for (int i = 0; i < nb * 34; i++) w[i] = (uint8_t)(i * 37 + 11);
        for (int b = 0; b < nb; b++) { /* sane scales: 0.01 .. 0.02 */
            const uint16_t dh = bw_nm_f2h(0.01f + 0.0002f * (float)b);
            w[b * bw_nm_block_bytes(kind)] = (uint8_t)dh, w[b * bw_nm_block_bytes(kind) + 1] = (uint8_t)(dh >> 8);
        }
        for (int k = 0; k < K; k++) x[k] = (float)((k * 7919) % 2001 - 1000) / 256.0f; /* no libm: same everywhere */
        const float rs = bw_nm_rms_scale(x, K, 1e-5f);
        for (int k = 0; k < K; k++) x[k] = bw_nm_normed(x[k], rs, 1.0f + (float)(k % 5) * 0.125f);
        for (int b = 0; b < nb; b++) bw_nm_quant_block(x + 32 * b, q + 32 * b, &d[b], &s[b]);
        const float y = bw_nm_row_dot(kind, w, nb, q, d, s, g);
        h = (h ^ fbits(y)) * 1099511628211ull;
        h = (h ^ fbits(rs)) * 1099511628211ull;
    }
    /* Recorded from this mirror when the contract was written (a change here is a change of contract). */
    const uint64_t pinned = BW_NM_PINNED_HASH;
    CHECK(h == pinned, "pinned case hash %016llx, recorded %016llx: the contract's arithmetic changed",
          (unsigned long long)h, (unsigned long long)pinned);
    printf("pinned case: %016llx\n", (unsigned long long)h);
}

int main(void)
{
    const char *seed = getenv("BW_TEST_SEED");
    rng = seed ? strtoull(seed, NULL, 10) : (uint64_t)time(NULL);
    if (!rng) rng = 1;
    printf("seed %llu\n", (unsigned long long)rng);
    test_half_conversions();
    test_row_products();
    test_quantization_and_norm();
    test_pinned_case();
    printf("%d checks, %d failed\n", checks, fails);
    return fails ? 1 : 0;
}
