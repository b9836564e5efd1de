/* The CUDA backend: weights uploaded once in their GGUF types (GPU layout: repack.h), an f16 KV cache
 * per slot, and the forward pass as a chain of five kernels per layer:
 *   QKV product   (RMSNorm prologue, RoPE + KV-cache write epilogue)
 *   attention     (over the cache, every token of every slot in the batch)
 *   Wo product    (residual add epilogue)
 *   gate|up       (RMSNorm prologue, SwiGLU epilogue)
 *   down product  (residual add epilogue)
 * then the output product (final RMSNorm prologue) for the tokens that want logits, and the top-2 of
 * each logits row. Any batch of up to BW_CU_GRAPH_MAX tokens (decode steps) runs as a CUDA graph,
 * captured once per (tokens, logits rows) and replayed: all per-step data (ids, positions, slots) is
 * read from device buffers filled by one copy before the replay. On Hopper the kernels are launched
 * with programmatic dependent launch so each one's start overlaps the previous one's tail.
 *
 * Knobs (environment): BW_CUDA_GRAPH=0 runs every step eagerly, BW_CUDA_PDL=0 turns PDL off,
 * BW_CUDA_MMA=1 runs batches of more than 8 tokens on the tensor-core product (faster prefill, but a
 * token's logits then depend on its batch's size: see bw_cu_launch). Both also fall back by themselves when capture or PDL fails. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cuda/ops.cuh"
#include "engine/cuda/sample.cuh"

extern "C" {
#include "engine/backend.h"
#include "engine/cuda/backend_cuda.h"
#include "engine/cuda/repack.h"
}

#define BW_CU_GRAPH_MAX 64

struct cu_layer {
    bw_cu_mat qkv, wo, gateup, down;
    float *attn_norm, *ffn_norm;
    __half *k, *v;
};

struct cu_backend {
    bw_backend base; /* first: the common interface points here */
    int device, n_sm, pdl, graphs, broken, mma;
    cudaStream_t stream;
    bw_model_config cfg;
    int n_q, n_kv, cap; /* rows of Q, rows of K, most tokens per call */
    float theta_scale;  /* RoPE: powf(base, -2/n_rot) from the host's libm, as the CPU backend uses */
    cu_layer *layers;
    bw_cu_mat embd, output;
    float *out_norm, *rope_freqs;
    uint8_t *weights; /* one allocation for every weight */
    __half *kv;       /* one allocation for the whole cache */
    float *x, *q, *att, *h, *logits;
    int *meta_d, *meta_h; /* tok | pos | slot | out_idx, cap ints each; meta_h is pinned */
    int *top_ids_d;
    float *top_vals_d;
    int *top_ids_h;                              /* pinned */
    float *top_vals_h;                           /* pinned */
    float *logits_h;                             /* pinned, cap * n_vocab */
    bw_cu_sample_row *samp_rows_d, *samp_rows_h; /* cap rows each; _h pinned */
    int32_t *samp_hist_d, *samp_hist_h;          /* cap x BW_CU_SAMPLE_HIST */
    int32_t *samp_ids_d, *samp_ids_h;            /* cap */
    cudaGraphExec_t graph[BW_CU_GRAPH_MAX + 1][BW_CU_GRAPH_MAX + 1];
};

#define CU_TRY(call)                                                                                                   \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) {                                                                                       \
            snprintf(err, errlen, "CUDA: %s failed: %s", #call, cudaGetErrorString(e_));                               \
            goto fail;                                                                                                 \
        }                                                                                                              \
    } while (0)

extern "C" int bw_backend_cuda_available(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky "no driver" state for later calls */
        return 0;
    }
    return n > 0;
}

static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

/* Bytes a stacked matrix of these parts takes on the GPU (quants and scales, each 256-aligned). */
static int stack_bytes(const bw_tensor *const *parts, int n_parts, size_t *bytes, bw_cu_layout *lay)
{
    int64_t rows = 0;
    for (int i = 0; i < n_parts; i++) {
        if (parts[i]->type != parts[0]->type || parts[i]->cols != parts[0]->cols) return -1;
        rows += parts[i]->rows;
    }
    if (bw_cu_layout_of(parts[0]->type, rows, parts[0]->cols, lay) != 0) return -1;
    *bytes = align256(lay->q_bytes) + align256(lay->s_bytes);
    return 0;
}

/* Repacks the parts into one matrix at dev (uploaded through a host buffer). */
static cudaError_t stack_upload(const bw_tensor *const *parts, int n_parts, uint8_t *dev, bw_cu_mat *out)
{
    size_t bytes;
    bw_cu_layout lay;
    if (stack_bytes(parts, n_parts, &bytes, &lay) != 0) return cudaErrorInvalidValue;
    uint8_t *host = (uint8_t *)malloc(bytes);
    if (!host) return cudaErrorMemoryAllocation;
    uint8_t *hs = host + align256(lay.q_bytes);
    int64_t row = 0;
    for (int i = 0; i < n_parts; i++) {
        size_t qoff =
            lay.nb ? (size_t)(row * lay.nb * lay.quant_bytes) : (size_t)row * (lay.q_bytes / (size_t)lay.rows);
        size_t soff = (size_t)(row * lay.nb * lay.scale_bytes);
        bw_cu_repack_rows(parts[i]->type, parts[i]->data, parts[i]->rows, parts[i]->cols, host + qoff, hs + soff);
        row += parts[i]->rows;
    }
    cudaError_t e = cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice);
    free(host);
    out->type = lay.type;
    out->rows = (int)lay.rows;
    out->cols = (int)lay.cols;
    out->q = dev;
    out->s = lay.nb ? dev + align256(lay.q_bytes) : NULL;
    return e;
}

/* A norm or frequency vector as f32 on the device. */
static cudaError_t vec_upload(const bw_tensor *t, int64_t n, float *dev)
{
    float *host = (float *)malloc((size_t)n * sizeof(float));
    if (!host) return cudaErrorMemoryAllocation;
    for (int64_t i = 0; i < n; i++) {
        if (t->type == BW_TYPE_F32) memcpy(&host[i], (const float *)t->data + i, sizeof(float));
        else if (t->type == BW_TYPE_F16) host[i] = bw_f16_to_f32(((const bw_f16 *)t->data)[i]);
        else host[i] = bw_bf16_to_f32(((const bw_bf16 *)t->data)[i]);
    }
    cudaError_t e = cudaMemcpy(dev, host, (size_t)n * sizeof(float), cudaMemcpyHostToDevice);
    free(host);
    return e;
}

static int vec_ok(const bw_tensor *t, int64_t n)
{
    return t->data && t->rows * t->cols == n &&
           (t->type == BW_TYPE_F32 || t->type == BW_TYPE_F16 || t->type == BW_TYPE_BF16);
}

static void cuda_destroy(bw_backend *bb)
{
    cu_backend *b = (cu_backend *)bb;
    if (!b) return;
    cudaSetDevice(b->device);
    for (int i = 0; i <= BW_CU_GRAPH_MAX; i++)
        for (int j = 0; j <= BW_CU_GRAPH_MAX; j++)
            if (b->graph[i][j]) cudaGraphExecDestroy(b->graph[i][j]);
    cudaFree(b->weights);
    cudaFree(b->kv);
    cudaFree(b->x);
    cudaFreeHost(b->meta_h);
    cudaFreeHost(b->top_ids_h);
    cudaFreeHost(b->logits_h);
    cudaFree(b->samp_rows_d);
    cudaFree(b->samp_hist_d);
    cudaFree(b->samp_ids_d);
    cudaFreeHost(b->samp_rows_h);
    cudaFreeHost(b->samp_hist_h);
    cudaFreeHost(b->samp_ids_h);
    if (b->stream) cudaStreamDestroy(b->stream);
    free(b->layers);
    free(b);
}

/* The kernels of one forward pass of n_tok tokens, n_out of which want logits. */
static cudaError_t enqueue(cu_backend *b, int n_tok, int n_out)
{
    const bw_model_config &c = b->cfg;
    const bw_cu_launch L = {b->stream, b->pdl, b->mma};
    const int *tok = b->meta_d, *pos = b->meta_d + b->cap, *slot = b->meta_d + 2 * b->cap;
    const int *out_idx = b->meta_d + 3 * b->cap;
    const int max_blocks = b->n_sm * 8;
    const int n_att = c.n_head * c.head_dim;
    cudaError_t e;

    if ((e = bw_cu_embed(L, b->embd, tok, n_tok, b->x)) != cudaSuccess) return e;
    for (int l = 0; l < c.n_layer; l++) {
        const cu_layer &ly = b->layers[l];
        bw_cu_qkv p = {};
        p.q = b->q;
        p.k_cache = ly.k;
        p.v_cache = ly.v;
        p.pos = pos;
        p.slot = slot;
        p.n_q = b->n_q;
        p.n_k = b->n_kv;
        p.head_dim = c.head_dim;
        p.n_rot = c.n_rot;
        p.n_ctx = b->base.params.n_ctx;
        p.n_head_kv = c.n_head_kv;
        p.theta_scale = b->theta_scale;
        p.pos_scale = 1.0f / c.rope_scale;
        p.rope_freqs = b->rope_freqs;
        const bw_cu_act xin = {b->x, c.n_embd, NULL, ly.attn_norm, c.rms_eps};
        if ((e = bw_cu_matmul(L, ly.qkv, xin, n_tok, BW_EPI_QKV, NULL, 0, &p, max_blocks)) != cudaSuccess) return e;

        bw_cu_attn a = {};
        a.q = b->q;
        a.ldq = b->n_q;
        a.k_cache = ly.k;
        a.v_cache = ly.v;
        a.pos = pos;
        a.slot = slot;
        a.out = b->att;
        a.ldo = n_att;
        a.n_head = c.n_head;
        a.n_head_kv = c.n_head_kv;
        a.head_dim = c.head_dim;
        a.n_ctx = b->base.params.n_ctx;
        a.scale = 1.0f / sqrtf((float)c.head_dim);
        if ((e = bw_cu_attention(L, a, n_tok)) != cudaSuccess) return e;

        const bw_cu_act ain = {b->att, n_att, NULL, NULL, 0.0f};
        if ((e = bw_cu_matmul(L, ly.wo, ain, n_tok, BW_EPI_ADD, b->x, c.n_embd, NULL, max_blocks)) != cudaSuccess)
            return e;
        const bw_cu_act fin = {b->x, c.n_embd, NULL, ly.ffn_norm, c.rms_eps};
        if ((e = bw_cu_matmul(L, ly.gateup, fin, n_tok, BW_EPI_SWIGLU, b->h, c.n_ff, NULL, max_blocks)) != cudaSuccess)
            return e;
        const bw_cu_act hin = {b->h, c.n_ff, NULL, NULL, 0.0f};
        if ((e = bw_cu_matmul(L, ly.down, hin, n_tok, BW_EPI_ADD, b->x, c.n_embd, NULL, max_blocks)) != cudaSuccess)
            return e;
    }
    if (n_out == 0) return cudaSuccess;
    const bw_cu_act oin = {b->x, c.n_embd, out_idx, b->out_norm, c.rms_eps};
    if ((e = bw_cu_matmul(L, b->output, oin, n_out, BW_EPI_STORE, b->logits, c.n_vocab, NULL, max_blocks)) !=
        cudaSuccess)
        return e;
    return bw_cu_top2(L, b->logits, n_out, c.n_vocab, b->top_ids_d, b->top_vals_d);
}

/* Captures the step into a graph; NULL (and the stream left usable) when capture fails. */
static cudaGraphExec_t capture(cu_backend *b, int n_tok, int n_out)
{
    cudaGraph_t g = NULL;
    cudaGraphExec_t exec = NULL;
    if (cudaStreamBeginCapture(b->stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    cudaError_t e = enqueue(b, n_tok, n_out);
    cudaError_t e2 = cudaStreamEndCapture(b->stream, &g);
    if (e == cudaSuccess && e2 == cudaSuccess && g) e = cudaGraphInstantiate(&exec, g, 0);
    else if (e == cudaSuccess) e = e2;
    if (g) cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        cudaGetLastError();
        fprintf(stderr, "cuda: graph capture of a %d-token step failed (%s)\n", n_tok, cudaGetErrorString(e));
        return NULL;
    }
    return exec;
}

static cudaError_t run_step(cu_backend *b, int n_tok, int n_out)
{
    if (b->graphs && n_tok <= BW_CU_GRAPH_MAX) {
        cudaGraphExec_t *slot = &b->graph[n_tok][n_out];
        if (!*slot) *slot = capture(b, n_tok, n_out);
        if (!*slot && b->pdl) { /* PDL edges are the newest capture feature: retry without them */
            fprintf(stderr, "cuda: retrying without programmatic dependent launch\n");
            b->pdl = 0;
            *slot = capture(b, n_tok, n_out);
        }
        if (*slot) return cudaGraphLaunch(*slot, b->stream);
        fprintf(stderr, "cuda: CUDA graphs off, running kernels one by one\n");
        b->graphs = 0;
    }
    return enqueue(b, n_tok, n_out);
}

/* Fills the device sampler's per-row inputs from the requests (host side, pinned). */
static void sample_inputs(cu_backend *b, const bw_cuda_sample_req *req, int n_out)
{
    for (int r = 0; r < n_out; r++) {
        const bw_cuda_sample_req &q = req[r];
        size_t n = q.n_history;
        if (q.p.repeat_last_n == 0) n = 0;
        else if (q.p.repeat_last_n > 0 && (size_t)q.p.repeat_last_n < n) n = (size_t)q.p.repeat_last_n;
        bw_cu_sample_row &R = b->samp_rows_h[r];
        R.temperature = q.p.temperature, R.top_p = q.p.top_p, R.min_p = q.p.min_p;
        R.repetition_penalty = q.p.repetition_penalty, R.top_k = q.p.top_k;
        R.seed = q.p.seed, R.index = q.index;
        if (q.p.repetition_penalty != 1.0f && n > BW_CU_SAMPLE_HIST) {
            R.n_hist = -1; /* the host samples this row from the raw logits */
            continue;
        }
        R.n_hist = q.p.repetition_penalty != 1.0f ? (int32_t)n : 0;
        if (R.n_hist)
            memcpy(b->samp_hist_h + (size_t)r * BW_CU_SAMPLE_HIST, q.history + (q.n_history - n), n * sizeof(int32_t));
    }
}

/* One forward pass. logits (n_out x n_vocab) and/or the top-2 ids and values may be NULL; with req, the
 * rows are sampled on the device into sampled[] (logits then receives only the rows the host must
 * sample). */
static int cuda_run(cu_backend *b, const bw_batch *batch, float *logits, int32_t *ids, float *vals,
                    const bw_cuda_sample_req *req = NULL, int32_t *sampled = NULL)
{
    const bw_model_config &c = b->cfg;
    const int n = batch->n_tokens;
    if (b->broken) {
        fprintf(stderr, "cuda: backend unusable after an earlier device error\n");
        return -1;
    }
    if (n <= 0 || n > b->cap) {
        fprintf(stderr, "cuda: batch of %d tokens (1..%d allowed)\n", n, b->cap);
        return -1;
    }
    int n_out = 0;
    for (int t = 0; t < n; t++) {
        const int32_t tk = batch->token[t], ps = batch->pos[t], sl = batch->slot[t];
        if (tk < 0 || tk >= c.n_vocab || ps < 0 || ps >= b->base.params.n_ctx || sl < 0 ||
            sl >= b->base.params.n_slots) {
            fprintf(stderr, "cuda: batch token %d out of range (id %d, pos %d, slot %d)\n", t, tk, ps, sl);
            return -1;
        }
        b->meta_h[t] = tk;
        b->meta_h[b->cap + t] = ps;
        b->meta_h[2 * b->cap + t] = sl;
        if (batch->want_logits && batch->want_logits[t]) b->meta_h[3 * b->cap + n_out++] = t;
    }
    cudaSetDevice(b->device);
    cudaError_t e =
        cudaMemcpyAsync(b->meta_d, b->meta_h, (size_t)4 * b->cap * sizeof(int), cudaMemcpyHostToDevice, b->stream);
    if (e == cudaSuccess) e = run_step(b, n, n_out);
    const size_t lbytes = (size_t)n_out * c.n_vocab * sizeof(float);
    if (req && n_out) {
        sample_inputs(b, req, n_out);
        if (e == cudaSuccess)
            e = cudaMemcpyAsync(b->samp_rows_d, b->samp_rows_h, (size_t)n_out * sizeof(bw_cu_sample_row),
                                cudaMemcpyHostToDevice, b->stream);
        if (e == cudaSuccess)
            e = cudaMemcpyAsync(b->samp_hist_d, b->samp_hist_h, (size_t)n_out * BW_CU_SAMPLE_HIST * sizeof(int32_t),
                                cudaMemcpyHostToDevice, b->stream);
        if (e == cudaSuccess)
            e = bw_cu_sample(b->stream, b->logits, c.n_vocab, (size_t)c.n_vocab, n_out, b->samp_rows_d, b->samp_hist_d,
                             b->samp_ids_d);
        if (e == cudaSuccess)
            e = cudaMemcpyAsync(b->samp_ids_h, b->samp_ids_d, (size_t)n_out * sizeof(int32_t), cudaMemcpyDeviceToHost,
                                b->stream);
        if (e == cudaSuccess) e = cudaStreamSynchronize(b->stream);
        /* the rare rows the host samples: only those logits cross */
        for (int r = 0; e == cudaSuccess && r < n_out; r++) {
            sampled[r] = b->samp_ids_h[r];
            if (sampled[r] < 0)
                e = cudaMemcpy(logits + (size_t)r * c.n_vocab, b->logits + (size_t)r * c.n_vocab,
                               (size_t)c.n_vocab * sizeof(float), cudaMemcpyDeviceToHost);
        }
        logits = NULL;
    }
    if (e == cudaSuccess && n_out && logits)
        e = cudaMemcpyAsync(b->logits_h, b->logits, lbytes, cudaMemcpyDeviceToHost, b->stream);
    if (e == cudaSuccess && n_out && ids) {
        e = cudaMemcpyAsync(b->top_ids_h, b->top_ids_d, (size_t)2 * n_out * sizeof(int), cudaMemcpyDeviceToHost,
                            b->stream);
        if (e == cudaSuccess)
            e = cudaMemcpyAsync(b->top_vals_h, b->top_vals_d, (size_t)2 * n_out * sizeof(float), cudaMemcpyDeviceToHost,
                                b->stream);
    }
    if (e == cudaSuccess) e = cudaStreamSynchronize(b->stream);
    if (e != cudaSuccess) {
        fprintf(stderr, "cuda: forward pass failed: %s\n", cudaGetErrorString(e));
        b->broken = 1;
        return -1;
    }
    if (n_out && logits) memcpy(logits, b->logits_h, lbytes);
    if (n_out && ids) {
        memcpy(ids, b->top_ids_h, (size_t)2 * n_out * sizeof(int));
        if (vals) memcpy(vals, b->top_vals_h, (size_t)2 * n_out * sizeof(float));
    }
    return 0;
}

extern "C" int bw_backend_cuda_forward_sample(bw_backend *b, const bw_batch *batch, const bw_cuda_sample_req *req,
                                              int32_t *ids, float *fallback_logits)
{
    if (!bw_backend_is_cuda(b) || !req || !ids || !fallback_logits) return -1;
    return cuda_run((cu_backend *)b, batch, fallback_logits, NULL, NULL, req, ids);
}

static int cuda_forward(bw_backend *bb, const bw_batch *batch, float *logits)
{
    return cuda_run((cu_backend *)bb, batch, logits, NULL, NULL);
}

static const bw_backend_ops cuda_ops_table = {"cuda", cuda_forward, cuda_destroy};

extern "C" int bw_backend_is_cuda(const bw_backend *b) { return b && b->ops == &cuda_ops_table; }

extern "C" int bw_backend_cuda_forward_top2(bw_backend *b, const bw_batch *batch, int32_t *ids, float *vals)
{
    if (!bw_backend_is_cuda(b)) return -1;
    return cuda_run((cu_backend *)b, batch, NULL, ids, vals);
}

/* Shapes and types the kernels handle; 0 or -1 with the reason. */
static int check_model(const bw_model *m, char *err, size_t errlen)
{
    const bw_model_config &c = m->cfg;
    if (!bw_model_is_plain_llama(m)) {
        snprintf(err, errlen,
                 "CUDA backend: only plain llama models run on the GPU; this %s model (its biases, Q/K norms, "
                 "post-norms, window or head size) runs with --backend cpu",
                 c.arch);
        return -1;
    }
    if (c.n_embd % 32 || c.n_ff % 32 || c.head_dim % 8 || c.head_dim > 256 || c.n_rot % 2 || c.n_rot > c.head_dim ||
        c.n_head_kv <= 0 || c.n_head % c.n_head_kv || (c.n_head * c.head_dim) % 32) {
        snprintf(err, errlen,
                 "CUDA backend: unsupported shape (n_embd %d, n_ff %d, head_dim %d, n_rot %d, heads %d/%d): needs "
                 "widths divisible by 32, head_dim a multiple of 8 up to 256",
                 c.n_embd, c.n_ff, c.head_dim, c.n_rot, c.n_head, c.n_head_kv);
        return -1;
    }
    for (int l = -1; l < c.n_layer; l++) {
        /* Every matrix, so the operator learns which tensor has which type (layer -1: embedding, output). */
        const bw_layer_weights *w = l >= 0 ? &m->layers[l] : NULL;
        const bw_tensor *mats[7] = {&m->tok_embd, &m->output};
        if (w) {
            const bw_tensor *lm[7] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
            memcpy(mats, lm, sizeof lm);
        }
        for (int i = 0; i < (w ? 7 : 2); i++)
            if (!bw_cu_type_supported(mats[i]->type)) {
                snprintf(err, errlen,
                         "CUDA backend: tensor %s has type %s, which the GPU kernels do not read yet (use --backend "
                         "cpu)",
                         mats[i]->name, bw_type_info(mats[i]->type)->name);
                return -1;
            }
    }
    for (int l = 0; l < c.n_layer; l++) {
        const bw_layer_weights *w = &m->layers[l];
        if (w->wq.type != w->wk.type || w->wq.type != w->wv.type || w->w_gate.type != w->w_up.type) {
            snprintf(err, errlen,
                     "CUDA backend: layer %d mixes weight types within q/k/v or gate/up; not supported yet (use "
                     "--backend cpu)",
                     l);
            return -1;
        }
        if (!vec_ok(&w->attn_norm, c.n_embd) || !vec_ok(&w->ffn_norm, c.n_embd)) {
            snprintf(err, errlen, "CUDA backend: layer %d norm weights must be float vectors of %d", l, c.n_embd);
            return -1;
        }
    }
    if (!vec_ok(&m->out_norm, c.n_embd)) {
        snprintf(err, errlen, "CUDA backend: output norm must be a float vector of %d", c.n_embd);
        return -1;
    }
    return 0;
}

extern "C" bw_backend *bw_backend_cuda_create(const bw_model *m, const bw_backend_params *p, char *err, size_t errlen)
{
    const bw_model_config &c = m->cfg;
    cu_backend *b = NULL;
    int n_dev = 0;
    cudaDeviceProp prop;
    size_t free_b = 0, total_b = 0, wbytes = 0, kv_bytes = 0, act_bytes = 0;
    const int out_tied = m->output.data == m->tok_embd.data;

    if (check_model(m, err, errlen) != 0) return NULL;
    if (p->n_slots <= 0 || p->n_ctx <= 0) {
        snprintf(err, errlen, "CUDA backend: need at least one slot and one position (slots %d, ctx %d)", p->n_slots,
                 p->n_ctx);
        return NULL;
    }
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        cudaGetLastError();
        snprintf(err, errlen, "no CUDA device found (driver missing or no GPU visible); use --backend cpu or auto");
        return NULL;
    }
    if (p->device < 0 || p->device >= n_dev) {
        snprintf(err, errlen, "CUDA device %d does not exist (%d device%s present)", p->device, n_dev,
                 n_dev == 1 ? "" : "s");
        return NULL;
    }
    b = (cu_backend *)calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of host memory");
        return NULL;
    }
    b->base.ops = &cuda_ops_table;
    b->base.model = m;
    b->base.params = *p;
    b->device = p->device;
    b->cfg = c;
    b->n_q = c.n_head * c.head_dim;
    b->n_kv = c.n_head_kv * c.head_dim;
    b->theta_scale = powf(c.rope_base, -2.0f / (float)c.n_rot);
    b->cap = p->max_batch > p->n_slots ? p->max_batch : p->n_slots;
    if (b->cap < 1) b->cap = 1;
    b->layers = (cu_layer *)calloc((size_t)c.n_layer, sizeof(cu_layer));
    if (!b->layers) {
        snprintf(err, errlen, "out of host memory");
        free(b);
        return NULL;
    }
    {
        const char *g = getenv("BW_CUDA_GRAPH"), *d = getenv("BW_CUDA_PDL"), *mm;
        CU_TRY(cudaSetDevice(b->device));
        CU_TRY(cudaGetDeviceProperties(&prop, b->device));
        if (prop.major < 8) {
            snprintf(err, errlen, "CUDA device %d (%s) has compute capability %d.%d; this build needs 8.0 or newer",
                     b->device, prop.name, prop.major, prop.minor);
            goto fail;
        }
        b->n_sm = prop.multiProcessorCount;
        b->graphs = !(g && strcmp(g, "0") == 0);
        b->pdl = prop.major >= 9 && !(d && strcmp(d, "0") == 0);
        b->mma = (mm = getenv("BW_CUDA_MMA")) && strcmp(mm, "1") == 0;
        CU_TRY(cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking));

        /* Sizes first, so an oversized request fails with numbers instead of half an upload. */
        size_t sz;
        bw_cu_layout lay;
        for (int l = 0; l < c.n_layer; l++) {
            const bw_layer_weights *w = &m->layers[l];
            const bw_tensor *qkv[3] = {&w->wq, &w->wk, &w->wv}, *gu[2] = {&w->w_gate, &w->w_up};
            const bw_tensor *wo[1] = {&w->wo}, *dn[1] = {&w->w_down};
            if (stack_bytes(qkv, 3, &sz, &lay) || (wbytes += sz, stack_bytes(wo, 1, &sz, &lay)) ||
                (wbytes += sz, stack_bytes(gu, 2, &sz, &lay)) || (wbytes += sz, stack_bytes(dn, 1, &sz, &lay))) {
                snprintf(err, errlen, "CUDA backend: layer %d has a weight type the GPU kernels do not read", l);
                goto fail;
            }
            wbytes += sz + 2 * align256((size_t)c.n_embd * 4);
        }
        const bw_tensor *em[1] = {&m->tok_embd}, *ou[1] = {&m->output};
        if (stack_bytes(em, 1, &sz, &lay)) {
            snprintf(err, errlen, "CUDA backend: token embedding type not supported");
            goto fail;
        }
        wbytes += sz;
        if (!out_tied) {
            if (stack_bytes(ou, 1, &sz, &lay)) {
                snprintf(err, errlen, "CUDA backend: output matrix type not supported");
                goto fail;
            }
            wbytes += sz;
        }
        wbytes += align256((size_t)c.n_embd * 4) + align256((size_t)c.n_rot * 2);
        kv_bytes = (size_t)2 * c.n_layer * p->n_slots * b->n_kv * (size_t)p->n_ctx * sizeof(__half);
        act_bytes = (size_t)b->cap * (c.n_embd + b->n_q + b->n_q + c.n_ff + c.n_vocab) * sizeof(float) +
                    (size_t)4 * b->cap * sizeof(int) + (size_t)2 * b->cap * (sizeof(int) + sizeof(float)) + 4096;
        CU_TRY(cudaMemGetInfo(&free_b, &total_b));
        if (wbytes + kv_bytes + act_bytes + ((size_t)256 << 20) > free_b) {
            snprintf(err, errlen,
                     "CUDA out of memory on %s: weights %.2f GiB + KV cache %.2f GiB (%d slots x %d positions) + "
                     "buffers %.2f GiB, %.2f GiB free; lower --slots or --ctx",
                     prop.name, wbytes / 1073741824.0, kv_bytes / 1073741824.0, p->n_slots, p->n_ctx,
                     act_bytes / 1073741824.0, free_b / 1073741824.0);
            goto fail;
        }
        CU_TRY(cudaMalloc((void **)&b->weights, wbytes));
        CU_TRY(cudaMalloc((void **)&b->kv, kv_bytes));
        CU_TRY(cudaMalloc((void **)&b->x, act_bytes));
        /* Poisoned with NaN so a read of an unwritten cache position shows up in every test. */
        CU_TRY(cudaMemset(b->kv, 0xff, kv_bytes));

        uint8_t *wp = b->weights;
        for (int l = 0; l < c.n_layer; l++) {
            const bw_layer_weights *w = &m->layers[l];
            cu_layer &ly = b->layers[l];
            const bw_tensor *qkv[3] = {&w->wq, &w->wk, &w->wv}, *gu[2] = {&w->w_gate, &w->w_up};
            const bw_tensor *wo[1] = {&w->wo}, *dn[1] = {&w->w_down};
            CU_TRY(stack_upload(qkv, 3, wp, &ly.qkv));
            stack_bytes(qkv, 3, &sz, &lay), wp += sz;
            CU_TRY(stack_upload(wo, 1, wp, &ly.wo));
            stack_bytes(wo, 1, &sz, &lay), wp += sz;
            CU_TRY(stack_upload(gu, 2, wp, &ly.gateup));
            stack_bytes(gu, 2, &sz, &lay), wp += sz;
            CU_TRY(stack_upload(dn, 1, wp, &ly.down));
            stack_bytes(dn, 1, &sz, &lay), wp += sz;
            ly.attn_norm = (float *)wp;
            CU_TRY(vec_upload(&w->attn_norm, c.n_embd, ly.attn_norm));
            wp += align256((size_t)c.n_embd * 4);
            ly.ffn_norm = (float *)wp;
            CU_TRY(vec_upload(&w->ffn_norm, c.n_embd, ly.ffn_norm));
            wp += align256((size_t)c.n_embd * 4);
            const size_t per = (size_t)p->n_slots * b->n_kv * p->n_ctx;
            ly.k = b->kv + (size_t)2 * l * per;
            ly.v = ly.k + per;
        }
        CU_TRY(stack_upload(em, 1, wp, &b->embd));
        stack_bytes(em, 1, &sz, &lay), wp += sz;
        if (out_tied) {
            b->output = b->embd;
        } else {
            CU_TRY(stack_upload(ou, 1, wp, &b->output));
            stack_bytes(ou, 1, &sz, &lay), wp += sz;
        }
        b->out_norm = (float *)wp;
        CU_TRY(vec_upload(&m->out_norm, c.n_embd, b->out_norm));
        wp += align256((size_t)c.n_embd * 4);
        if (m->rope_freqs) {
            b->rope_freqs = (float *)wp;
            CU_TRY(cudaMemcpy(b->rope_freqs, m->rope_freqs, (size_t)(c.n_rot / 2) * sizeof(float),
                              cudaMemcpyHostToDevice));
        }

        float *a = b->x;
        a += (size_t)b->cap * c.n_embd;
        b->q = a, a += (size_t)b->cap * b->n_q;
        b->att = a, a += (size_t)b->cap * b->n_q;
        b->h = a, a += (size_t)b->cap * c.n_ff;
        b->logits = a, a += (size_t)b->cap * c.n_vocab;
        b->meta_d = (int *)a;
        b->top_ids_d = b->meta_d + 4 * b->cap;
        b->top_vals_d = (float *)(b->top_ids_d + 2 * b->cap);

        CU_TRY(cudaMallocHost((void **)&b->meta_h, (size_t)4 * b->cap * sizeof(int)));
        memset(b->meta_h, 0, (size_t)4 * b->cap * sizeof(int));
        CU_TRY(cudaMallocHost((void **)&b->top_ids_h, (size_t)2 * b->cap * (sizeof(int) + sizeof(float))));
        b->top_vals_h = (float *)(b->top_ids_h + 2 * b->cap);
        CU_TRY(cudaMallocHost((void **)&b->logits_h, (size_t)b->cap * c.n_vocab * sizeof(float)));
        CU_TRY(cudaMalloc((void **)&b->samp_rows_d, (size_t)b->cap * sizeof(bw_cu_sample_row)));
        CU_TRY(cudaMalloc((void **)&b->samp_hist_d, (size_t)b->cap * BW_CU_SAMPLE_HIST * sizeof(int32_t)));
        CU_TRY(cudaMalloc((void **)&b->samp_ids_d, (size_t)b->cap * sizeof(int32_t)));
        CU_TRY(cudaMallocHost((void **)&b->samp_rows_h, (size_t)b->cap * sizeof(bw_cu_sample_row)));
        CU_TRY(cudaMallocHost((void **)&b->samp_hist_h, (size_t)b->cap * BW_CU_SAMPLE_HIST * sizeof(int32_t)));
        CU_TRY(cudaMallocHost((void **)&b->samp_ids_h, (size_t)b->cap * sizeof(int32_t)));
        CU_TRY(bw_cu_attention_prepare(p->n_ctx, c.head_dim));
        CU_TRY(cudaDeviceSynchronize());
    }
    fprintf(stderr, "cuda: %s (sm_%d%d, %d SMs), weights %.1f MiB, KV cache %.1f MiB, graphs %s, PDL %s%s\n", prop.name,
            prop.major, prop.minor, b->n_sm, wbytes / 1048576.0, kv_bytes / 1048576.0, b->graphs ? "on" : "off",
            b->pdl ? "on" : "off", b->mma ? ", tensor-core batches" : "");
    return &b->base;

fail:
    cudaGetLastError();
    cuda_destroy(&b->base);
    return NULL;
}
