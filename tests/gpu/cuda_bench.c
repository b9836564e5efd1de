/* CUDA backend throughput through the backend interface, for tests/gpu/run.sh:
 *  - time to first token: a P-token prompt prefilled in one forward call, logits of the last token
 *    copied back (median of 5), and the prefill rate that gives;
 *  - batch-1 decode: N greedy steps after that prompt, with the argmax on the device (the serving
 *    path) and, separately, with the full logits row copied back each step;
 *  - aggregate decode with S concurrent sequences (one token per slot per step).
 * The last line is "BENCH {json}" for the summary table.
 * For a per-kernel profile (ncu --profile-from-start off), "-d decode" prefills P tokens and then runs N
 * batch-1 decode steps between cudaProfilerStart and cudaProfilerStop; "-d prefill" profiles N
 * prefills of the P-token prompt instead.
 * Usage: cuda_bench MODEL [-p P] [-n N] [-s S] [-d decode|prefill]   ("no CUDA device: skipped" without a GPU) */
#include <cuda_profiler_api.h>
#include <string.h>

#include "cuda_common.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int P = 512, N = 128, S = 64;
    const char *profile = NULL;
    const char *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-p") && i + 1 < argc) P = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) N = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-s") && i + 1 < argc) S = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-d") && i + 1 < argc) profile = argv[++i];
        else model = argv[i];
    }
    if (!model || P < 1 || N < 1 || S < 1 || (profile && strcmp(profile, "decode") && strcmp(profile, "prefill"))) {
        fprintf(stderr, "usage: cuda_bench MODEL [-p P] [-n N] [-s S] [-d decode|prefill]\n");
        return 2;
    }
    if (!bw_backend_cuda_available()) {
        printf("no CUDA device: skipped\n");
        return 0;
    }
    gpu_tool_model tm;
    if (gpu_tool_load(&tm, model) != 0) return 1;
    const int nv = tm.m.cfg.n_vocab, ctx = P + N + 8;
    bw_backend *b = gpu_tool_backend(&tm, 1, S, ctx, P > S ? P : S);
    if (!b) return 1;
    float *logits = malloc(sizeof(float) * (size_t)nv * (size_t)(S > 1 ? S : 1));
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)(P + S)), *pos = malloc(sizeof(int32_t) * (size_t)(P + S));
    int32_t *slot = malloc(sizeof(int32_t) * (size_t)(P + S)), *ids = malloc(sizeof(int32_t) * 2 * (size_t)S);
    float *vals = malloc(sizeof(float) * 2 * (size_t)S);
    uint8_t *want = malloc((size_t)(P + S));
    for (int i = 0; i < P; i++) {
        tok[i] = (int32_t)((1000 + (int64_t)i * 7919) % nv);
        pos[i] = i;
        slot[i] = 0;
        want[i] = i == P - 1;
    }
    bw_batch pre = {P, tok, pos, slot, want};

    /* Warm-up: first use of each kernel, and graph capture for the step sizes used below. */
    if (bw_backend_forward(b, &pre, logits) != 0) return 1;
    if (profile) {
        int32_t t1 = 1, p1 = P, s1 = 0;
        uint8_t w1 = 1;
        bw_batch one = {1, &t1, &p1, &s1, &w1};
        const int decode = !strcmp(profile, "decode");
        if (decode && bw_backend_cuda_forward_top2(b, &one, ids, vals) != 0) return 1; /* capture outside */
        cudaProfilerStart();
        for (int s = 0; s < N; s++) {
            p1 = P + 1 + s;
            if (decode ? bw_backend_cuda_forward_top2(b, &one, ids, vals) : bw_backend_forward(b, &pre, logits))
                return 1;
            t1 = ids[0];
        }
        cudaProfilerStop();
        printf("profiled %d %s steps (prompt of %d tokens)\n", N, profile, P);
        bw_backend_destroy(b);
        return 0;
    }
    double t_pre[5];
    for (int r = 0; r < 5; r++) {
        double t0 = gpu_tool_now();
        if (bw_backend_forward(b, &pre, logits) != 0) return 1;
        t_pre[r] = gpu_tool_now() - t0;
    }
    qsort(t_pre, 5, sizeof(double), cmp_double);
    const double ttft = t_pre[2];

    /* Batch-1 decode, argmax on the device. */
    double rate1[2];
    for (int mode = 0; mode < 2; mode++) {
        int32_t t1 = 1, p1, s1 = 0;
        uint8_t w1 = 1;
        bw_batch one = {1, &t1, &p1, &s1, &w1};
        p1 = P;
        if (bw_backend_cuda_forward_top2(b, &one, ids, vals) != 0) return 1; /* capture */
        double t0 = gpu_tool_now();
        for (int s = 0; s < N; s++) {
            p1 = P + s;
            int rc = mode == 0 ? bw_backend_cuda_forward_top2(b, &one, ids, vals) : bw_backend_forward(b, &one, logits);
            if (rc != 0) return 1;
            t1 = mode == 0 ? ids[0] : 1 + s % 1000;
        }
        rate1[mode] = N / (gpu_tool_now() - t0);
    }

    /* S sequences: a 32-token prompt each, then N steps of S tokens. */
    const int L0 = 32;
    double rate_s = 0.0;
    {
        /* Prompts in chunks of at most P tokens; a slot's prompt may span two chunks, in order. */
        int n = 0;
        for (int s = 0; s < S; s++)
            for (int k = 0; k < L0; k++) {
                tok[n] = (int32_t)((7 + (int64_t)s * 131 + k * 17) % nv);
                pos[n] = k;
                slot[n] = s;
                want[n] = 0;
                if (++n == P || (s == S - 1 && k == L0 - 1)) {
                    bw_batch c = {n, tok, pos, slot, want};
                    if (bw_backend_forward(b, &c, NULL) != 0) return 1;
                    n = 0;
                }
            }
        for (int s = 0; s < S; s++) {
            tok[s] = 1;
            pos[s] = L0;
            slot[s] = s;
            want[s] = 1;
        }
        bw_batch step = {S, tok, pos, slot, want};
        if (bw_backend_cuda_forward_top2(b, &step, ids, vals) != 0) return 1; /* capture */
        double t0 = gpu_tool_now();
        for (int it = 0; it < N; it++) {
            for (int s = 0; s < S; s++) {
                tok[s] = ids[2 * s];
                pos[s] = L0 + 1 + it;
            }
            if (bw_backend_cuda_forward_top2(b, &step, ids, vals) != 0) return 1;
        }
        rate_s = (double)N * S / (gpu_tool_now() - t0);
    }

    printf("prefill %d tokens: %.3f ms to first token (%.0f tokens/s)\n", P, ttft * 1e3, P / ttft);
    printf("decode batch 1 after %d tokens: %.0f tokens/s (argmax on device), %.0f tokens/s (logits copied)\n", P,
           rate1[0], rate1[1]);
    printf("decode %d sequences: %.0f tokens/s aggregate\n", S, rate_s);
    printf("BENCH {\"prompt\":%d,\"gen\":%d,\"slots\":%d,\"ttft_ms\":%.4f,\"prefill_tok_s\":%.1f,"
           "\"decode1_tok_s\":%.1f,\"decode1_logits_tok_s\":%.1f,\"decodeS_tok_s\":%.1f}\n",
           P, N, S, ttft * 1e3, P / ttft, rate1[0], rate1[1], rate_s);
    bw_backend_destroy(b);
    return 0;
}
