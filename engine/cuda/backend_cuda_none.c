/* The CUDA backend entry points for a build without CUDA: every call says so. */
#include <stdio.h>

#include "engine/backend.h"

int bw_backend_cuda_available(void)
{
    return 0;
}

bw_backend *bw_backend_cuda_create(const bw_model *m, const bw_backend_params *p, char *err, size_t errlen)
{
    (void)m;
    (void)p;
    snprintf(err, errlen, "this beeworker-engine was built without CUDA (rebuild with nvcc installed, -Dcuda=enabled)");
    return NULL;
}
