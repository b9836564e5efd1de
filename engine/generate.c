/* Per-job generation state: history, stop rules and the text released to the client.
 *
 * Text flows token → detokenizer (whole UTF-8 sequences only) → `held` → released. `held` keeps the tail
 * that could still turn out to be the start of a stop string; everything before it is released with the
 * current token, so a token's text leaves with that token unless a stop string might be forming. */
#include "engine/generate.h"

#include <stdlib.h>
#include <string.h>

#include "engine/detok.h"

struct bw_gen {
    const bw_tok *tok;
    bw_gen_params p;
    int32_t *hist; /* prompt followed by generated tokens */
    size_t n_hist, cap_hist, n_prompt;
    int32_t next_index;
    bw_detok detok;
    char *held; /* text not yet released (a possible stop-string prefix) */
    size_t n_held, cap_held;
    char *out; /* what bw_gen_next returns */
    size_t cap_out;
};

void bw_gen_params_defaults(bw_gen_params *p)
{
    memset(p, 0, sizeof *p);
    bw_sampler_defaults(&p->sampling);
    p->max_tokens = 128;
}

static int grow(void **buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *n = realloc(*buf, c * elem);
    if (!n) return -1;
    *buf = n;
    *cap = c;
    return 0;
}

bw_gen *bw_gen_create(const bw_tok *tok, const bw_gen_params *p, const int32_t *prompt, size_t n_prompt,
                      int32_t first_index)
{
    bw_gen *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->tok = tok;
    g->p = *p;
    g->next_index = first_index;
    bw_detok_init(&g->detok);
    if (grow((void **)&g->hist, &g->cap_hist, n_prompt + (size_t)p->max_tokens + 1, sizeof *g->hist) ||
        grow((void **)&g->held, &g->cap_held, 256, 1) || grow((void **)&g->out, &g->cap_out, 256, 1)) {
        bw_gen_free(g);
        return NULL;
    }
    memcpy(g->hist, prompt, n_prompt * sizeof *prompt);
    g->n_hist = g->n_prompt = n_prompt;
    return g;
}

void bw_gen_free(bw_gen *g)
{
    if (!g) return;
    free(g->hist);
    free(g->held);
    free(g->out);
    free(g);
}

const int32_t *bw_gen_tokens(const bw_gen *g, size_t *n)
{
    *n = g->n_hist;
    return g->hist;
}

int32_t bw_gen_n_generated(const bw_gen *g) { return g->next_index; }

static int held_append(bw_gen *g, const char *s, size_t n)
{
    if (grow((void **)&g->held, &g->cap_held, g->n_held + n + 1, 1)) return -1;
    memcpy(g->held + g->n_held, s, n);
    g->n_held += n;
    g->held[g->n_held] = '\0';
    return 0;
}

/* Moves the first n bytes of `held` to the output. */
static int release(bw_gen *g, size_t n, bw_gen_token *out)
{
    if (grow((void **)&g->out, &g->cap_out, n + 1, 1)) return -1;
    memcpy(g->out, g->held, n);
    g->out[n] = '\0';
    memmove(g->held, g->held + n, g->n_held - n);
    g->n_held -= n;
    out->text = g->out;
    out->text_len = n;
    return 0;
}

/* Length of the longest suffix of held that is a proper prefix of some stop string. */
static size_t stop_prefix_tail(const bw_gen *g)
{
    size_t best = 0;
    for (int i = 0; i < g->p.n_stop; i++) {
        size_t sl = strlen(g->p.stop[i]);
        if (sl == 0) continue;
        size_t max = sl - 1 < g->n_held ? sl - 1 : g->n_held;
        for (size_t k = max; k > best; k--) {
            if (memcmp(g->held + g->n_held - k, g->p.stop[i], k) == 0) {
                best = k;
                break;
            }
        }
    }
    return best;
}

/* Earliest occurrence of any stop string in held: its offset, or -1. */
static long find_stop(const bw_gen *g, int *which)
{
    long best = -1;
    for (int i = 0; i < g->p.n_stop; i++) {
        if (!g->p.stop[i][0]) continue;
        const char *hit = memmem(g->held, g->n_held, g->p.stop[i], strlen(g->p.stop[i]));
        if (hit && (best < 0 || hit - g->held < best)) {
            best = hit - g->held;
            *which = i;
        }
    }
    return best;
}

const bw_sampler_params *bw_gen_sampling(const bw_gen *g) { return &g->p.sampling; }

const int32_t *bw_gen_history(const bw_gen *g, size_t *n)
{
    *n = g->n_hist;
    return g->hist;
}

uint64_t bw_gen_draw_index(const bw_gen *g) { return (uint64_t)g->next_index; }

int bw_gen_next(bw_gen *g, bw_sampler *s, float *logits, bw_gen_token *out)
{
    return bw_gen_accept(g, bw_sample(s, &g->p.sampling, logits, g->hist, g->n_hist, (uint64_t)g->next_index), out);
}

int bw_gen_accept(bw_gen *g, int32_t id, bw_gen_token *out)
{
    memset(out, 0, sizeof *out);
    out->text = "";
    out->index = g->next_index;
    out->id = id;
    g->next_index++;

    char piece[256];
    if (bw_tok_is_eog(g->tok, id)) {
        int n = bw_detok_flush(&g->detok, piece, sizeof piece);
        if (n > 0 && held_append(g, piece, (size_t)n)) return -1;
        out->stop = BW_STOP_EOS;
        return release(g, g->n_held, out);
    }
    g->hist[g->n_hist++] = id;

    int n = bw_detok_push(&g->detok, g->tok, id, piece, sizeof piece);
    if (n < 0 || held_append(g, piece, (size_t)n)) return -1;

    int which = 0;
    long at = find_stop(g, &which);
    if (at >= 0) {
        out->stop = BW_STOP_SEQUENCE;
        out->stop_matched = g->p.stop[which];
        g->n_held = (size_t)at + strlen(g->p.stop[which]); /* drop what follows the match */
        if (release(g, (size_t)at, out)) return -1;
        g->n_held = 0;
        return 0;
    }
    if (g->next_index >= g->p.max_tokens) {
        n = bw_detok_flush(&g->detok, piece, sizeof piece);
        if (n > 0 && held_append(g, piece, (size_t)n)) return -1;
        out->stop = BW_STOP_MAX_TOKENS;
        return release(g, g->n_held, out);
    }
    return release(g, g->n_held - stop_prefix_tail(g), out);
}
