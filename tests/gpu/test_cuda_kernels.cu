/* Each CUDA kernel family against a CPU reference written here from GGUF's definitions, on fresh
 * random data every run (the seed is printed; BW_TEST_SEED=N repeats a run). Every output buffer is
 * filled with NaN before the kernel runs, so an element the kernel fails to write fails the check.
 *
 * Error bounds, per output element, relative to S = sum_c |W[r][c] * x[c]| (the size of the terms):
 *  - quantized weights vs the mirror reference (the CPU backend's arithmetic: activations quantized
 *    to 8 bits per block with id = 127/amax and round-half-even, integer block dots): 1e-5 * S + 1e-6;
 *    only the order of float additions differs.
 *  - quantized weights vs the exact product of the dequantized weights with the unquantized
 *    activation: the activation's quantization error, at most amax_b * (1/254 + 2^-11 * 127/127) per
 *    element of block b, summed against |W|: sum_b 0.0045 * amax_b * sum_{c in b} |W[r][c]|, plus
 *    1e-5 * S.
 *  - float weights (F32, F16, BF16) vs the exact product: 1e-5 * S + 1e-6.
 *  - attention vs a double reference on the same f16 cache: 1e-4 * max|v| + 1e-6.
 *  - RoPE / KV write: the f16 rounding of the cache, 2^-10 relative; queries 1e-5 relative.
 *  - embedding and top-2: exact.
 *  - the device sampler (sample.cu) against bw_sample on copies of the same logits: the same ids.
 *  - the contract kernels (contract.cu) against the scalar mirror (numerics.h on the host): the same
 *    bits (memcmp), prepared activations and products alike.
 * Without a CUDA device the program prints "no CUDA device: skipped" and exits 0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <vector>

#include "engine/cuda/contract.cuh"
#include "engine/cuda/sample.cuh"
#include "engine/cuda/ops.cuh"

extern "C" {
#include "engine/sampler.h"
#include "engine/cuda/repack.h"
#include "engine/tensor.h"
}

static int g_fail = 0, g_pass = 0;
static int g_mma = 0; /* products of more than 8 tokens on the tensor-core kernel */
static uint64_t g_rng;

static uint32_t rnd()
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}
static float frand(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() & 0xffffff) / 16777216.0f; }

#define CK(call)                                                                                                       \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) {                                                                                       \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));                     \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

static void report(const char *family, const char *what, double worst, int ok)
{
    printf("%s %-9s %-44s worst error/bound %.3g\n", ok ? "PASS" : "FAIL", family, what, worst);
    if (ok) g_pass++;
    else g_fail++;
}

template <typename T> struct dbuf {
    T *p = nullptr;
    size_t n = 0;
    explicit dbuf(size_t count) : n(count)
    {
        CK(cudaMalloc((void **)&p, count * sizeof(T) + 16));
        poison();
    }
    ~dbuf() { cudaFree(p); }
    void poison() { CK(cudaMemset(p, 0xff, n * sizeof(T))); }
    void put(const T *h) { CK(cudaMemcpy(p, h, n * sizeof(T), cudaMemcpyHostToDevice)); }
    std::vector<T> get() const
    {
        std::vector<T> h(n);
        CK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
        return h;
    }
};

/* ---- random GGUF matrices and their exact values ---------------------------------------------- */

static size_t row_bytes(int type, int cols) { return bw_type_row_bytes((uint32_t)type, (uint64_t)cols); }

static uint16_t f16_rand(float lo, float hi) { return bw_f32_to_f16(frand(lo, hi)); }

static std::vector<uint8_t> gguf_random(int type, int rows, int cols)
{
    std::vector<uint8_t> m(row_bytes(type, cols) * rows);
    const size_t n = (size_t)rows * cols, nb = n / 32;
    switch (type) {
    case BW_TYPE_F32:
        for (size_t i = 0; i < n; i++) ((float *)m.data())[i] = frand(-0.1f, 0.1f);
        break;
    case BW_TYPE_F16:
        for (size_t i = 0; i < n; i++) ((uint16_t *)m.data())[i] = f16_rand(-0.1f, 0.1f);
        break;
    case BW_TYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            float f = frand(-0.1f, 0.1f);
            uint32_t u;
            memcpy(&u, &f, 4);
            ((uint16_t *)m.data())[i] = (uint16_t)(u >> 16);
        }
        break;
    case BW_TYPE_Q4_0:
        for (size_t b = 0; b < nb; b++) {
            bw_block_q4_0 *k = (bw_block_q4_0 *)m.data() + b;
            k->d = f16_rand(-0.02f, 0.02f);
            for (int j = 0; j < 16; j++) k->qs[j] = (uint8_t)rnd();
        }
        break;
    case BW_TYPE_Q4_1:
        for (size_t b = 0; b < nb; b++) {
            bw_block_q4_1 *k = (bw_block_q4_1 *)m.data() + b;
            k->d = f16_rand(0.001f, 0.02f);
            k->m = f16_rand(-0.15f, 0.0f);
            for (int j = 0; j < 16; j++) k->qs[j] = (uint8_t)rnd();
        }
        break;
    case BW_TYPE_Q8_0:
        for (size_t b = 0; b < nb; b++) {
            bw_block_q8_0 *k = (bw_block_q8_0 *)m.data() + b;
            k->d = f16_rand(-0.002f, 0.002f);
            for (int j = 0; j < 32; j++) k->qs[j] = (int8_t)((int)(rnd() % 255) - 127);
        }
        break;
    }
    return m;
}

/* Element (r, c) straight from GGUF blocks (independent of repack.c). */
static float gguf_get(int type, const uint8_t *m, int cols, int r, int c)
{
    const size_t i = (size_t)r * cols + c;
    const size_t b = i / 32;
    const int j = (int)(i % 32);
    switch (type) {
    case BW_TYPE_F32: return ((const float *)m)[i];
    case BW_TYPE_F16: return bw_f16_to_f32(((const uint16_t *)m)[i]);
    case BW_TYPE_BF16: return bw_bf16_to_f32(((const uint16_t *)m)[i]);
    case BW_TYPE_Q4_0: {
        const bw_block_q4_0 *k = (const bw_block_q4_0 *)m + b;
        const int q = j < 16 ? (k->qs[j] & 15) : (k->qs[j - 16] >> 4);
        return bw_f16_to_f32(k->d) * (float)(q - 8);
    }
    case BW_TYPE_Q4_1: {
        const bw_block_q4_1 *k = (const bw_block_q4_1 *)m + b;
        const int q = j < 16 ? (k->qs[j] & 15) : (k->qs[j - 16] >> 4);
        return bw_f16_to_f32(k->d) * (float)q + bw_f16_to_f32(k->m);
    }
    case BW_TYPE_Q8_0: {
        const bw_block_q8_0 *k = (const bw_block_q8_0 *)m + b;
        return bw_f16_to_f32(k->d) * (float)k->qs[j];
    }
    }
    return NAN;
}

static int is_quant(int type) { return type == BW_TYPE_Q4_0 || type == BW_TYPE_Q4_1 || type == BW_TYPE_Q8_0; }

/* The matrix uploaded in the GPU layout. */
struct dmat {
    bw_cu_mat m;
    void *mem;
    dmat(int type, const std::vector<uint8_t> &g, int rows, int cols)
    {
        bw_cu_layout l;
        if (bw_cu_layout_of((enum bw_type)type, rows, cols, &l) != 0) abort();
        std::vector<uint8_t> h(l.q_bytes + l.s_bytes + 256);
        const size_t soff = (l.q_bytes + 255) & ~(size_t)255;
        h.resize(soff + l.s_bytes + 16);
        bw_cu_repack_rows((enum bw_type)type, g.data(), rows, cols, h.data(), h.data() + soff);
        CK(cudaMalloc(&mem, h.size()));
        CK(cudaMemcpy(mem, h.data(), h.size(), cudaMemcpyHostToDevice));
        m.type = type;
        m.rows = rows;
        m.cols = cols;
        m.q = mem;
        m.s = l.nb ? (uint8_t *)mem + soff : nullptr;
    }
    ~dmat() { cudaFree(mem); }
};

/* ---- references ---------------------------------------------------------------------------------- */

static float round_f16(float f) { return bw_f16_to_f32(bw_f32_to_f16(f)); }

/* The CPU backend's activation quantization of one row. */
struct qrow {
    std::vector<int8_t> q;
    std::vector<float> d, s, amax;
};
static qrow quantize_row(const float *x, int K)
{
    qrow r;
    r.q.resize(K);
    for (int b = 0; b < K / 32; b++) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        const float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            const int q = (int)nearbyintf(x[b * 32 + j] * id); /* default rounding: half to even */
            r.q[b * 32 + j] = (int8_t)q;
            sum += q;
        }
        r.d.push_back(round_f16(d));
        r.s.push_back(round_f16(d * (float)sum));
        r.amax.push_back(amax);
    }
    return r;
}

static void rmsnorm_ref(const float *x, const float *w, int K, float eps, float *out)
{
    double ss = 0.0;
    for (int i = 0; i < K; i++) ss += (double)(x[i] * x[i]);
    const float scale = 1.0f / sqrtf((float)(ss / (double)K) + eps);
    for (int i = 0; i < K; i++) out[i] = w ? (x[i] * scale) * w[i] : x[i];
}

/* Mirror: the block-integer product, as the CPU backend computes it. */
static double mirror_dot(int type, const uint8_t *m, int cols, int r, const qrow &a)
{
    double acc = 0.0;
    const uint8_t *row = m + row_bytes(type, cols) * r;
    for (int b = 0; b < cols / 32; b++) {
        int isum = 0;
        float dw = 0.0f, mw = 0.0f;
        if (type == BW_TYPE_Q8_0) {
            const bw_block_q8_0 *k = (const bw_block_q8_0 *)row + b;
            dw = bw_f16_to_f32(k->d);
            for (int j = 0; j < 32; j++) isum += k->qs[j] * a.q[b * 32 + j];
        } else if (type == BW_TYPE_Q4_0) {
            const bw_block_q4_0 *k = (const bw_block_q4_0 *)row + b;
            dw = bw_f16_to_f32(k->d);
            for (int j = 0; j < 16; j++)
                isum += ((k->qs[j] & 15) - 8) * a.q[b * 32 + j] + ((k->qs[j] >> 4) - 8) * a.q[b * 32 + 16 + j];
        } else {
            const bw_block_q4_1 *k = (const bw_block_q4_1 *)row + b;
            dw = bw_f16_to_f32(k->d);
            mw = bw_f16_to_f32(k->m);
            for (int j = 0; j < 16; j++)
                isum += (k->qs[j] & 15) * a.q[b * 32 + j] + (k->qs[j] >> 4) * a.q[b * 32 + 16 + j];
        }
        acc += (double)dw * a.d[b] * isum + (type == BW_TYPE_Q4_1 ? (double)mw * a.s[b] : 0.0);
    }
    return acc;
}

/* ---- matmul ----------------------------------------------------------------------------------------- */

static const char *tname(int t) { return bw_type_info((uint32_t)t)->name; }

static void test_matmul(int type, int rows, int K, int n_tok, int use_norm, int epi, int gather)
{
    std::vector<uint8_t> g = gguf_random(type, rows, K);
    dmat W(type, g, rows, K);
    const int n_x = gather ? n_tok + 5 : n_tok;
    std::vector<float> x((size_t)n_x * K), w(K);
    for (auto &v : x) v = frand(-2.0f, 2.0f);
    for (int t = 0; t < n_x; t++) /* an outlier per row exercises the block scale */
        x[(size_t)t * K + rnd() % K] = frand(-30.0f, 30.0f);
    for (auto &v : w) v = frand(0.5f, 1.5f);
    std::vector<int> idx(n_tok);
    for (int t = 0; t < n_tok; t++) idx[t] = gather ? (int)(rnd() % n_x) : t;
    const int out_rows = epi == BW_EPI_SWIGLU ? rows / 2 : rows;
    std::vector<float> y0((size_t)n_tok * out_rows);
    for (auto &v : y0) v = frand(-1.0f, 1.0f);

    dbuf<float> dx(x.size()), dw(K), dy(y0.size());
    dbuf<int> didx(n_tok);
    dx.put(x.data());
    dw.put(w.data());
    didx.put(idx.data());
    if (epi == BW_EPI_ADD) dy.put(y0.data());
    bw_cu_act in = {dx.p, K, gather ? didx.p : nullptr, use_norm ? dw.p : nullptr, 1e-5f};
    bw_cu_launch L = {0, 0, g_mma};
    CK(bw_cu_matmul(L, W.m, in, n_tok, epi, dy.p, out_rows, nullptr, 7));
    CK(cudaDeviceSynchronize());
    std::vector<float> y = dy.get();

    double worst_m = 0.0, worst_t = 0.0;
    std::vector<float> xn(K);
    std::vector<double> full(rows);
    for (int t = 0; t < n_tok; t++) {
        rmsnorm_ref(&x[(size_t)idx[t] * K], use_norm ? w.data() : nullptr, K, 1e-5f, xn.data());
        qrow a = quantize_row(xn.data(), K);
        for (int r = 0; r < rows; r++) {
            double exact = 0.0, S = 0.0, qb = 0.0;
            for (int c = 0; c < K; c++) {
                const double wv = gguf_get(type, g.data(), K, r, c);
                exact += wv * xn[c];
                S += fabs(wv * xn[c]);
                qb += 0.0045 * a.amax[c / 32] * fabs(wv);
            }
            double got_pre = is_quant(type) ? mirror_dot(type, g.data(), K, r, a) : exact;
            full[r] = got_pre;
            (void)S;
            if (epi == BW_EPI_SWIGLU) continue;
            const double base = epi == BW_EPI_ADD ? y0[(size_t)t * out_rows + r] : 0.0;
            const double gv = y[(size_t)t * out_rows + r];
            const double tol = 1e-5 * S + 1e-6 + (epi == BW_EPI_ADD ? 1e-6 * fabs(base) : 0.0);
            const double em = fabs(gv - base - got_pre) / tol;
            const double et = fabs(gv - base - exact) / (is_quant(type) ? qb + tol : tol);
            if (!(em <= worst_m)) worst_m = isnan(em) ? INFINITY : fmax(worst_m, em);
            if (!(et <= worst_t)) worst_t = isnan(et) ? INFINITY : fmax(worst_t, et);
        }
        if (epi == BW_EPI_SWIGLU) {
            for (int r = 0; r < out_rows; r++) {
                const double gt = full[r], up = full[r + out_rows];
                const double ref = gt / (1.0 + exp(-gt)) * up;
                const double gv = y[(size_t)t * out_rows + r];
                const double e = fabs(gv - ref) / (1e-4 * (fabs(ref) + fabs(gt) + fabs(up)) + 1e-5);
                if (!(e <= worst_m)) worst_m = isnan(e) ? INFINITY : fmax(worst_m, e);
            }
        }
    }
    char what[128];
    static const char *en[] = {"store", "add", "swiglu", "qkv"};
    snprintf(what, sizeof what, "%s %dx%d tok=%d %s%s%s", tname(type), rows, K, n_tok, en[epi],
             use_norm ? " +rmsnorm" : "", gather ? " +gather" : "");
    report("matmul", what, fmax(worst_m, epi == BW_EPI_SWIGLU ? 0.0 : worst_t), worst_m <= 1.0 && worst_t <= 1.0);
}

/* ---- QKV epilogue: RoPE and the KV-cache write ------------------------------------------------------ */

static void test_qkv(int type, int n_head, int n_head_kv, int hd, int n_rot, int n_tok, int with_freqs)
{
    const int K = 256, n_q = n_head * hd, n_k = n_head_kv * hd, rows = n_q + 2 * n_k;
    const int n_slots = 3, n_ctx = 7 * (n_tok / n_slots + 1); /* room for every position drawn below */
    std::vector<uint8_t> g = gguf_random(type, rows, K);
    dmat W(type, g, rows, K);
    std::vector<float> x((size_t)n_tok * K), w(K), freqs(n_rot / 2);
    for (auto &v : x) v = frand(-2.0f, 2.0f);
    for (auto &v : w) v = frand(0.5f, 1.5f);
    for (auto &v : freqs) v = frand(1.0f, 8.0f);
    std::vector<int> pos(n_tok), slot(n_tok);
    for (int t = 0; t < n_tok; t++) { /* distinct (slot, pos) pairs */
        slot[t] = t % n_slots;
        pos[t] = (t / n_slots) * 7 + (int)(rnd() % 7);
    }
    const size_t cache_n = (size_t)n_slots * n_head_kv * n_ctx * hd;
    dbuf<float> dx(x.size()), dw(K), dq((size_t)n_tok * n_q), dfr(freqs.size());
    dbuf<__half> dk(cache_n), dv(cache_n);
    dbuf<int> dpos(n_tok), dslot(n_tok);
    dx.put(x.data());
    dw.put(w.data());
    dfr.put(freqs.data());
    dpos.put(pos.data());
    dslot.put(slot.data());
    const float base = 10000.0f, rope_scale = 2.0f;
    bw_cu_qkv p = {};
    p.q = dq.p;
    p.k_cache = dk.p;
    p.v_cache = dv.p;
    p.pos = dpos.p;
    p.slot = dslot.p;
    p.n_q = n_q;
    p.n_k = n_k;
    p.head_dim = hd;
    p.n_rot = n_rot;
    p.n_ctx = n_ctx;
    p.n_head_kv = n_head_kv;
    p.theta_scale = powf(base, -2.0f / (float)n_rot);
    p.pos_scale = 1.0f / rope_scale;
    p.rope_freqs = with_freqs ? dfr.p : nullptr;
    bw_cu_act in = {dx.p, K, nullptr, dw.p, 1e-6f};
    bw_cu_launch L = {0, 0, g_mma};
    CK(bw_cu_matmul(L, W.m, in, n_tok, BW_EPI_QKV, nullptr, 0, &p, 0));
    CK(cudaDeviceSynchronize());
    std::vector<float> q = dq.get();
    std::vector<__half> kc = dk.get(), vc = dv.get();

    double worst = 0.0;
    size_t written = 0;
    std::vector<float> xn(K);
    for (int t = 0; t < n_tok; t++) {
        rmsnorm_ref(&x[(size_t)t * K], w.data(), K, 1e-6f, xn.data());
        qrow a = quantize_row(xn.data(), K);
        std::vector<double> v(rows), S(rows);
        for (int r = 0; r < rows; r++) {
            v[r] = is_quant(type) ? mirror_dot(type, g.data(), K, r, a) : 0.0;
            double ex = 0.0, s = 0.0;
            for (int c = 0; c < K; c++) {
                const double wv = gguf_get(type, g.data(), K, r, c);
                ex += wv * xn[c];
                s += fabs(wv * xn[c]);
            }
            if (!is_quant(type)) v[r] = ex;
            S[r] = s;
        }
        for (int r = 0; r < rows; r += 2) {
            const int seg = r < n_q ? 0 : r < n_q + n_k ? 1 : 2;
            const int rr = seg == 0 ? r : seg == 1 ? r - n_q : r - n_q - n_k;
            const int j = rr % hd, i = j / 2;
            double a0 = v[r], b0 = v[r + 1];
            if (seg < 2 && j < n_rot) {
                double th = pos[t] / (double)rope_scale * pow(base, -2.0 * i / n_rot);
                if (with_freqs) th /= freqs[i];
                const double c = cos(th), s = sin(th);
                const double a1 = a0 * c - b0 * s, b1 = a0 * s + b0 * c;
                a0 = a1;
                b0 = b1;
            }
            double ga, gb, rel;
            if (seg == 0) {
                ga = q[(size_t)t * n_q + r];
                gb = q[(size_t)t * n_q + r + 1];
                rel = 1e-5;
            } else {
                const size_t off = (((size_t)slot[t] * n_head_kv + rr / hd) * n_ctx + pos[t]) * hd + j;
                const std::vector<__half> &cc = seg == 1 ? kc : vc;
                ga = __half2float(cc[off]);
                gb = __half2float(cc[off + 1]);
                written += 2;
                rel = 1.0 / 1024;
            }
            const double scale = S[r] + S[r + 1] + 1e-6;
            const double e = fmax(fabs(ga - a0), fabs(gb - b0)) / (rel * (fabs(a0) + fabs(b0)) + 2e-5 * scale);
            if (!(e <= worst)) worst = isnan(e) ? INFINITY : fmax(worst, e);
        }
    }
    /* Nothing outside the written positions may change: the rest must still be the NaN poison. */
    size_t finite = 0;
    for (size_t i = 0; i < cache_n; i++) finite += !__hisnan(kc[i]) + !__hisnan(vc[i]);
    char what[128];
    snprintf(what, sizeof what, "%s heads %d/%d hd %d rot %d tok=%d%s", tname(type), n_head, n_head_kv, hd, n_rot,
             n_tok, with_freqs ? " +freqs" : "");
    const int ok = worst <= 1.0 && finite == written;
    if (finite != written) printf("  cache: %zu finite entries, %zu written\n", finite, written);
    report("rope+kv", what, worst, ok);
}

/* ---- attention --------------------------------------------------------------------------------------- */

static void test_attention(int n_head, int n_head_kv, int hd, int n_tok, int n_ctx)
{
    const int n_slots = 4;
    const size_t cache_n = (size_t)n_slots * n_head_kv * n_ctx * hd;
    std::vector<__half> kc(cache_n), vc(cache_n);
    for (size_t i = 0; i < cache_n; i++) {
        kc[i] = __float2half(frand(-1.0f, 1.0f));
        vc[i] = __float2half(frand(-1.0f, 1.0f));
    }
    std::vector<float> q((size_t)n_tok * n_head * hd);
    for (auto &v : q) v = frand(-3.0f, 3.0f);
    std::vector<int> pos(n_tok), slot(n_tok);
    for (int t = 0; t < n_tok; t++) {
        slot[t] = (int)(rnd() % n_slots);
        pos[t] = t == 0 ? 0 : t == 1 ? n_ctx - 1 : (int)(rnd() % n_ctx);
    }
    dbuf<__half> dk(cache_n), dv(cache_n);
    dbuf<float> dq(q.size()), dout(q.size());
    dbuf<int> dpos(n_tok), dslot(n_tok);
    dk.put(kc.data());
    dv.put(vc.data());
    dq.put(q.data());
    dpos.put(pos.data());
    dslot.put(slot.data());
    bw_cu_attn a = {};
    a.q = dq.p;
    a.ldq = n_head * hd;
    a.k_cache = dk.p;
    a.v_cache = dv.p;
    a.pos = dpos.p;
    a.slot = dslot.p;
    a.out = dout.p;
    a.ldo = n_head * hd;
    a.n_head = n_head;
    a.n_head_kv = n_head_kv;
    a.head_dim = hd;
    a.n_ctx = n_ctx;
    a.scale = 1.0f / sqrtf((float)hd);
    CK(bw_cu_attention_prepare(n_ctx, hd));
    bw_cu_launch L = {0, 0, 0};
    CK(bw_cu_attention(L, a, n_tok));
    CK(cudaDeviceSynchronize());
    std::vector<float> out = dout.get();
    double worst = 0.0;
    for (int t = 0; t < n_tok; t++)
        for (int h = 0; h < n_head; h++) {
            const int kvh = h / (n_head / n_head_kv), n = pos[t] + 1;
            const size_t base = ((size_t)slot[t] * n_head_kv + kvh) * n_ctx * hd;
            std::vector<double> s(n);
            double mx = -INFINITY, sum = 0.0;
            for (int j = 0; j < n; j++) {
                double d = 0.0;
                for (int c = 0; c < hd; c++)
                    d += (double)q[((size_t)t * n_head + h) * hd + c] * __half2float(kc[base + (size_t)j * hd + c]);
                s[j] = d / sqrt((double)hd);
                mx = fmax(mx, s[j]);
            }
            for (int j = 0; j < n; j++) sum += (s[j] = exp(s[j] - mx));
            for (int c = 0; c < hd; c++) {
                double o = 0.0;
                for (int j = 0; j < n; j++) o += s[j] / sum * __half2float(vc[base + (size_t)j * hd + c]);
                const double e = fabs(out[((size_t)t * n_head + h) * hd + c] - o) / (1e-4 + 1e-6);
                if (!(e <= worst)) worst = isnan(e) ? INFINITY : fmax(worst, e);
            }
        }
    char what[128];
    snprintf(what, sizeof what, "heads %d/%d hd %d tok=%d ctx %d", n_head, n_head_kv, hd, n_tok, n_ctx);
    report("attention", what, worst, worst <= 1.0);
}

/* ---- embedding and top-2 ----------------------------------------------------------------------------- */

static void test_embed(int type)
{
    const int rows = 300, K = 96, n_tok = 5;
    std::vector<uint8_t> g = gguf_random(type, rows, K);
    dmat E(type, g, rows, K);
    std::vector<int> tok(n_tok);
    for (auto &t : tok) t = (int)(rnd() % rows);
    tok[0] = rows - 1;
    dbuf<int> dt(n_tok);
    dbuf<float> dx((size_t)n_tok * K);
    dt.put(tok.data());
    bw_cu_launch L = {0, 0, 0};
    CK(bw_cu_embed(L, E.m, dt.p, n_tok, dx.p));
    CK(cudaDeviceSynchronize());
    std::vector<float> x = dx.get();
    int bad = 0;
    for (int t = 0; t < n_tok; t++)
        for (int c = 0; c < K; c++) bad += x[(size_t)t * K + c] != gguf_get(type, g.data(), K, tok[t], c);
    char what[64];
    snprintf(what, sizeof what, "%s %d rows x %d, %d tokens (exact)", tname(type), rows, K, n_tok);
    report("embed", what, bad, bad == 0);
}

static void test_top2(int n_rows, int n)
{
    std::vector<float> l((size_t)n_rows * n);
    for (auto &v : l) v = frand(-10.0f, 10.0f);
    for (int r = 0; r < n_rows; r++) {
        float *row = &l[(size_t)r * n];
        if (r % 3 == 0) { /* a tie at the top: the lower id must win */
            row[n - 1] = 50.0f;
            row[n / 3] = 50.0f;
        } else if (r % 3 == 1) {
            row[n - 1] = 40.0f;
        }
    }
    dbuf<float> dl(l.size()), dv((size_t)2 * n_rows);
    dbuf<int> di((size_t)2 * n_rows);
    dl.put(l.data());
    bw_cu_launch L = {0, 0, 0};
    CK(bw_cu_top2(L, dl.p, n_rows, n, di.p, dv.p));
    CK(cudaDeviceSynchronize());
    std::vector<int> ids = di.get();
    std::vector<float> vals = dv.get();
    int bad = 0;
    for (int r = 0; r < n_rows; r++) {
        const float *row = &l[(size_t)r * n];
        int i1 = 0, i2 = -1;
        for (int k = 1; k < n; k++)
            if (row[k] > row[i1]) i1 = k;
        for (int k = 0; k < n; k++)
            if (k != i1 && (i2 < 0 || row[k] > row[i2])) i2 = k;
        bad += ids[2 * r] != i1 || ids[2 * r + 1] != i2 || vals[2 * r] != row[i1] || vals[2 * r + 1] != row[i2];
    }
    char what[64];
    snprintf(what, sizeof what, "%d rows x %d (exact, ties to the lower id)", n_rows, n);
    report("top2", what, bad, bad == 0);
}

/* ---- the numerics contract: device kernels vs the scalar mirror, bit for bit ---- */

static void test_contract(int type, int rows, int K, int n_tok, int use_norm)
{
    const int kind = type == BW_TYPE_Q4_0 ? BW_NM_Q4_0 : type == BW_TYPE_Q4_1 ? BW_NM_Q4_1 : BW_NM_Q8_0;
    const int nb = K / 32, ng = (nb + BW_NM_GROUP - 1) / BW_NM_GROUP;
    std::vector<uint8_t> w = gguf_random(type, rows, K);
    std::vector<float> x((size_t)n_tok * K), nw(K);
    for (auto &v : x) v = frand(-2.0f, 2.0f) * (rnd() % 13 == 0 ? 10.0f : 1.0f);
    for (auto &v : nw) v = frand(0.5f, 1.5f);
    if (n_tok > 2) std::fill(x.begin() + K, x.begin() + 2 * K, 0.0f); /* a zero row: zero blocks, scale 1/sqrt(eps) */
    const float eps = 1e-5f;

    /* the mirror */
    std::vector<int8_t> mq((size_t)n_tok * K);
    std::vector<uint16_t> md((size_t)n_tok * nb), ms((size_t)n_tok * nb);
    std::vector<float> my((size_t)n_tok * rows), g(bw_nm_fold_width(ng)), xn(K);
    for (int t = 0; t < n_tok; t++) {
        const float *xr = &x[(size_t)t * K];
        const float sc = use_norm ? bw_nm_rms_scale(xr, K, eps) : 1.0f;
        for (int k = 0; k < K; k++) xn[k] = use_norm ? bw_nm_normed(xr[k], sc, nw[k]) : xr[k];
        for (int b = 0; b < nb; b++)
            bw_nm_quant_block(&xn[b * 32], &mq[(size_t)t * K + b * 32], &md[(size_t)t * nb + b],
                              &ms[(size_t)t * nb + b]);
        for (int r = 0; r < rows; r++)
            my[(size_t)t * rows + r] =
                bw_nm_row_dot(kind, &w[(size_t)r * nb * bw_nm_block_bytes(kind)], nb, &mq[(size_t)t * K],
                              &md[(size_t)t * nb], &ms[(size_t)t * nb], g.data());
    }

    /* the device, whole batch and token 1 alone */
    uint8_t *dw;
    float *dx, *dn, *dy, *dy1;
    bw_cu_qrows a, a1;
    CK(cudaMalloc(&dw, w.size()));
    CK(cudaMalloc(&dx, x.size() * 4));
    CK(cudaMalloc(&dn, (size_t)K * 4));
    CK(cudaMalloc(&dy, my.size() * 4));
    CK(cudaMalloc(&dy1, (size_t)rows * 4));
    CK(cudaMalloc(&a.q, mq.size()));
    CK(cudaMalloc(&a.d, md.size() * 2));
    CK(cudaMalloc(&a.s, ms.size() * 2));
    CK(cudaMalloc(&a1.q, (size_t)K));
    CK(cudaMalloc(&a1.d, (size_t)nb * 2));
    CK(cudaMalloc(&a1.s, (size_t)nb * 2));
    CK(cudaMemcpy(dw, w.data(), w.size(), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dn, nw.data(), (size_t)K * 4, cudaMemcpyHostToDevice));
    CK(cudaMemset(dy, 0xff, my.size() * 4)); /* NaN: an unwritten output fails the comparison */
    CK(cudaMemset(dy1, 0xff, (size_t)rows * 4));
    CK(bw_cu_nm_prepare(0, dx, K, n_tok, K, use_norm ? dn : NULL, eps, a));
    CK(bw_cu_nm_matvec(0, kind, dw, rows, K, a, n_tok, dy, rows));
    const int t1 = n_tok > 1 ? 1 : 0;
    CK(bw_cu_nm_prepare(0, dx + (size_t)t1 * K, K, 1, K, use_norm ? dn : NULL, eps, a1));
    CK(bw_cu_nm_matvec(0, kind, dw, rows, K, a1, 1, dy1, rows));
    CK(cudaDeviceSynchronize());
    std::vector<int8_t> gq(mq.size());
    std::vector<uint16_t> gd(md.size()), gs(ms.size());
    std::vector<float> gy(my.size()), gy1(rows);
    CK(cudaMemcpy(gq.data(), a.q, gq.size(), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(gd.data(), a.d, gd.size() * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(gs.data(), a.s, gs.size() * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(gy.data(), dy, gy.size() * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(gy1.data(), dy1, gy1.size() * 4, cudaMemcpyDeviceToHost));
    int diff = 0;
    for (size_t i = 0; i < my.size(); i++) diff += memcmp(&my[i], &gy[i], 4) != 0;
    const int ok = memcmp(mq.data(), gq.data(), mq.size()) == 0 && memcmp(md.data(), gd.data(), md.size() * 2) == 0 &&
                   memcmp(ms.data(), gs.data(), ms.size() * 2) == 0 && diff == 0 &&
                   memcmp(gy1.data(), &gy[(size_t)t1 * rows], (size_t)rows * 4) == 0;
    char what[96];
    snprintf(what, sizeof what, "%s %dx%d, %d tok%s: memcmp vs mirror", tname(type), rows, K, n_tok,
             use_norm ? ", norm" : "");
    report("contract", what, (double)diff, ok);
    for (void *p : {(void *)dw, (void *)dx, (void *)dn, (void *)dy, (void *)dy1, (void *)a.q, (void *)a.d, (void *)a.s,
                    (void *)a1.q, (void *)a1.d, (void *)a1.s})
        CK(cudaFree(p));
}

/* ---- the device sampler: the same ids as bw_sample from the same logits ---- */

static void test_sampler(int nv, int n_rows)
{
    std::vector<float> lg((size_t)nv * n_rows);
    std::vector<bw_cu_sample_row> rows(n_rows);
    std::vector<bw_sampler_params> ps(n_rows);
    std::vector<int32_t> hist((size_t)n_rows * BW_CU_SAMPLE_HIST), hn(n_rows);
    for (int r = 0; r < n_rows; r++) {
        const float scale = frand(0.5f, 10.0f);
        for (int i = 0; i < nv; i++) {
            float v = (frand(-1.0f, 1.0f) + frand(-1.0f, 1.0f) + frand(-1.0f, 1.0f)) * scale;
            if (r % 4 == 0) v = roundf(v * 4.0f) / 4.0f; /* ties */
            lg[(size_t)r * nv + i] = v;
        }
        bw_sampler_params &p = ps[r];
        bw_sampler_defaults(&p);
        const float temps[] = {0.0f, 0.5f, 1.0f, 1.0f, 2.0f};
        const int32_t ks[] = {0, 1, 10, 100, 0};
        p.temperature = temps[rnd() % 5];
        p.top_k = ks[rnd() % 5];
        p.top_p = rnd() % 2 ? 1.0f : frand(0.1f, 0.99f);
        p.min_p = rnd() % 2 ? 0.0f : frand(0.0f, 0.3f);
        p.repetition_penalty = rnd() % 2 ? 1.0f : frand(0.8f, 1.5f);
        p.repeat_last_n = 64;
        p.seed = ((uint64_t)rnd() << 32) | rnd();
        hn[r] = (int32_t)(rnd() % 64);
        for (int i = 0; i < hn[r]; i++) hist[(size_t)r * BW_CU_SAMPLE_HIST + i] = (int32_t)(rnd() % (i % 2 ? nv : 50));
        rows[r] = {p.temperature, p.top_p, p.min_p, p.repetition_penalty, p.top_k, hn[r], p.seed, (uint64_t)r * 3};
    }
    float *dl;
    bw_cu_sample_row *dr;
    int32_t *dh, *dout;
    CK(cudaMalloc(&dl, lg.size() * 4));
    CK(cudaMalloc(&dr, rows.size() * sizeof(bw_cu_sample_row)));
    CK(cudaMalloc(&dh, hist.size() * 4));
    CK(cudaMalloc(&dout, (size_t)n_rows * 4));
    CK(cudaMemcpy(dl, lg.data(), lg.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dr, rows.data(), rows.size() * sizeof(bw_cu_sample_row), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dh, hist.data(), hist.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemset(dout, 0x7f, (size_t)n_rows * 4));
    CK(bw_cu_sample(0, dl, nv, (size_t)nv, n_rows, dr, dh, dout));
    CK(cudaDeviceSynchronize());
    std::vector<int32_t> got(n_rows);
    std::vector<float> pen(lg.size());
    CK(cudaMemcpy(got.data(), dout, (size_t)n_rows * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(pen.data(), dl, pen.size() * 4, cudaMemcpyDeviceToHost));
    bw_sampler *s = bw_sampler_create(nv);
    int bad = 0, fallback = 0;
    for (int r = 0; r < n_rows; r++) {
        std::vector<float> a(lg.begin() + (size_t)r * nv, lg.begin() + (size_t)(r + 1) * nv);
        const int32_t want =
            bw_sample(s, &ps[r], a.data(), &hist[(size_t)r * BW_CU_SAMPLE_HIST], (size_t)hn[r], (uint64_t)r * 3);
        int32_t g = got[r];
        if (g == -1) { /* the host path: the device-penalised row, no history */
            fallback++;
            std::vector<float> b(pen.begin() + (size_t)r * nv, pen.begin() + (size_t)(r + 1) * nv);
            g = bw_sample(s, &ps[r], b.data(), NULL, 0, (uint64_t)r * 3);
        }
        if (g != want) {
            if (bad++ < 3) printf("  row %d: device %d, bw_sample %d\n", r, got[r], want);
        }
    }
    bw_sampler_free(s);
    char what[96];
    snprintf(what, sizeof what, "vocab %d, %d rows (%d via host): ids as bw_sample", nv, n_rows, fallback);
    report("sample", what, (double)bad, bad == 0);
    for (void *p : {(void *)dl, (void *)dr, (void *)dh, (void *)dout}) CK(cudaFree(p));
}

int main(void)
{
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        printf("no CUDA device: skipped\n");
        return 0;
    }
    const char *seed = getenv("BW_TEST_SEED");
    g_rng = seed ? strtoull(seed, NULL, 10) : ((uint64_t)time(NULL) * 2654435761u) ^ (uint64_t)clock();
    if (!g_rng) g_rng = 1;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s (sm_%d%d), seed %llu\n", prop.name, prop.major, prop.minor, (unsigned long long)g_rng);

    const int types[] = {BW_TYPE_F32, BW_TYPE_F16, BW_TYPE_BF16, BW_TYPE_Q4_0, BW_TYPE_Q4_1, BW_TYPE_Q8_0};
    for (int type : types) {
        test_matmul(type, 130, 576, 1, 1, BW_EPI_STORE, 0);
        test_matmul(type, 67, 1536, 3, 0, BW_EPI_ADD, 0);
        test_matmul(type, 64, 256, 13, 1, BW_EPI_STORE, 1);
        test_matmul(type, 96, 320, 8, 1, BW_EPI_SWIGLU, 0);
        test_matmul(type, 40, 12800, 2, 0, BW_EPI_STORE, 0); /* activations past 48 KiB of smem */
        test_embed(type);
    }
    test_matmul(BW_TYPE_Q4_1, 256, 576, 64, 1, BW_EPI_ADD, 0);
    /* The warp kernel at prefill size: 38 token chunks share a grid bounded as a whole (one block per chunk
     * walks every unit), every lane of a chunk finishing its own token. */
    test_matmul(BW_TYPE_Q4_1, 192, 576, 300, 1, BW_EPI_SWIGLU, 0);
    test_matmul(BW_TYPE_Q8_0, 70, 1536, 257, 0, BW_EPI_ADD, 1);
    /* The tensor-core tile kernel (batches above 8 tokens when asked for): every token-tile width (16,
     * 32, 64 tokens), partial row and token tiles, gathered rows, every epilogue. */
    const int qtypes[] = {BW_TYPE_Q4_0, BW_TYPE_Q4_1, BW_TYPE_Q8_0};
    g_mma = 1;
    for (int type : qtypes) {
        test_matmul(type, 130, 576, 12, 1, BW_EPI_STORE, 1);
        test_matmul(type, 67, 1536, 40, 0, BW_EPI_ADD, 0);
        test_matmul(type, 192, 320, 300, 1, BW_EPI_SWIGLU, 0);
        test_matmul(type, 70, 576, 257, 1, BW_EPI_ADD, 1);
    }
    test_qkv(BW_TYPE_Q4_1, 9, 3, 64, 64, 15, 0);
    test_qkv(BW_TYPE_Q8_0, 4, 2, 64, 32, 13, 1);
    g_mma = 0;
    test_qkv(BW_TYPE_Q4_1, 9, 3, 64, 64, 1, 0);
    test_qkv(BW_TYPE_Q4_1, 9, 3, 64, 64, 40, 0); /* five full chunks of 8: RoPE on eight lanes at once */
    test_qkv(BW_TYPE_Q4_0, 4, 2, 64, 32, 11, 1);
    test_qkv(BW_TYPE_F16, 4, 4, 128, 128, 5, 0);
    test_attention(9, 3, 64, 1, 700);
    test_attention(9, 3, 64, 37, 129);
    test_attention(8, 2, 128, 5, 300);
    test_attention(4, 4, 96, 3, 50);
    test_attention(2, 1, 64, 2, 20000); /* a long context */
    test_attention(9, 3, 64, 300, 512); /* a prefill chunk */
    test_attention(2, 2, 256, 3, 100);
    test_attention(2, 1, 8, 3, 70);
    test_top2(5, 49152);
    test_top2(3, 1000);
    test_sampler(49152, 64);
    test_sampler(1000, 200);
    test_sampler(128256, 8);
    /* The contract: the default model's widths (576, 1536), Llama-3-8B's (4096, 14336: 56 groups, a fold
     * of width 64 with in-lane steps), one token, a few, a 64-slot step. */
    for (int type : qtypes) {
        test_contract(type, 67, 576, 1, 1);
        test_contract(type, 45, 1536, 7, 0);
        test_contract(type, 33, 4096, 64, 1);
        test_contract(type, 9, 14336, 3, 0);
        test_contract(type, 130, 32, 5, 1);
    }
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
