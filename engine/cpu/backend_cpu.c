/* The CPU backend: the transformer forward pass over a batch of tokens from any number of slots.
 *
 * Reads top to bottom like the paper. For each layer, every token of the batch goes through
 *   q, k, v = Wq·n(x) + bq, Wk·n(x) + bk, Wv·n(x) + bv               n = RMSNorm, biases optional
 *   h = x + p(Wo · attention(rope(nq(q)), rope(nk(k)), v))            nq, nk: optional per-head norms
 *   x = h + p(Wdown · (act(Wgate·n(h)) ⊙ Wup·n(h)))                   p: optional post-norm, act silu|gelu
 * and the tokens that want logits go through the final norm and the output matrix (then an optional
 * soft cap). Which of the optional parts a model has, its rope style and scales, and which layers attend
 * through a sliding window, come from the model description (engine/model.h): llama, qwen2, qwen3, phi3
 * and gemma3 all run through this one function. The products run the
 * whole batch at once (prefill is a matrix-matrix product). Attention runs in parallel over (token, KV
 * head, span of ATTN_SPAN positions): the query heads that share a KV head read its cache rows once,
 * and a long context splits into spans that are merged in order, so its cost spreads over the threads.
 *
 * KV cache layout: k[slot][layer][pos][kv_dim] (same for v), float32, allocated lazily by the OS
 * (calloc of a large block maps zero pages on first touch), so resident memory follows use. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/pool.h"

typedef struct {
    bw_backend base;
    bw_pool *pool;
    int n_batch; /* tokens per internal chunk */
    int kv_dim;
    float *k_cache, *v_cache;
    /* activations for one chunk of n_batch tokens */
    float *x, *xn, *q, *k, *v, *att, *hb, *hb2;
    /* attention (see attention_task) */
    float *scores;          /* per thread: n_head x (ATTN_SPAN scores + head_dim outputs + max + sum) */
    float *partial;         /* per span of a multi-span token: head_dim outputs, max, sum for each head */
    atomic_int *spans_left; /* per (token, KV head) of a chunk: spans not yet done */
    int *attn_run0;         /* per run of a chunk's tokens (see attention()), and one past: its first token */
    int *attn_item0;        /* per run, and one past: its first work item */
    size_t *attn_part0;     /* per token of a chunk, and one past: its first float in partial */
    size_t partial_floats;
    void *scratch; /* quantized activations for bw_matmul */
} cpu_backend;

static size_t cache_index(const cpu_backend *c, int slot, int layer, int pos)
{
    const bw_model_config *cfg = &c->base.model->cfg;
    return (((size_t)slot * cfg->n_layer + layer) * c->base.params.n_ctx + pos) * c->kv_dim;
}

/* Rotates pairs of each head's first n_rot values by pos·base^(-2i/n_rot): the pairs (2i, 2i+1) in the
 * llama ("normal") style, (i, i + n_rot/2) in the NEOX style. The angle is built by repeated
 * multiplication in float, as the reference implementation does, so the rounding matches it. */
static void rope(const bw_model *m, const bw_layer_weights *w, float *v, int n_heads, int pos)
{
    const bw_model_config *cfg = &m->cfg;
    const float theta_scale = powf(w->rope_base, -2.0f / (float)cfg->n_rot);
    const float freq_scale = 1.0f / w->rope_scale;
    const int half = cfg->n_rot / 2, neox = cfg->rope_style == BW_ROPE_NEOX;
    for (int h = 0; h < n_heads; h++) {
        float *hv = v + (size_t)h * cfg->head_dim;
        float theta = (float)pos;
        for (int i = 0; i < half; i++) {
            float t = freq_scale * theta;
            if (m->rope_freqs) t /= m->rope_freqs[i];
            const float c = cosf(t), s = sinf(t);
            const int ia = neox ? i : 2 * i, ib = neox ? i + half : 2 * i + 1;
            const float a = hv[ia], b = hv[ib];
            hv[ia] = a * c - b * s;
            hv[ib] = a * s + b * c;
            theta *= theta_scale;
        }
    }
}

/* GeGLU over n values in place: gate = gelu(gate) * up, GELU's tanh approximation (gemma's FFN). A tanhf
 * per value is worth spreading over the threads in a prefill. */
typedef struct {
    float *gate;
    const float *up;
    size_t n;
} geglu_job;

static void geglu_task(void *ctx, int ith, int nth)
{
    const geglu_job *j = ctx;
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    const size_t lo = j->n * (size_t)ith / (size_t)nth, hi = j->n * (size_t)(ith + 1) / (size_t)nth;
    for (size_t i = lo; i < hi; i++) {
        const float x = j->gate[i];
        j->gate[i] = 0.5f * x * (1.0f + tanhf(k * x * (1.0f + 0.044715f * x * x))) * j->up[i];
    }
}

/* Positions per attention work item. Fixed, so how a token's attention is split and merged depends only
 * on its position, never on the batch around it or the thread count. */
#define ATTN_SPAN 256

static int attn_spans(int pos) { return pos / ATTN_SPAN + 1; }

#define ATTN_RUN_MAX 16 /* tokens per run: a work item's share of tokens */

typedef struct {
    cpu_backend *c;
    const bw_batch *batch;
    int first, t0, n, layer; /* tokens [first, first + n) of the batch, rows t0.. of the chunk's buffers */
    int n_runs, n_items;
    atomic_int next;
} attn_job;

/* Merges the spans of one head in span order into out:
 *   out = sum_s o_s * exp(m_s - M) / sum_s l_s * exp(m_s - M),  M = max_s m_s
 * part holds span s at part + s * (hd + 2): its hd outputs, then m_s, then l_s. */
static void attn_merge(const float *part, int n_spans, int hd, float *out)
{
    const size_t st = (size_t)hd + 2;
    float mx = -INFINITY, sum = 0.0f;
    for (int s = 0; s < n_spans; s++) mx = fmaxf(mx, part[s * st + hd]);
    for (int i = 0; i < hd; i++) out[i] = 0.0f;
    for (int s = 0; s < n_spans; s++) {
        const float *ps = part + s * st, w = expf(ps[hd] - mx);
        sum += ps[hd + 1] * w;
        for (int i = 0; i < hd; i++) out[i] += ps[i] * w;
    }
    const float inv = 1.0f / sum;
    for (int i = 0; i < hd; i++) out[i] *= inv;
}

/* Span s of KV head g for token t of the chunk (t: index from j->first). A token with a single span writes
 * its outputs at once (o / l: what the merge gives for one span). Otherwise each span leaves its group's
 * results in c->partial and the last of the (token, KV head)'s spans to finish merges them. */
static void attend_span(const attn_job *j, float *scores, int t, int g, int s)
{
    cpu_backend *c = j->c;
    const bw_model_config *cfg = &c->base.model->cfg;
    const int hd = cfg->head_dim, group = cfg->n_head / cfg->n_head_kv;
    const size_t st = (size_t)hd + 2;
    /* a sliding-window layer sees positions pos - n_swa + 1 .. pos; spans below that are empty */
    const int window = c->base.model->layers[j->layer].swa ? cfg->n_swa : 0;
    float *o = scores + (size_t)cfg->n_head * ATTN_SPAN, *m = o + (size_t)cfg->n_head * hd, *l = m + cfg->n_head;
    const int bt = j->first + t, pos = j->batch->pos[bt], n_spans = attn_spans(pos);
    const int row = j->t0 + t; /* in c->q and c->att */
    const int end = s + 1 == n_spans ? pos + 1 : (s + 1) * ATTN_SPAN;
    int p0 = s * ATTN_SPAN;
    if (window > 0 && p0 < pos + 1 - window) p0 = pos + 1 - window;
    const int np = end > p0 ? end - p0 : 0;
    const size_t at = cache_index(c, j->batch->slot[bt], j->layer, p0 < end ? p0 : 0) + (size_t)g * hd;
    const float *q = c->q + (size_t)row * cfg->q_dim + (size_t)g * group * hd;
    float *att = c->att + (size_t)row * cfg->q_dim + (size_t)g * group * hd;
    if (np > 0) {
        bw_attend(q, group, hd, c->k_cache + at, c->v_cache + at, c->kv_dim, np, cfg->attn_scale, scores, m, l, o);
    } else { /* a span wholly outside the window: weight zero in the merge */
        for (int h = 0; h < group; h++) {
            m[h] = -INFINITY;
            l[h] = 0.0f;
        }
        memset(o, 0, (size_t)group * hd * sizeof *o);
    }
    if (n_spans == 1) {
        for (int h = 0; h < group; h++) {
            const float inv = 1.0f / l[h];
            for (int i = 0; i < hd; i++) att[(size_t)h * hd + i] = o[(size_t)h * hd + i] * inv;
        }
        return;
    }
    /* head h of the token: n_spans records of st floats from part, span s at part + s * st */
    float *part = c->partial + c->attn_part0[t] + (size_t)g * group * n_spans * st;
    for (int h = 0; h < group; h++) {
        float *rec = part + ((size_t)h * n_spans + s) * st;
        memcpy(rec, o + (size_t)h * hd, (size_t)hd * sizeof(float));
        rec[hd] = m[h];
        rec[hd + 1] = l[h];
    }
    if (atomic_fetch_sub_explicit(&c->spans_left[t * cfg->n_head_kv + g], 1, memory_order_acq_rel) == 1)
        for (int h = 0; h < group; h++) attn_merge(part + (size_t)h * n_spans * st, n_spans, hd, att + (size_t)h * hd);
}

/* Work item w is one span of one KV head for every token of a run (attention()): the run's tokens read
 * the same keys and values one after the other, from this core's cache. */
static void attention_task(void *ctx, int ith, int nth)
{
    (void)nth;
    attn_job *j = ctx;
    cpu_backend *c = j->c;
    const bw_model_config *cfg = &c->base.model->cfg;
    float *scores = c->scores + (size_t)ith * cfg->n_head * (ATTN_SPAN + cfg->head_dim + 2);
    for (int w; (w = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->n_items;) {
        int lo = 0, hi = j->n_runs; /* the run r with item0[r] <= w < item0[r + 1] */
        while (hi - lo > 1) {
            const int mid = (lo + hi) / 2;
            if (c->attn_item0[mid] <= w) lo = mid;
            else hi = mid;
        }
        const int t0 = c->attn_run0[lo], t1 = c->attn_run0[lo + 1];
        const int n_spans = attn_spans(j->batch->pos[j->first + t0]);
        const int g = (w - c->attn_item0[lo]) / n_spans, s = (w - c->attn_item0[lo]) % n_spans;
        for (int t = t0; t < t1; t++) attend_span(j, scores, t, g, s);
    }
}

/* Attention for tokens [first, first + n) of the batch; groups of tokens whose spans fit c->partial run
 * one after the other (a token's results do not depend on its group). Within a group, runs of up to
 * ATTN_RUN_MAX consecutive tokens of one slot with as many spans (a prompt chunk, a job's token and its
 * drafts) share their work items. Only which thread computes what changes: every token's arithmetic is
 * its own, span by span. */
static void attention(cpu_backend *c, const bw_batch *b, int first, int n, int layer)
{
    const bw_model_config *cfg = &c->base.model->cfg;
    const size_t st = (size_t)cfg->head_dim + 2;
    for (int t0 = 0; t0 < n;) {
        int t1 = t0, n_runs = 0;
        c->attn_part0[0] = 0;
        c->attn_item0[0] = 0;
        while (t1 < n) {
            const int spans = attn_spans(b->pos[first + t1]), k = t1 - t0;
            const size_t need = spans > 1 ? (size_t)cfg->n_head * spans * st : 0;
            if (k > 0 && c->attn_part0[k] + need > c->partial_floats) break;
            c->attn_part0[k + 1] = c->attn_part0[k] + need;
            for (int g = 0; g < cfg->n_head_kv; g++)
                atomic_store_explicit(&c->spans_left[k * cfg->n_head_kv + g], spans, memory_order_relaxed);
            /* a new run, or this token joins the last one (whose spans are those of its first token) */
            const int r0 = n_runs > 0 ? c->attn_run0[n_runs - 1] : 0, run_spans = attn_spans(b->pos[first + t0 + r0]);
            if (n_runs == 0 || k - r0 >= ATTN_RUN_MAX || b->slot[first + t1] != b->slot[first + t0 + r0] ||
                spans != run_spans) {
                if (n_runs > 0) c->attn_item0[n_runs] = c->attn_item0[n_runs - 1] + cfg->n_head_kv * run_spans;
                c->attn_run0[n_runs++] = k;
            }
            t1++;
        }
        const int last_spans = attn_spans(b->pos[first + t0 + c->attn_run0[n_runs - 1]]);
        c->attn_item0[n_runs] = c->attn_item0[n_runs - 1] + cfg->n_head_kv * last_spans;
        c->attn_run0[n_runs] = t1 - t0;
        attn_job aj = {.c = c,
                       .batch = b,
                       .first = first + t0,
                       .t0 = t0,
                       .n = t1 - t0,
                       .layer = layer,
                       .n_runs = n_runs,
                       .n_items = c->attn_item0[n_runs]};
        atomic_init(&aj.next, 0);
        bw_pool_run(c->pool, attention_task, &aj);
        t0 = t1;
    }
}

static void matmul(cpu_backend *c, const bw_tensor *w, const float *in, int n, float *out)
{
    bw_matmul(c->pool, w, in, w->cols, n, out, w->rows, c->scratch);
}

/* n rows of width `width` from x: each row normalised in place by weight (rows of `width` floats). */
static void norm_rows(float *out, const float *x, const bw_tensor *w, int n, int width, float eps)
{
    for (int t = 0; t < n; t++) bw_rmsnorm(out + (size_t)t * width, x + (size_t)t * width, w->data, width, eps);
}

/* y = W·x (+ bias when the layer has one) for n tokens. */
static void linear(cpu_backend *c, const bw_tensor *w, const bw_tensor *bias, const float *in, int n, float *out)
{
    matmul(c, w, in, n, out);
    if (bias->data)
        for (int t = 0; t < n; t++) bw_axpy_f32(out + (size_t)t * w->rows, 1.0f, bias->data, w->rows);
}

/* x += f, where f is first normalised by post_norm when the layer has one (gemma3). */
static void residual(const bw_model_config *cfg, float *x, float *f, const bw_tensor *post_norm, int n)
{
    const int E = cfg->n_embd;
    if (post_norm->data) norm_rows(f, f, post_norm, n, E, cfg->rms_eps);
    for (int t = 0; t < n; t++) bw_axpy_f32(x + (size_t)t * E, 1.0f, f + (size_t)t * E, E);
}

/* Runs tokens [first, first+n) of the batch through every layer; writes logits of the ones that want
 * them, starting at logits row *n_out. */
static void forward_chunk(cpu_backend *c, const bw_batch *b, int first, int n, float *logits, int *n_out)
{
    const bw_model *m = c->base.model;
    const bw_model_config *cfg = &m->cfg;
    const int E = cfg->n_embd, Q = cfg->q_dim, KV = c->kv_dim, FF = cfg->n_ff, HD = cfg->head_dim;

    for (int t = 0; t < n; t++) bw_model_embed(m, b->token[first + t], c->x + (size_t)t * E);

    for (int l = 0; l < cfg->n_layer; l++) {
        const bw_layer_weights *w = &m->layers[l];
        norm_rows(c->xn, c->x, &w->attn_norm, n, E, cfg->rms_eps);
        linear(c, &w->wq, &w->bq, c->xn, n, c->q);
        linear(c, &w->wk, &w->bk, c->xn, n, c->k);
        linear(c, &w->wv, &w->bv, c->xn, n, c->v);
        if (w->q_norm.data) norm_rows(c->q, c->q, &w->q_norm, n * cfg->n_head, HD, cfg->rms_eps);
        if (w->k_norm.data) norm_rows(c->k, c->k, &w->k_norm, n * cfg->n_head_kv, HD, cfg->rms_eps);
        for (int t = 0; t < n; t++) {
            int slot = b->slot[first + t], pos = b->pos[first + t];
            rope(m, w, c->q + (size_t)t * Q, cfg->n_head, pos);
            rope(m, w, c->k + (size_t)t * KV, cfg->n_head_kv, pos);
            size_t at = cache_index(c, slot, l, pos);
            memcpy(c->k_cache + at, c->k + (size_t)t * KV, (size_t)KV * sizeof(float));
            memcpy(c->v_cache + at, c->v + (size_t)t * KV, (size_t)KV * sizeof(float));
        }
        attention(c, b, first, n, l);
        matmul(c, &w->wo, c->att, n, c->xn);
        residual(cfg, c->x, c->xn, &w->attn_post_norm, n);

        norm_rows(c->xn, c->x, &w->ffn_norm, n, E, cfg->rms_eps);
        matmul(c, &w->w_gate, c->xn, n, c->hb);
        matmul(c, &w->w_up, c->xn, n, c->hb2);
        if (cfg->act == BW_ACT_GELU) {
            geglu_job gj = {c->hb, c->hb2, (size_t)n * FF};
            bw_pool_run(c->pool, geglu_task, &gj);
        } else {
            for (int t = 0; t < n; t++)
                bw_swiglu(c->hb + (size_t)t * FF, c->hb + (size_t)t * FF, c->hb2 + (size_t)t * FF, FF);
        }
        matmul(c, &w->w_down, c->hb, n, c->xn);
        residual(cfg, c->x, c->xn, &w->ffn_post_norm, n);
    }

    /* Only the tokens that want logits pay for the output matrix (in a prefill, usually just the last). */
    int k = 0;
    for (int t = 0; t < n; t++) {
        if (!b->want_logits || !b->want_logits[first + t]) continue;
        bw_rmsnorm(c->xn + (size_t)k * E, c->x + (size_t)t * E, m->out_norm.data, E, cfg->rms_eps);
        k++;
    }
    if (k > 0) {
        float *out = logits + (size_t)*n_out * cfg->n_vocab;
        matmul(c, &m->output, c->xn, k, out);
        if (cfg->logit_softcap > 0.0f) {
            const float cap = cfg->logit_softcap;
            for (size_t i = 0; i < (size_t)k * cfg->n_vocab; i++) out[i] = cap * tanhf(out[i] / cap);
        }
        *n_out += k;
    }
}

static int validate_batch(const cpu_backend *c, const bw_batch *b)
{
    const bw_backend_params *p = &c->base.params;
    for (int t = 0; t < b->n_tokens; t++) {
        if (b->slot[t] < 0 || b->slot[t] >= p->n_slots || b->pos[t] < 0 || b->pos[t] >= p->n_ctx || b->token[t] < 0 ||
            b->token[t] >= c->base.model->cfg.n_vocab)
            return -1;
    }
    return 0;
}

static int cpu_forward(bw_backend *base, const bw_batch *b, float *logits)
{
    cpu_backend *c = (cpu_backend *)base;
    if (b->n_tokens <= 0 || validate_batch(c, b)) return -1;
    int n_out = 0;
    for (int first = 0; first < b->n_tokens; first += c->n_batch) {
        int n = b->n_tokens - first < c->n_batch ? b->n_tokens - first : c->n_batch;
        forward_chunk(c, b, first, n, logits, &n_out);
    }
    return 0;
}

static void cpu_destroy(bw_backend *base)
{
    cpu_backend *c = (cpu_backend *)base;
    bw_pool_destroy(c->pool);
    free(c->k_cache);
    free(c->v_cache);
    free(c->x);
    free(c->xn);
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->att);
    free(c->hb);
    free(c->hb2);
    free(c->scores);
    free(c->partial);
    free(c->spans_left);
    free(c->attn_run0);
    free(c->attn_item0);
    free(c->attn_part0);
    free(c->scratch);
    free(c);
}

static const bw_backend_ops cpu_ops = {"cpu", cpu_forward, cpu_destroy};

static size_t max_scratch(const bw_model *m, int n_tok)
{
    size_t s = bw_matmul_scratch_bytes(m->output.type, m->output.cols, n_tok);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const bw_layer_weights *w = &m->layers[l];
        const bw_tensor *all[] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
            size_t need = bw_matmul_scratch_bytes(all[i]->type, all[i]->cols, n_tok);
            if (need > s) s = need;
        }
    }
    return s;
}

bw_backend *bw_backend_cpu_create(const bw_model *m, const bw_backend_params *p, char *err, size_t errlen)
{
    const bw_model_config *cfg = &m->cfg;
    if (p->n_slots < 1 || p->n_ctx < 1 || p->n_threads < 1 || p->max_batch < 1) {
        snprintf(err, errlen, "cpu backend: slots, context, threads and batch must be at least 1");
        return NULL;
    }
    bw_kernels_init(0);
    cpu_backend *c = calloc(1, sizeof *c);
    if (!c) goto oom;
    c->base.ops = &cpu_ops;
    c->base.model = m;
    c->base.params = *p;
    c->n_batch = p->max_batch;
    c->kv_dim = cfg->n_head_kv * cfg->head_dim;
    const size_t B = (size_t)c->n_batch;
    size_t cache = (size_t)p->n_slots * cfg->n_layer * p->n_ctx * c->kv_dim;
    c->pool = bw_pool_create(p->n_threads);
    c->k_cache = calloc(cache, sizeof(float));
    c->v_cache = calloc(cache, sizeof(float));
    c->x = malloc(B * cfg->n_embd * sizeof(float));
    c->xn = malloc(B * cfg->n_embd * sizeof(float));
    c->q = malloc(B * cfg->q_dim * sizeof(float));
    c->k = malloc(B * c->kv_dim * sizeof(float));
    c->v = malloc(B * c->kv_dim * sizeof(float));
    c->att = malloc(B * cfg->q_dim * sizeof(float));
    c->hb = malloc(B * cfg->n_ff * sizeof(float));
    c->hb2 = malloc(B * cfg->n_ff * sizeof(float));
    c->scores = malloc((size_t)p->n_threads * cfg->n_head * (ATTN_SPAN + cfg->head_dim + 2) * sizeof(float));
    /* Room for every span of a whole chunk, up to 16 MiB (pages are touched only by long contexts);
     * at least one token's worth, and attention() runs smaller groups of tokens when it is short. */
    const size_t one_token = (size_t)cfg->n_head * attn_spans(p->n_ctx - 1) * (cfg->head_dim + 2);
    c->partial_floats = B * one_token < ((size_t)4 << 20) ? B * one_token : (size_t)4 << 20;
    if (c->partial_floats < one_token) c->partial_floats = one_token;
    c->partial = malloc(c->partial_floats * sizeof(float));
    c->spans_left = malloc(B * cfg->n_head_kv * sizeof(atomic_int));
    c->attn_run0 = malloc((B + 1) * sizeof(int));
    c->attn_item0 = malloc((B + 1) * sizeof(int));
    c->attn_part0 = malloc((B + 1) * sizeof(size_t));
    c->scratch = aligned_alloc(64, (max_scratch(m, c->n_batch) + 63) / 64 * 64);
    if (!c->pool || !c->k_cache || !c->v_cache || !c->x || !c->xn || !c->q || !c->k || !c->v || !c->att || !c->hb ||
        !c->hb2 || !c->scores || !c->partial || !c->spans_left || !c->attn_run0 || !c->attn_item0 || !c->attn_part0 ||
        !c->scratch) {
        cpu_destroy(&c->base);
        goto oom;
    }
    return &c->base;
oom:
    snprintf(err, errlen, "cpu backend: out of memory for %d slots x %d positions (lower --slots or --ctx)", p->n_slots,
             p->n_ctx);
    return NULL;
}
