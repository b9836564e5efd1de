/* The engine's command-line options and the one place that turns them into a loaded model.
 *
 * Owns: option values and their defaults (parsed in main.c), and the load sequence GGUF → model →
 * tokenizer → backend with its error messages. Used by every mode of beeworker-engine (CLI generation,
 * benchmark, daemon). */
#ifndef BW_ENGINE_LOADER_H
#define BW_ENGINE_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "engine/backend.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

typedef struct {
    const char *model_path;
    const char *backend; /* "auto" (default: cuda when built and a device is visible), "cpu" or "cuda" */
    int device;
    int n_slots;            /* 0 = backend default (4 on the CPU, 64 on a GPU) */
    int n_threads;          /* 0 = number of online CPUs */
    int n_ctx;              /* 0 = the model's training context, capped at 4096 */
    int max_batch;          /* prefill chunk, default 512 */
    double prefill_step_ms; /* daemon: see bw_sched_set_prefill_step_ms; < 0 = the scheduler's default */
    int spec_max;           /* draft tokens per job and step (bw_sched_set_spec_max); 0 = off */
    int spec_fixed;         /* bw_sched_set_spec_fixed */
    const char *rundir;     /* daemon mode: where the front's ipc sockets are */
    int tokenizer_only;     /* load the model's metadata and tokenizer, no backend (--tokenize) */
} bw_engine_opts;

typedef struct {
    bw_gguf *gguf;
    bw_model model;
    bw_tok *tok;
    bw_backend *backend;
    int n_ctx;   /* effective context per slot */
    int n_slots; /* effective slots */
} bw_engine;

/* Loads everything; on failure returns -1 with one line in err and leaves nothing allocated.
 * progress (may be NULL) is called with values in [0,1] as loading advances. */
int bw_engine_load(bw_engine *e, const bw_engine_opts *o, void (*progress)(float, void *), void *ctx, char *err,
                   size_t errlen);
void bw_engine_unload(bw_engine *e);

#endif
