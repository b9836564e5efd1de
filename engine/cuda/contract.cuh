/* Kernels that follow the numerics contract (engine/cuda/NUMERICS.md, arithmetic in numerics.h):
 *  - bw_cu_nm_prepare: one step's activation rows, RMS-normalised if asked and quantized to 8 bits per
 *    block of 32, once for every product that reads them. Output per token t: q[t*K ..] int8,
 *    d[t*nb ..], s[t*nb ..] halves (as uint16 bits).
 *  - bw_cu_nm_matvec: y[t*ldy + r] = the contract's product of GGUF weight row r with prepared row t.
 *    One warp per (row, token); lane j owns a run of adjacent groups. A token's result does not depend on
 *    n_tok or on the grid. This is the reference implementation on the device, the one the faster
 *    kernels must match bit for bit; it reads the weights in their GGUF layout.
 * Both return cudaErrorInvalidValue for shapes outside the contract (K not a multiple of 32, more than
 * 256 groups of 8 blocks, an unknown kind). */
#ifndef BW_ENGINE_CUDA_CONTRACT_CUH
#define BW_ENGINE_CUDA_CONTRACT_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "engine/cuda/numerics.h"

struct bw_cu_qrows {
    int8_t *q;   /* n_tok * K */
    uint16_t *d; /* n_tok * K/32 */
    uint16_t *s; /* n_tok * K/32 */
};

/* x: n_tok rows of K floats, ldx apart; norm: K weights or NULL (no normalisation). */
cudaError_t bw_cu_nm_prepare(cudaStream_t st, const float *x, int ldx, int n_tok, int K, const float *norm, float eps,
                             bw_cu_qrows out);

/* kind: BW_NM_Q4_0, BW_NM_Q4_1, BW_NM_Q8_0; w: rows GGUF rows of K elements. */
cudaError_t bw_cu_nm_matvec(cudaStream_t st, int kind, const uint8_t *w, int rows, int K, bw_cu_qrows a, int n_tok,
                            float *y, int ldy);

#endif
