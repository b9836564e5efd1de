/* Sampler behaviour: greedy is argmax, the random stream is a pure function of (seed, index), each filter
 * (top-k, top-p, min-p, repetition penalty) removes exactly what it should, and draws follow the softmax. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/sampler.h"

#include "check.h"

#define NV 1000

static void fill(float *l, unsigned seed)
{
    srand(seed);
    for (int i = 0; i < NV; i++) l[i] = (float)rand() / RAND_MAX * 4.0f - 2.0f;
}

static int32_t draw(bw_sampler *s, const bw_sampler_params *p, const float *src, uint64_t index)
{
    float l[NV];
    memcpy(l, src, sizeof l);
    return bw_sample(s, p, l, NULL, 0, index);
}

int main(void)
{
    bw_sampler *s = bw_sampler_create(NV);
    bw_sampler_params p;
    float base[NV];
    fill(base, 7);
    base[123] = 9.0f; /* a clear winner */

    bw_sampler_defaults(&p);
    p.temperature = 0.0f;
    CHECK(draw(s, &p, base, 0) == 123, "greedy is not the argmax");

    /* uniform draws: pure function of (seed, index), in [0,1), not constant */
    CHECK(bw_sampler_uniform(1, 5) == bw_sampler_uniform(1, 5), "same (seed, index) gave two values");
    CHECK(bw_sampler_uniform(1, 5) != bw_sampler_uniform(1, 6), "index does not change the draw");
    CHECK(bw_sampler_uniform(1, 5) != bw_sampler_uniform(2, 5), "seed does not change the draw");
    double mean = 0;
    for (int i = 0; i < 100000; i++) {
        double u = bw_sampler_uniform(42, (uint64_t)i);
        CHECK(u >= 0.0 && u < 1.0, "draw %g out of [0,1)", u);
        mean += u;
    }
    mean /= 100000;
    CHECK(fabs(mean - 0.5) < 0.01, "uniform mean %f", mean);

    /* a resumed job (same seed, same index) draws the same token whatever came before */
    bw_sampler_defaults(&p);
    p.seed = 99;
    fill(base, 8);
    int32_t a = draw(s, &p, base, 17);
    for (int i = 0; i < 5; i++) draw(s, &p, base, (uint64_t)i);
    CHECK(draw(s, &p, base, 17) == a, "draw at index 17 depends on earlier draws");

    /* top-k = 1 and a tiny top-p are greedy */
    fill(base, 9);
    int best = 0;
    for (int i = 1; i < NV; i++)
        if (base[i] > base[best]) best = i;
    p.top_k = 1;
    for (int i = 0; i < 50; i++) CHECK(draw(s, &p, base, (uint64_t)i) == best, "top_k=1 is not greedy");
    p.top_k = 0;
    p.top_p = 1e-6f;
    for (int i = 0; i < 50; i++) CHECK(draw(s, &p, base, (uint64_t)i) == best, "tiny top_p is not greedy");
    p.top_p = 1.0f;

    /* top-k = 3 only ever yields the 3 best */
    float three[NV];
    for (int i = 0; i < NV; i++) three[i] = 0.0f;
    three[10] = 5.0f, three[20] = 4.9f, three[30] = 4.8f;
    p.top_k = 3;
    int seen[3] = {0};
    for (int i = 0; i < 3000; i++) {
        int32_t t = draw(s, &p, three, (uint64_t)i);
        CHECK(t == 10 || t == 20 || t == 30, "top_k=3 drew %d", t);
        seen[t / 10 - 1]++;
    }
    CHECK(seen[0] && seen[1] && seen[2], "top_k=3 never drew one of the three");
    p.top_k = 0;

    /* min-p 0.5 removes tokens less than half as likely as the best */
    float mp[NV];
    for (int i = 0; i < NV; i++) mp[i] = -50.0f;
    mp[1] = 0.0f, mp[2] = logf(0.6f), mp[3] = logf(0.4f);
    p.min_p = 0.5f;
    for (int i = 0; i < 2000; i++) {
        int32_t t = draw(s, &p, mp, (uint64_t)i);
        CHECK(t == 1 || t == 2, "min_p kept token %d", t);
    }
    p.min_p = 0.0f;

    /* draws follow softmax(logits / T): two tokens with logit gap ln 3 at T=1 → 3:1 */
    float two[NV];
    for (int i = 0; i < NV; i++) two[i] = -60.0f;
    two[5] = logf(3.0f), two[6] = 0.0f;
    int n5 = 0, n6 = 0;
    for (int i = 0; i < 40000; i++) {
        int32_t t = draw(s, &p, two, (uint64_t)i);
        n5 += t == 5;
        n6 += t == 6;
    }
    double ratio = (double)n5 / n6;
    CHECK(n5 + n6 == 40000 && fabs(ratio - 3.0) < 0.15, "softmax ratio %.3f (want 3)", ratio);
    /* T = 0.5 squares the odds → 9:1 */
    p.temperature = 0.5f;
    n5 = n6 = 0;
    for (int i = 0; i < 40000; i++) {
        int32_t t = draw(s, &p, two, (uint64_t)i);
        n5 += t == 5;
        n6 += t == 6;
    }
    ratio = (double)n5 / n6;
    CHECK(fabs(ratio - 9.0) < 0.6, "T=0.5 ratio %.3f (want 9)", ratio);

    /* repetition penalty: positive logits divided, negative multiplied, once per distinct token */
    bw_sampler_defaults(&p);
    p.temperature = 0.0f;
    p.repetition_penalty = 2.0f;
    float rp[NV];
    for (int i = 0; i < NV; i++) rp[i] = -10.0f;
    rp[1] = 4.0f, rp[2] = 3.0f, rp[3] = -1.0f;
    int32_t hist[] = {1, 1, 1, 3};
    CHECK(bw_sample(s, &p, rp, hist, 4, 0) == 2, "penalised token still won");
    CHECK(rp[1] == 2.0f && rp[3] == -2.0f && rp[2] == 3.0f, "penalty values %g %g %g", rp[1], rp[2], rp[3]);

    bw_sampler_free(s);
    printf("sampler: %s\n", check_failed ? "FAILED" : "all checks passed");
    return check_failed != 0;
}
