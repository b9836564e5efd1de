/* The load sequence shared by every engine mode: GGUF → model → tokenizer → backend. */
#include "engine/loader.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

static void report(void (*progress)(float, void *), void *ctx, float v)
{
    if (progress) progress(v, ctx);
}

int bw_engine_load(bw_engine *e, const bw_engine_opts *o, void (*progress)(float, void *), void *ctx, char *err,
                   size_t errlen)
{
    memset(e, 0, sizeof *e);
    const char *want = o->backend ? o->backend : "auto";
    int autosel = strcmp(want, "auto") == 0;
    /* auto: the GPU when this build has CUDA and a device is visible, otherwise the CPU. */
    int cuda = strcmp(want, "cuda") == 0 || (autosel && bw_backend_cuda_available());
    report(progress, ctx, 0.0f);
    e->gguf = bw_gguf_open(o->model_path, err, errlen);
    if (!e->gguf) return -1;
    report(progress, ctx, 0.1f);
    if (bw_model_load(&e->model, e->gguf, o->model_path, err, errlen)) goto fail;
    e->tok = bw_tok_load(e->gguf, err, errlen);
    if (!e->tok) goto fail;
    if (bw_tok_n_vocab(e->tok) != e->model.cfg.n_vocab) {
        snprintf(err, errlen, "tokenizer has %d tokens but the output matrix has %d rows", bw_tok_n_vocab(e->tok),
                 e->model.cfg.n_vocab);
        goto fail;
    }
    report(progress, ctx, 0.3f);
    if (o->tokenizer_only) return 0; /* no KV cache, no threads, no device for a tokenizer */

    e->n_ctx = o->n_ctx > 0 ? o->n_ctx : 4096;
    if (e->n_ctx > e->model.cfg.n_ctx_train) e->n_ctx = e->model.cfg.n_ctx_train;
    e->n_slots = o->n_slots > 0 ? o->n_slots : (cuda ? 64 : 4);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    bw_backend_params bp = {
        .n_slots = e->n_slots,
        .n_ctx = e->n_ctx,
        .n_threads = o->n_threads > 0 ? o->n_threads : (ncpu > 0 ? (int)ncpu : 1),
        .device = o->device,
        .max_batch = o->max_batch > 0 ? o->max_batch : 512,
    };
    if (autosel)
        bw_log_info("backend auto: %s", cuda ? "a CUDA device is visible, using cuda"
                                             : "no CUDA device visible (or a build without CUDA), using cpu");
    e->backend = cuda ? bw_backend_cuda_create(&e->model, &bp, err, errlen) : NULL;
    if (!e->backend && cuda && autosel) {
        /* auto never fails where the CPU can run the model (e.g. a weight type the GPU kernels lack). */
        bw_log_warn("backend auto: cuda refused (%s); using cpu", err);
        bp.n_slots = e->n_slots = o->n_slots > 0 ? o->n_slots : 4;
        cuda = 0;
    }
    if (!cuda) e->backend = bw_backend_cpu_create(&e->model, &bp, err, errlen);
    if (!e->backend) goto fail;
    report(progress, ctx, 1.0f);
    bw_log_info("loaded %s (%s, %s): %d layers, width %d, vocab %d, context %d x %d slots, backend %s", e->model.id,
                e->model.cfg.arch, e->model.weight_types, e->model.cfg.n_layer, e->model.cfg.n_embd,
                e->model.cfg.n_vocab, e->n_ctx, e->n_slots, e->backend->ops->name);
    return 0;
fail:
    bw_engine_unload(e);
    return -1;
}

void bw_engine_unload(bw_engine *e)
{
    bw_backend_destroy(e->backend);
    bw_tok_free(e->tok);
    bw_gguf_close(e->gguf);
    memset(e, 0, sizeof *e);
}
