/* The kernel families of the CUDA backend, as host-callable launchers. backend_cuda.cu chains them into
 * the forward pass; tests/gpu/test_cuda_kernels.cu checks each against a CPU reference.
 *
 * Every launcher enqueues on L.stream, returns the launch's cudaError_t (cudaSuccess or the reason),
 * and never synchronises, so a sequence of them can be captured into a CUDA graph. Shapes are not
 * re-validated here: the backend checks the model's shapes once at load. */
#ifndef BW_ENGINE_CUDA_OPS_CUH
#define BW_ENGINE_CUDA_OPS_CUH

#include "engine/cuda/common.cuh"

/* A weight matrix in the layout of engine/cuda/repack.h. */
struct bw_cu_mat {
    int type; /* enum bw_type */
    int rows, cols;
    const void *q; /* quants (or the float data) */
    const void *s; /* scales; NULL for float types */
};

/* The activation side of a product: row t of the product reads row idx[t] (row t when idx is NULL)
 * of x, RMS-normalised with weight norm (K floats) when norm is not NULL. The kernel quantises it to
 * 8 bits per 32-element block (d = max|v|/127, q = round(v*127/max|v|), s = d*sum(q)) for quantized weights,
 * exactly as the CPU backend does (id = 127/max|v|, round half to even), or keeps it in float for float
 * weights. */
struct bw_cu_act {
    const float *x;
    int ldx;
    const int *idx;
    const float *norm;
    float eps;
};

/* What the product does with each output pair (row r, row r') of token t:
 *  STORE  y[t][r] = v                        (r' = r + 1)
 *  ADD    y[t][r] += v                       (r' = r + 1; the residual stream)
 *  SWIGLU y[t][r] = silu(v_r) * v_r'         (r' = r + rows/2: the stacked gate|up matrix; y has rows/2)
 *  QKV    rows of the stacked [Q | K | V] matrix: RoPE on Q and K pairs, Q to qkv.q, K and V into the
 *         cache of slot[t] at pos[t]. */
enum { BW_EPI_STORE = 0, BW_EPI_ADD = 1, BW_EPI_SWIGLU = 2, BW_EPI_QKV = 3 };

/* KV cache of one layer: [slot][kv_head][n_ctx][head_dim] halves, K and V alike. */
struct bw_cu_qkv {
    float *q; /* [t][n_q] */
    __half *k_cache;
    __half *v_cache;
    const int *pos;  /* [t] */
    const int *slot; /* [t] */
    int n_q, n_k;    /* rows of Q, rows of K (= rows of V) */
    int head_dim, n_rot, n_ctx, n_head_kv;
    float theta_scale;       /* powf(rope_base, -2 / n_rot), computed on the host */
    float pos_scale;         /* 1 / rope_scale */
    const float *rope_freqs; /* n_rot/2 frequency divisors, or NULL */
};

/* y = W x for n_tok tokens, with the epilogue above. y has leading dimension ldy. qkv only for QKV.
 * max_blocks caps the grid's x dimension (blocks loop over the rows). */
cudaError_t bw_cu_matmul(const bw_cu_launch &L, const bw_cu_mat &W, const bw_cu_act &in, int n_tok, int epi, float *y,
                         int ldy, const bw_cu_qkv *qkv, int max_blocks);

/* Attention of n_tok queries over the KV cache: query t (head h at q[t*ldq + h*head_dim]) attends to
 * positions 0..pos[t] of slot[t]; softmax(q.k * scale) v to out[t*ldo + h*head_dim]. GQA: query head h
 * reads kv head h / (n_head / n_head_kv). */
struct bw_cu_attn {
    const float *q;
    int ldq;
    const __half *k_cache;
    const __half *v_cache;
    const int *pos;
    const int *slot;
    float *out;
    int ldo;
    int n_head, n_head_kv, head_dim, n_ctx;
    float scale;
};
cudaError_t bw_cu_attention(const bw_cu_launch &L, const bw_cu_attn &a, int n_tok);
/* Dynamic shared memory the attention kernel needs (none: its shared memory does not grow with the
 * context), and the once-before-capture setup that goes with it; kept so callers need not change when
 * a kernel variant does need it. */
cudaError_t bw_cu_attention_prepare(int n_ctx, int head_dim);
size_t bw_cu_attention_smem(int n_ctx, int head_dim);

/* x[t] = row tok[t] of E, dequantized to float (E.cols floats per row). */
cudaError_t bw_cu_embed(const bw_cu_launch &L, const bw_cu_mat &E, const int *tok, int n_tok, float *x);

/* For each of n_rows rows of n floats: the two largest values and their indices (ties: lowest index
 * first), ids[2r], ids[2r+1], vals likewise. Greedy sampling reads ids[2r]. */
cudaError_t bw_cu_top2(const bw_cu_launch &L, const float *logits, int n_rows, int n, int *ids, float *vals);

#endif
