/* Generation rules on the real tokenizer: text deltas concatenate to the detokenized output, a stop string
 * is never emitted (and text that might start one is held back only until it cannot), UTF-8 sequences
 * split across tokens are released whole, EOS and max_tokens end the job. Logits are forced so that the
 * greedy sampler picks a chosen token at each step.
 * usage: test_generate MODEL.gguf   (exit 77 = skipped: model absent) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/detok.h"
#include "engine/generate.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"

#include "check.h"

static const bw_tok *tok;
static int nv;

/* Feeds `text` token by token through a job; returns the concatenated released text. */
static char *run(const char *text, const bw_gen_params *gp, int force_eos_after, enum bw_stop_reason *why, int *n_steps)
{
    int32_t ids[512];
    int32_t n = bw_tok_encode(tok, text, strlen(text), 0, 0, ids, 512);
    int32_t prompt = ids[0];
    bw_gen *g = bw_gen_create(tok, gp, &prompt, 1, 0);
    bw_sampler *s = bw_sampler_create(nv);
    float *logits = malloc((size_t)nv * sizeof *logits);
    static char out[4096];
    size_t len = 0;
    *why = BW_STOP_NONE;
    *n_steps = 0;
    for (int32_t i = 0; i < n + 1 && *why == BW_STOP_NONE; i++) {
        int32_t want = i < n && i != force_eos_after ? ids[i] : bw_tok_eos(tok);
        for (int v = 0; v < nv; v++) logits[v] = -10.0f;
        logits[want] = 10.0f;
        bw_gen_token t;
        CHECK(bw_gen_next(g, s, logits, &t) == 0, "bw_gen_next failed");
        CHECK(t.index == i, "index %d at step %d", t.index, i);
        memcpy(out + len, t.text, t.text_len);
        len += t.text_len;
        *why = t.stop;
        (*n_steps)++;
    }
    out[len] = '\0';
    bw_gen_free(g);
    bw_sampler_free(s);
    free(logits);
    return out;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : getenv("BW_MODEL");
    char err[256];
    bw_gguf *gg = path ? bw_gguf_open(path, err, sizeof err) : NULL;
    if (!gg) {
        printf("skipped: model not available (%s)\n", path ? err : "no path given");
        return 77;
    }
    bw_tok *t = bw_tok_load(gg, err, sizeof err);
    if (!t) {
        printf("FAIL: tokenizer: %s\n", err);
        return 1;
    }
    tok = t;
    nv = bw_tok_n_vocab(t);

    bw_gen_params gp;
    bw_gen_params_defaults(&gp);
    gp.sampling.temperature = 0.0f;
    gp.max_tokens = 1000;
    enum bw_stop_reason why;
    int steps;

    const char *text = "Hello world! The end is near, said the bee. 🐝 Ünïcødé 日本語";
    char *o = run(text, &gp, -1, &why, &steps);
    CHECK(why == BW_STOP_EOS, "no EOS stop (%s)", bw_stop_reason_name(why));
    CHECK(strcmp(o, text) == 0, "text deltas '%s' != '%s'", o, text);

    gp.n_stop = 2;
    strcpy(gp.stop[0], "end is");
    strcpy(gp.stop[1], "never matches");
    o = run(text, &gp, -1, &why, &steps);
    CHECK(why == BW_STOP_SEQUENCE, "stop string not matched (%s)", bw_stop_reason_name(why));
    CHECK(strcmp(o, "Hello world! The ") == 0, "released '%s'", o);

    gp.n_stop = 1;
    strcpy(gp.stop[0], "bee. 🐝");
    o = run(text, &gp, -1, &why, &steps);
    CHECK(why == BW_STOP_SEQUENCE && strcmp(o, "Hello world! The end is near, said the ") == 0,
          "multi-byte stop: released '%s'", o);

    gp.n_stop = 0;
    gp.max_tokens = 3;
    o = run(text, &gp, -1, &why, &steps);
    CHECK(why == BW_STOP_MAX_TOKENS && steps == 3, "max_tokens=3 stopped after %d (%s)", steps,
          bw_stop_reason_name(why));

    gp.max_tokens = 1000;
    o = run(text, &gp, 2, &why, &steps);
    CHECK(why == BW_STOP_EOS && steps == 3, "EOS at step 2: %d steps (%s)", steps, bw_stop_reason_name(why));

    /* an emoji made of several byte-level tokens: no delta may end inside it */
    int32_t ids[64];
    int32_t n = bw_tok_encode(t, "🐝🐝", strlen("🐝🐝"), 0, 0, ids, 64);
    bw_detok d;
    bw_detok_init(&d);
    char buf[64];
    int partial = 0;
    for (int32_t i = 0; i < n; i++) {
        int k = bw_detok_push(&d, t, ids[i], buf, sizeof buf);
        CHECK(k == 0 || k == 4 || k == 8, "delta of %d bytes splits the emoji", k);
        partial += k == 0;
    }
    printf("emoji pair: %d tokens, %d held back\n", n, partial);

    bw_tok_free(t);
    bw_gguf_close(gg);
    printf("generate: %s\n", check_failed ? "FAILED" : "all checks passed");
    return check_failed != 0;
}
