/* A llama-family model: hyper-parameters and weight tensors, read from a GGUF file.
 *
 * Owns: the mapping of GGUF keys and tensor names to the transformer's parts, and every shape check
 * between them. Weights stay in the mapped file in their GGUF types; backends read them from here (the
 * CPU directly, the GPU by uploading once). Knows nothing of threads, devices, tokens or sampling. */
#ifndef BW_ENGINE_MODEL_H
#define BW_ENGINE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"
#include "engine/tensor.h"

#define BW_MAX_LAYERS 256

typedef struct {
    int n_layer;
    int n_embd;      /* model width */
    int n_head;      /* query heads */
    int n_head_kv;   /* key/value heads (GQA when < n_head) */
    int head_dim;    /* n_embd / n_head */
    int n_ff;        /* feed-forward width */
    int n_vocab;
    int n_ctx_train; /* context length the model was trained for */
    int n_rot;       /* rotated dimensions per head (rope.dimension_count, default head_dim) */
    float rope_base;
    float rope_scale; /* linear position scaling: position is multiplied by 1/rope_scale */
    float rms_eps;
} bw_model_config;

typedef struct {
    bw_tensor attn_norm, wq, wk, wv, wo;
    bw_tensor ffn_norm, w_gate, w_up, w_down;
} bw_layer_weights;

typedef struct {
    bw_model_config cfg;
    bw_tensor tok_embd;  /* rows = n_vocab, cols = n_embd */
    bw_tensor out_norm;
    bw_tensor output;    /* == tok_embd when the file ties them */
    const float *rope_freqs; /* optional per-dimension frequency factors (Llama 3.1), n_rot/2, or NULL */
    bw_layer_weights layers[BW_MAX_LAYERS];
    char id[128];        /* model id for the API: general.name or the file's base name */
    const bw_gguf *gguf;
} bw_model;

/* Fills m from an open GGUF file. Returns 0, or -1 with a one-line reason ("tensor blk.3.attn_q.weight
 * has shape 576x192, expected 576x576") in err. The model borrows g: close g after the model is done. */
int bw_model_load(bw_model *m, const bw_gguf *g, const char *path, char *err, size_t errlen);

/* The embedding row of one token, dequantized (tok_embd may be quantized). */
void bw_model_embed(const bw_model *m, int32_t token, float *out);

#endif
