/* For the kernel tests and benchmarks, which run every SIMD path in turn on one machine. */
#ifndef BW_TESTS_KERNEL_PATH_H
#define BW_TESTS_KERNEL_PATH_H

#include <stdlib.h>
#include <string.h>

#include "engine/cpu/kernels.h"

/* Selects a kernel path by name ("avx512vnni", "avx2", "portable") through bw_kernels_init. */
static inline void use_path(const char *name)
{
    if (strcmp(name, "portable") == 0) {
        bw_kernels_init(1);
        return;
    }
    if (strcmp(name, "avx2") == 0) setenv("BW_KERNELS", "avx2", 1);
    else unsetenv("BW_KERNELS");
    bw_kernels_init(0);
}

#endif
