/* The CUDA backend entry points for a build without CUDA: every call says so. */
#include <stdio.h>

#include "engine/backend.h"
#include "engine/cuda/backend_cuda.h"

int bw_backend_cuda_available(void) { return 0; }

bw_backend *bw_backend_cuda_create(const bw_model *m, const bw_backend_params *p, char *err, size_t errlen)
{
    (void)m;
    (void)p;
    snprintf(err, errlen,
             "this beeworker-engine was built without CUDA (use --backend cpu or auto, or rebuild with nvcc installed, "
             "-Dcuda=enabled)");
    return NULL;
}

int bw_backend_is_cuda(const bw_backend *b)
{
    (void)b;
    return 0;
}

int bw_backend_cuda_forward_top2(bw_backend *b, const bw_batch *batch, int32_t *ids, float *vals)
{
    (void)b;
    (void)batch;
    (void)ids;
    (void)vals;
    return -1;
}

int bw_backend_cuda_forward_sample(bw_backend *b, const bw_batch *batch, const bw_cuda_sample_req *req, int32_t *ids,
                                   float *fallback_logits)
{
    (void)b;
    (void)batch;
    (void)req;
    (void)ids;
    (void)fallback_logits;
    return -1;
}
