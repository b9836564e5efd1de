/* The latency of one hand-off inside a persistent kernel, the number a persistent decode step would pay
 * per dependency instead of a kernel boundary (issue 13, item 7):
 *  - grid-wide: one block per SM (a cooperative launch, so all are resident), every block arrives at a
 *    barrier in global memory (an atomic counter and a generation word); the last to arrive releases
 *    the others. ITER rounds; block 0 reads %globaltimer before and after.
 *  - cluster-wide: clusters of 2, 4, 8 and 16 blocks (16 needs the non-portable size), barrier.cluster
 *    arrive/wait (cooperative_groups cluster.sync()), the same ITER rounds, the slowest cluster counted.
 * Prints one line per measurement and "HANDOFF {json}" last; "no CUDA device: skipped" without a GPU.
 * Usage: handoff_bench [ITER] */
#include <cooperative_groups.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

namespace cg = cooperative_groups;

__device__ __forceinline__ unsigned long long globaltimer()
{
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

__device__ __forceinline__ unsigned ld_acquire(const unsigned *p)
{
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ void st_release(unsigned *p, unsigned v)
{
    asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

/* count and gen start at 0; every block calls it the same number of times. */
__device__ __forceinline__ void grid_barrier(unsigned *count, unsigned *gen, unsigned &my_gen)
{
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned g = my_gen;
        if (atomicAdd(count, 1u) == gridDim.x - 1) {
            atomicExch(count, 0u);
            st_release(gen, g + 1);
        } else {
            while (ld_acquire(gen) == g) {
            }
        }
        my_gen = g + 1;
    }
    __syncthreads();
}

__global__ void grid_kernel(unsigned *count, unsigned *gen, int iters, unsigned long long *ns)
{
    unsigned my_gen = 0;
    grid_barrier(count, gen, my_gen); /* everyone has started */
    const unsigned long long t0 = globaltimer();
    for (int i = 0; i < iters; i++) grid_barrier(count, gen, my_gen);
    const unsigned long long t1 = globaltimer();
    if (blockIdx.x == 0 && threadIdx.x == 0) *ns = t1 - t0;
}

__global__ void cluster_kernel(int iters, unsigned long long *ns)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    cg::cluster_group cl = cg::this_cluster();
    cl.sync();
    const unsigned long long t0 = globaltimer();
    for (int i = 0; i < iters; i++) cl.sync();
    const unsigned long long t1 = globaltimer();
    if (threadIdx.x == 0 && cl.block_rank() == 0) atomicMax(ns, t1 - t0);
#else
    (void)iters;
    (void)ns;
#endif
}

#define CK(call)                                                                                                       \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) {                                                                                       \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));                     \
            return 1;                                                                                                  \
        }                                                                                                              \
    } while (0)

int main(int argc, char **argv)
{
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        printf("no CUDA device: skipped\n");
        return 0;
    }
    const int iters = argc > 1 ? atoi(argv[1]) : 2000;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    const int threads = 128;
    unsigned *sync;
    unsigned long long *ns, host_ns;
    CK(cudaMalloc(&sync, 2 * sizeof(unsigned)));
    CK(cudaMalloc(&ns, sizeof *ns));

    /* grid-wide: one block per SM, cooperative so all are resident */
    CK(cudaMemset(sync, 0, 2 * sizeof(unsigned)));
    unsigned *count = sync, *gen = sync + 1;
    int it = iters;
    void *args[] = {&count, &gen, &it, &ns};
    CK(cudaLaunchCooperativeKernel((void *)grid_kernel, dim3(prop.multiProcessorCount), dim3(threads), args, 0, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(&host_ns, ns, sizeof host_ns, cudaMemcpyDeviceToHost));
    const double grid_ns = (double)host_ns / iters;
    printf("grid-wide barrier, %d blocks: %.0f ns per hand-off (%d rounds)\n", prop.multiProcessorCount, grid_ns,
           iters);

    /* cluster-wide */
    double cl_ns[5] = {0};
    const int sizes[5] = {2, 4, 8, 16, 0};
    if (prop.major >= 9) {
        CK(cudaFuncSetAttribute(cluster_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
        for (int k = 0; sizes[k]; k++) {
            const int cs = sizes[k];
            const int n_blocks = (prop.multiProcessorCount / cs) * cs;
            cudaLaunchConfig_t cfg = {};
            cudaLaunchAttribute attr[1];
            cfg.gridDim = dim3(n_blocks);
            cfg.blockDim = dim3(threads);
            attr[0].id = cudaLaunchAttributeClusterDimension;
            attr[0].val.clusterDim.x = cs;
            attr[0].val.clusterDim.y = 1;
            attr[0].val.clusterDim.z = 1;
            cfg.attrs = attr;
            cfg.numAttrs = 1;
            CK(cudaMemset(ns, 0, sizeof *ns));
            const cudaError_t e = cudaLaunchKernelEx(&cfg, cluster_kernel, iters, ns);
            if (e != cudaSuccess) {
                printf("cluster of %d: launch refused (%s)\n", cs, cudaGetErrorString(e));
                cudaGetLastError();
                continue;
            }
            CK(cudaDeviceSynchronize());
            CK(cudaMemcpy(&host_ns, ns, sizeof host_ns, cudaMemcpyDeviceToHost));
            cl_ns[k] = (double)host_ns / iters;
            printf("cluster-wide barrier, clusters of %d (%d blocks): %.0f ns per hand-off\n", cs, n_blocks, cl_ns[k]);
        }
    } else {
        printf("cluster barriers need sm_90: skipped on sm_%d%d\n", prop.major, prop.minor);
    }
    printf("HANDOFF {\"device\":\"%s\",\"sms\":%d,\"iters\":%d,\"grid_ns\":%.1f,\"cluster2_ns\":%.1f,"
           "\"cluster4_ns\":%.1f,\"cluster8_ns\":%.1f,\"cluster16_ns\":%.1f}\n",
           prop.name, prop.multiProcessorCount, iters, grid_ns, cl_ns[0], cl_ns[1], cl_ns[2], cl_ns[3]);
    cudaFree(sync);
    cudaFree(ns);
    return 0;
}
