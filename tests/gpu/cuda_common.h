/* Shared by the GPU tools (cuda_parity, cuda_bench): load a model file and make a backend. */
#ifndef BW_TESTS_GPU_CUDA_COMMON_H
#define BW_TESTS_GPU_CUDA_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "engine/backend.h"
#include "engine/cuda/backend_cuda.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

typedef struct {
    bw_gguf *g;
    bw_model m;
    bw_tok *tok;
} gpu_tool_model;

static inline int gpu_tool_load(gpu_tool_model *tm, const char *path)
{
    char err[512];
    tm->g = bw_gguf_open(path, err, sizeof err);
    if (!tm->g || bw_model_load(&tm->m, tm->g, path, err, sizeof err) != 0 ||
        !(tm->tok = bw_tok_load(tm->g, err, sizeof err))) {
        fprintf(stderr, "%s: %s\n", path, err);
        return -1;
    }
    return 0;
}

static inline bw_backend *gpu_tool_backend(const gpu_tool_model *tm, int cuda, int slots, int ctx, int batch)
{
    char err[512];
    bw_backend_params p = {0};
    p.n_slots = slots;
    p.n_ctx = ctx;
    p.n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    p.device = 0;
    p.max_batch = batch;
    bw_backend *b =
        cuda ? bw_backend_cuda_create(&tm->m, &p, err, sizeof err) : bw_backend_cpu_create(&tm->m, &p, err, sizeof err);
    if (!b) fprintf(stderr, "%s backend: %s\n", cuda ? "cuda" : "cpu", err);
    return b;
}

static inline double gpu_tool_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
