/* Device helpers every kernel family shares: f16/bf16 loads, warp reductions, the launch wrapper with
 * programmatic dependent launch (PDL), and the error check used by every launcher.
 *
 * PDL contract (Hopper and later; a no-op elsewhere): every kernel calls bw_pdl_wait() before its first
 * read of a buffer written by an earlier kernel AND before its first global write (a later kernel may
 * overwrite what an earlier one still reads). Before the wait it may only touch weights, which no
 * kernel writes. bw_pdl_launch_dependents() lets the next kernel's blocks be scheduled early; they
 * then wait at their own bw_pdl_wait(), which returns once this grid has finished and its writes are
 * visible, so the ordering is the same as plain stream order. */
#ifndef BW_ENGINE_CUDA_COMMON_CUH
#define BW_ENGINE_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#define BW_WARP 32

__device__ __forceinline__ void bw_pdl_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void bw_pdl_launch_dependents()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

/* Weights are the only data read before bw_pdl_wait(): pulling them towards L2 early hides part of
 * the DRAM latency behind the previous kernel's tail. */
__device__ __forceinline__ void bw_prefetch_l2(const void *p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

__device__ __forceinline__ float bw_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float bw_warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ int bw_warp_sum_int(int v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float bw_h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }

__device__ __forceinline__ float bw_bf2f(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

/* Launch configuration shared by the launchers: PDL is requested only where the device has it and the
 * backend has not turned it off. */
struct bw_cu_launch {
    cudaStream_t stream;
    int pdl;
    /* Products of more than 8 tokens of a quantized matrix on the tensor-core tile kernel (about 2x
     * faster prefill). Off by default: its float sums run in another order than the warp kernel's, so a
     * token's logits would then depend on how many tokens share its batch, and continuous batching
     * would stop giving exactly the tokens of one-slot runs. */
    int mma;
};

/* Launches kernel<<<grid, block, smem, stream>>> with the PDL attribute when asked. Template so every
 * launcher gets type-checked arguments. */
template <typename... KArgs, typename... Args>
static inline cudaError_t bw_cu_launch_kernel(const bw_cu_launch &L, dim3 grid, dim3 block, size_t smem,
                                              void (*kernel)(KArgs...), Args... args)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = L.stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = L.pdl ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...);
    if (e != cudaSuccess) return e;
    return cudaGetLastError();
}

#endif
