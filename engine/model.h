/* A decoder-only transformer: hyper-parameters and weight tensors, read from a GGUF file.
 *
 * Owns: the mapping of GGUF keys and tensor names to the transformer's parts, and every shape check
 * between them, for each architecture named by general.architecture (llama, qwen2, qwen3, phi3, gemma3).
 * An architecture is not a separate forward pass: it is the description in bw_model_config (rope style,
 * activation, scales, sliding window) plus which optional tensors a layer has (biases, Q/K norms,
 * post-norms), and the backends read both. Weights stay in the mapped file in their GGUF types; backends
 * read them from here (the CPU directly, the GPU by uploading once). Knows nothing of threads, devices,
 * tokens or sampling. */
#ifndef BW_ENGINE_MODEL_H
#define BW_ENGINE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"
#include "engine/tensor.h"

#define BW_MAX_LAYERS 256

enum bw_rope_style {
    BW_ROPE_NORM, /* llama: rotates adjacent pairs (2i, 2i+1) */
    BW_ROPE_NEOX, /* qwen2, qwen3, phi3, gemma3: rotates (i, i + n_rot/2) */
};

enum bw_ffn_act {
    BW_ACT_SILU, /* SwiGLU: silu(gate) * up */
    BW_ACT_GELU, /* GeGLU: gelu(gate) * up, GELU's tanh approximation */
};

typedef struct {
    char arch[16]; /* general.architecture */
    int n_layer;
    int n_embd;    /* model width */
    int n_head;    /* query heads */
    int n_head_kv; /* key/value heads (GQA when < n_head) */
    int head_dim;  /* attention.key_length, default n_embd / n_head (differs in qwen3, gemma3) */
    int q_dim;     /* n_head * head_dim: width of the queries and of the attention output */
    int n_ff;      /* feed-forward width */
    int n_vocab;
    int n_ctx_train; /* context length the model was trained for */
    int n_rot;       /* rotated dimensions per head (rope.dimension_count, default head_dim) */
    float rope_base;
    float rope_scale; /* linear position scaling: position is multiplied by 1/rope_scale */
    float rms_eps;
    enum bw_rope_style rope_style;
    enum bw_ffn_act act;
    float embd_scale;    /* token embeddings are multiplied by this (gemma: sqrt(n_embd)), else 1 */
    float attn_scale;    /* attention scores are q.k * attn_scale (usually 1/sqrt(head_dim)) */
    float logit_softcap; /* logits = c * tanh(logits / c) when > 0 */
    int n_swa;           /* sliding window in positions for the layers marked swa; 0: none */
} bw_model_config;

/* Weights of one layer. A tensor whose data is NULL is absent: biases, Q/K norms and post-norms exist
 * only in the architectures that have them. Fused files (phi3's attn_qkv and ffn_up) are seen here as
 * row ranges of the fused matrix, so every backend reads separate wq/wk/wv and w_gate/w_up. */
typedef struct {
    bw_tensor attn_norm, wq, wk, wv, wo;
    bw_tensor bq, bk, bv;     /* optional (qwen2) */
    bw_tensor q_norm, k_norm; /* optional per-head RMS norms, head_dim wide (qwen3, gemma3) */
    bw_tensor attn_post_norm; /* optional norm of the attention output before the residual (gemma3) */
    bw_tensor ffn_norm, w_gate, w_up, w_down;
    bw_tensor ffn_post_norm;     /* optional norm of the FFN output before the residual (gemma3) */
    int swa;                     /* 1: attends to the last n_swa positions only */
    float rope_base, rope_scale; /* this layer's rope (gemma3's sliding layers have their own base) */
} bw_layer_weights;

typedef struct {
    bw_model_config cfg;
    bw_tensor tok_embd; /* rows = n_vocab, cols = n_embd */
    bw_tensor out_norm;
    bw_tensor output;        /* == tok_embd when the file ties them */
    const float *rope_freqs; /* optional per-dimension frequency factors (Llama 3.1), n_rot/2, or NULL */
    bw_layer_weights layers[BW_MAX_LAYERS];
    char id[128];          /* model id for the API: general.name or the file's base name */
    char weight_types[96]; /* the file's tensor types, most bytes first ("Q4_1,Q8_0,F32") */
    const bw_gguf *gguf;
} bw_model;

/* Fills m from an open GGUF file. Returns 0, or -1 with a one-line reason ("tensor blk.3.attn_q.weight
 * has shape 576x192, expected 576x576") in err. The model borrows g: close g after the model is done. */
int bw_model_load(bw_model *m, const bw_gguf *g, const char *path, char *err, size_t errlen);

/* Whether the model uses anything beyond the plain llama layer (backends that only implement llama refuse
 * the others with this). */
int bw_model_is_plain_llama(const bw_model *m);

/* The embedding row of one token, dequantized (tok_embd may be quantized) and scaled by embd_scale. */
void bw_model_embed(const bw_model *m, int32_t token, float *out);

#endif
