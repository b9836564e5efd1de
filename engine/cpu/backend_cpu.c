/* The CPU backend: the llama forward pass over a batch of tokens from any number of slots.
 *
 * Reads top to bottom like the paper. For each layer, every token of the batch goes through
 *   h = x + Wo · attention(rope(Wq·n(x)), rope(Wk·n(x)), Wv·n(x))      n = RMSNorm
 *   x = h + Wdown · (silu(Wgate·n(h)) ⊙ Wup·n(h))
 * and the tokens that want logits go through the final norm and the output matrix. The products run the
 * whole batch at once (prefill is a matrix-matrix product); attention runs per (token, head) in parallel.
 *
 * KV cache layout: k[slot][layer][pos][kv_dim] (same for v), float32, allocated lazily by the OS
 * (calloc of a large block maps zero pages on first touch), so resident memory follows use. */
#include <math.h>
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
    float *scores; /* n_threads × n_ctx */
    void *scratch; /* quantized activations for bw_matmul */
} cpu_backend;

static size_t cache_index(const cpu_backend *c, int slot, int layer, int pos)
{
    const bw_model_config *cfg = &c->base.model->cfg;
    return (((size_t)slot * cfg->n_layer + layer) * c->base.params.n_ctx + pos) * c->kv_dim;
}

/* Rotates pairs (v[2i], v[2i+1]) of each head by pos·base^(-2i/n_rot), the GGUF llama ("normal") RoPE.
 * The angle is built by repeated multiplication in float, as the reference implementation does, so the
 * rounding matches it. */
static void rope(const bw_model *m, float *v, int n_heads, int pos)
{
    const bw_model_config *cfg = &m->cfg;
    const float theta_scale = powf(cfg->rope_base, -2.0f / (float)cfg->n_rot);
    const float freq_scale = 1.0f / cfg->rope_scale;
    for (int h = 0; h < n_heads; h++) {
        float *hv = v + (size_t)h * cfg->head_dim;
        float theta = (float)pos;
        for (int i = 0; i < cfg->n_rot; i += 2) {
            float t = freq_scale * theta;
            if (m->rope_freqs) t /= m->rope_freqs[i / 2];
            float c = cosf(t), s = sinf(t);
            float a = hv[i], b = hv[i + 1];
            hv[i] = a * c - b * s;
            hv[i + 1] = a * s + b * c;
            theta *= theta_scale;
        }
    }
}

typedef struct {
    cpu_backend *c;
    const bw_batch *batch;
    int first, n, layer;
} attn_job;

/* One (token, head) pair: softmax(q·K^T / sqrt(d)) · V over the positions 0..pos of its slot. */
static void attention_task(void *ctx, int ith, int nth)
{
    attn_job *j = ctx;
    cpu_backend *c = j->c;
    const bw_model_config *cfg = &c->base.model->cfg;
    const int hd = cfg->head_dim, group = cfg->n_head / cfg->n_head_kv;
    const float scale = 1.0f / sqrtf((float)hd);
    float *scores = c->scores + (size_t)ith * c->base.params.n_ctx;
    const int total = j->n * cfg->n_head;
    const int per = (total + nth - 1) / nth;
    for (int w = ith * per; w < total && w < (ith + 1) * per; w++) {
        int t = w / cfg->n_head, h = w % cfg->n_head, kvh = h / group;
        int bt = j->first + t;
        int slot = j->batch->slot[bt], pos = j->batch->pos[bt];
        const float *q = c->q + (size_t)t * cfg->n_embd + (size_t)h * hd;
        const float *kc = c->k_cache + cache_index(c, slot, j->layer, 0) + (size_t)kvh * hd;
        const float *vc = c->v_cache + cache_index(c, slot, j->layer, 0) + (size_t)kvh * hd;
        float maxs = -INFINITY;
        for (int p = 0; p <= pos; p++) {
            scores[p] = bw_dot_f32(q, kc + (size_t)p * c->kv_dim, hd) * scale;
            if (scores[p] > maxs) maxs = scores[p];
        }
        float sum = 0.0f;
        for (int p = 0; p <= pos; p++) {
            scores[p] = expf(scores[p] - maxs);
            sum += scores[p];
        }
        float *out = c->att + (size_t)t * cfg->n_embd + (size_t)h * hd;
        memset(out, 0, (size_t)hd * sizeof *out);
        const float inv = 1.0f / sum;
        for (int p = 0; p <= pos; p++) bw_axpy_f32(out, scores[p] * inv, vc + (size_t)p * c->kv_dim, hd);
    }
}

static void matmul(cpu_backend *c, const bw_tensor *w, const float *in, int n, float *out)
{
    bw_matmul(c->pool, w, in, w->cols, n, out, w->rows, c->scratch);
}

/* Runs tokens [first, first+n) of the batch through every layer; writes logits of the ones that want
 * them, starting at logits row *n_out. */
static void forward_chunk(cpu_backend *c, const bw_batch *b, int first, int n, float *logits, int *n_out)
{
    const bw_model *m = c->base.model;
    const bw_model_config *cfg = &m->cfg;
    const int E = cfg->n_embd, KV = c->kv_dim, FF = cfg->n_ff;

    for (int t = 0; t < n; t++) bw_model_embed(m, b->token[first + t], c->x + (size_t)t * E);

    for (int l = 0; l < cfg->n_layer; l++) {
        const bw_layer_weights *w = &m->layers[l];
        for (int t = 0; t < n; t++)
            bw_rmsnorm(c->xn + (size_t)t * E, c->x + (size_t)t * E, w->attn_norm.data, E, cfg->rms_eps);
        matmul(c, &w->wq, c->xn, n, c->q);
        matmul(c, &w->wk, c->xn, n, c->k);
        matmul(c, &w->wv, c->xn, n, c->v);
        for (int t = 0; t < n; t++) {
            int slot = b->slot[first + t], pos = b->pos[first + t];
            rope(m, c->q + (size_t)t * E, cfg->n_head, pos);
            rope(m, c->k + (size_t)t * KV, cfg->n_head_kv, pos);
            size_t at = cache_index(c, slot, l, pos);
            memcpy(c->k_cache + at, c->k + (size_t)t * KV, (size_t)KV * sizeof(float));
            memcpy(c->v_cache + at, c->v + (size_t)t * KV, (size_t)KV * sizeof(float));
        }
        attn_job aj = {c, b, first, n, l};
        bw_pool_run(c->pool, attention_task, &aj);
        matmul(c, &w->wo, c->att, n, c->xn);
        for (int t = 0; t < n; t++) bw_axpy_f32(c->x + (size_t)t * E, 1.0f, c->xn + (size_t)t * E, E);

        for (int t = 0; t < n; t++)
            bw_rmsnorm(c->xn + (size_t)t * E, c->x + (size_t)t * E, w->ffn_norm.data, E, cfg->rms_eps);
        matmul(c, &w->w_gate, c->xn, n, c->hb);
        matmul(c, &w->w_up, c->xn, n, c->hb2);
        for (int t = 0; t < n; t++) bw_swiglu(c->hb + (size_t)t * FF, c->hb + (size_t)t * FF, c->hb2 + (size_t)t * FF, FF);
        matmul(c, &w->w_down, c->hb, n, c->xn);
        for (int t = 0; t < n; t++) bw_axpy_f32(c->x + (size_t)t * E, 1.0f, c->xn + (size_t)t * E, E);
    }

    /* Only the tokens that want logits pay for the output matrix (in a prefill, usually just the last). */
    int k = 0;
    for (int t = 0; t < n; t++) {
        if (!b->want_logits || !b->want_logits[first + t]) continue;
        bw_rmsnorm(c->xn + (size_t)k * E, c->x + (size_t)t * E, m->out_norm.data, E, cfg->rms_eps);
        k++;
    }
    if (k > 0) {
        matmul(c, &m->output, c->xn, k, logits + (size_t)*n_out * cfg->n_vocab);
        *n_out += k;
    }
}

static int validate_batch(const cpu_backend *c, const bw_batch *b)
{
    const bw_backend_params *p = &c->base.params;
    for (int t = 0; t < b->n_tokens; t++) {
        if (b->slot[t] < 0 || b->slot[t] >= p->n_slots || b->pos[t] < 0 || b->pos[t] >= p->n_ctx ||
            b->token[t] < 0 || b->token[t] >= c->base.model->cfg.n_vocab)
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
    c->q = malloc(B * cfg->n_embd * sizeof(float));
    c->k = malloc(B * c->kv_dim * sizeof(float));
    c->v = malloc(B * c->kv_dim * sizeof(float));
    c->att = malloc(B * cfg->n_embd * sizeof(float));
    c->hb = malloc(B * cfg->n_ff * sizeof(float));
    c->hb2 = malloc(B * cfg->n_ff * sizeof(float));
    c->scores = malloc((size_t)p->n_threads * p->n_ctx * sizeof(float));
    c->scratch = aligned_alloc(64, (max_scratch(m, c->n_batch) + 63) / 64 * 64);
    if (!c->pool || !c->k_cache || !c->v_cache || !c->x || !c->xn || !c->q || !c->k || !c->v || !c->att ||
        !c->hb || !c->hb2 || !c->scores || !c->scratch) {
        cpu_destroy(&c->base);
        goto oom;
    }
    return &c->base;
oom:
    snprintf(err, errlen, "cpu backend: out of memory for %d slots x %d positions (lower --slots or --ctx)",
             p->n_slots, p->n_ctx);
    return NULL;
}
