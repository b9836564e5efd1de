#include "engine/model.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "engine/cpu/kernels.h"

/* Bounds far above any llama-family model, low enough that products of them fit in int and size_t. */
#define MAX_EMBD (1 << 16)
#define MAX_FF (1 << 18)
#define MAX_HEADS 1024
#define MAX_VOCAB (1 << 22)
#define MAX_CTX (1 << 24)

typedef struct {
    bw_model *m;
    const bw_gguf *g;
    char *err;
    size_t errlen;
} loader;

static int fail(loader *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(loader *L, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(L->err, L->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* An integer hyper-parameter in [lo, hi]; `def` < 0 makes the key required. */
static int get_int(loader *L, const char *key, int64_t def, int64_t lo, int64_t hi, int *out)
{
    uint32_t v;
    if (!bw_gguf_find(L->g, key)) {
        if (def < 0) return fail(L, "model file lacks the key %s", key);
        *out = (int)def;
        return 0;
    }
    if (bw_gguf_get_u32(L->g, key, &v)) return fail(L, "key %s is not a non-negative integer", key);
    if (v < lo || v > hi)
        return fail(L, "key %s is %" PRIu32 ", outside the sane range %" PRId64 "..%" PRId64, key, v, lo, hi);
    *out = (int)v;
    return 0;
}

/* A float hyper-parameter in (lo, hi]; absent keys take `def`, or fail when def is NAN. */
static int get_float(loader *L, const char *key, float def, float lo, float hi, float *out)
{
    float v = def;
    if (!bw_gguf_find(L->g, key)) {
        if (isnan(def)) return fail(L, "model file lacks the key %s", key);
    } else if (bw_gguf_get_f32(L->g, key, &v)) {
        return fail(L, "key %s is not a float", key);
    }
    if (!(v > lo && v <= hi)) return fail(L, "key %s is %g, outside the sane range (%g, %g]", key, v, lo, hi);
    *out = v;
    return 0;
}

static int str_is(bw_gguf_str s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.str, lit, s.len) == 0;
}

static int read_config(loader *L, bw_model_config *c)
{
    const bw_gguf *g = L->g;
    bw_gguf_str arch;
    if (bw_gguf_get_str(g, "general.architecture", &arch)) return fail(L, "model file lacks general.architecture");
    char shown[65];
    if (!str_is(arch, "llama")) {
        bw_gguf_str_print(arch, shown, sizeof shown);
        return fail(L, "architecture '%s' is not supported (llama family only)", shown);
    }

    if (get_int(L, "llama.block_count", -1, 1, BW_MAX_LAYERS, &c->n_layer) ||
        get_int(L, "llama.embedding_length", -1, 1, MAX_EMBD, &c->n_embd) ||
        get_int(L, "llama.feed_forward_length", -1, 1, MAX_FF, &c->n_ff) ||
        get_int(L, "llama.attention.head_count", -1, 1, MAX_HEADS, &c->n_head) ||
        get_int(L, "llama.attention.head_count_kv", c->n_head, 1, c->n_head, &c->n_head_kv) ||
        get_int(L, "llama.context_length", -1, 1, MAX_CTX, &c->n_ctx_train))
        return -1;
    if (c->n_embd % c->n_head)
        return fail(L, "embedding width %d is not a multiple of the head count %d", c->n_embd, c->n_head);
    if (c->n_head % c->n_head_kv)
        return fail(L, "head count %d is not a multiple of the key/value head count %d", c->n_head, c->n_head_kv);
    c->head_dim = c->n_embd / c->n_head;
    if (c->head_dim % 2) return fail(L, "head size %d is odd; rotary embeddings need it even", c->head_dim);
    if (get_int(L, "llama.rope.dimension_count", c->head_dim, 2, c->head_dim, &c->n_rot)) return -1;
    if (c->n_rot % 2) return fail(L, "llama.rope.dimension_count %d is odd", c->n_rot);

    if (get_float(L, "llama.rope.freq_base", 10000.0f, 0.0f, 1e12f, &c->rope_base) ||
        get_float(L, "llama.attention.layer_norm_rms_epsilon", NAN, 0.0f, 1.0f, &c->rms_eps))
        return -1;

    c->rope_scale = 1.0f;
    bw_gguf_str st;
    if (bw_gguf_find(g, "llama.rope.scaling.type")) {
        if (bw_gguf_get_str(g, "llama.rope.scaling.type", &st))
            return fail(L, "llama.rope.scaling.type is not a string");
        if (str_is(st, "linear")) {
            if (get_float(L, "llama.rope.scaling.factor", NAN, 0.0f, 1024.0f, &c->rope_scale)) return -1;
        } else if (!str_is(st, "none")) {
            bw_gguf_str_print(st, shown, sizeof shown);
            return fail(L, "rope scaling type '%s' is not supported (only linear and none)", shown);
        }
    }
    return 0;
}

/* Looks a tensor up and checks it is a cols x rows matrix (rows 1: a vector) the kernels can read. */
static int get_tensor(loader *L, bw_tensor *t, const char *name, int64_t cols, int64_t rows, int f32_only)
{
    const bw_gguf_tensor *gt = bw_gguf_find_tensor(L->g, name);
    if (!gt) return fail(L, "model file lacks the tensor %s", name);
    if (gt->ne[0] != cols || gt->ne[1] != rows || gt->ne[2] != 1 || gt->ne[3] != 1) {
        char extra[48] = "";
        if (gt->ne[2] != 1 || gt->ne[3] != 1)
            snprintf(extra, sizeof extra, "x%" PRId64 "x%" PRId64, gt->ne[2], gt->ne[3]);
        return fail(L, "tensor %s has shape %" PRId64 "x%" PRId64 "%s, expected %" PRId64 "x%" PRId64, name,
                    gt->ne[0], gt->ne[1], extra, cols, rows);
    }
    if (f32_only && gt->type != BW_TYPE_F32)
        return fail(L, "tensor %s has type %s, expected F32", name, bw_type_info(gt->type)->name);
    t->row_bytes = bw_type_row_bytes(gt->type, (uint64_t)cols);
    if (t->row_bytes == 0)
        return fail(L, "tensor %s has %" PRId64 " columns, not a multiple of its block size", name, cols);
    /* The file's alignment may be as small as 1; kernels load f16 scales and floats in place. */
    if ((uintptr_t)gt->data % 4)
        return fail(L, "tensor %s is not 4-byte aligned in the file (general.alignment too small)", name);
    t->name = gt->name.str; /* the mapping holds the name; pointing into it keeps bw_tensor borrowable */
    t->type = (enum bw_type)gt->type;
    t->cols = cols;
    t->rows = rows;
    t->data = gt->data;
    return 0;
}

static int get_layer(loader *L, int i, bw_layer_weights *w)
{
    const bw_model_config *c = &L->m->cfg;
    int64_t e = c->n_embd, kv = (int64_t)c->n_head_kv * c->head_dim, ff = c->n_ff;
    struct { bw_tensor *t; const char *part; int64_t cols, rows; int f32; } parts[] = {
        {&w->attn_norm, "attn_norm", e, 1, 1},  {&w->wq, "attn_q", e, e, 0},
        {&w->wk, "attn_k", e, kv, 0},           {&w->wv, "attn_v", e, kv, 0},
        {&w->wo, "attn_output", e, e, 0},       {&w->ffn_norm, "ffn_norm", e, 1, 1},
        {&w->w_gate, "ffn_gate", e, ff, 0},     {&w->w_up, "ffn_up", e, ff, 0},
        {&w->w_down, "ffn_down", ff, e, 0},
    };
    for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.%s.weight", i, parts[k].part);
        if (get_tensor(L, parts[k].t, name, parts[k].cols, parts[k].rows, parts[k].f32)) return -1;
    }
    return 0;
}

/* The API shows the id to clients; keep it printable and bounded whatever the file says. */
static void set_id(bw_model *m, const bw_gguf *g, const char *path)
{
    bw_gguf_str name;
    if (bw_gguf_get_str(g, "general.name", &name) != 0 || name.len == 0) {
        const char *slash = path ? strrchr(path, '/') : NULL;
        name.str = slash ? slash + 1 : path ? path : "model";
        name.len = strlen(name.str);
        if (name.len > 5 && strcmp(name.str + name.len - 5, ".gguf") == 0) name.len -= 5;
    }
    bw_gguf_str_print(name, m->id, sizeof m->id);
}

int bw_model_load(bw_model *m, const bw_gguf *g, const char *path, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    m->gguf = g;
    loader L = {.m = m, .g = g, .err = err, .errlen = errlen};
    bw_model_config *c = &m->cfg;
    if (read_config(&L, c)) return -1;

    const bw_gguf_tensor *te = bw_gguf_find_tensor(g, "token_embd.weight");
    if (!te) return fail(&L, "model file lacks the tensor token_embd.weight");
    int64_t n_vocab = te->ne[1];
    if (bw_gguf_find(g, "llama.vocab_size")) {
        int v;
        if (get_int(&L, "llama.vocab_size", -1, 1, MAX_VOCAB, &v)) return -1;
        n_vocab = v;
    }
    if (n_vocab < 1 || n_vocab > MAX_VOCAB)
        return fail(&L, "vocabulary size %" PRId64 " is outside the sane range 1..%d", n_vocab, MAX_VOCAB);
    c->n_vocab = (int)n_vocab;

    if (get_tensor(&L, &m->tok_embd, "token_embd.weight", c->n_embd, c->n_vocab, 0) ||
        get_tensor(&L, &m->out_norm, "output_norm.weight", c->n_embd, 1, 1))
        return -1;
    if (bw_gguf_find_tensor(g, "output.weight")) {
        if (get_tensor(&L, &m->output, "output.weight", c->n_embd, c->n_vocab, 0)) return -1;
    } else {
        m->output = m->tok_embd;
    }
    if (bw_gguf_find_tensor(g, "rope_freqs.weight")) {
        bw_tensor rf;
        if (get_tensor(&L, &rf, "rope_freqs.weight", c->n_rot / 2, 1, 1)) return -1;
        m->rope_freqs = rf.data;
    }
    for (int i = 0; i < c->n_layer; i++)
        if (get_layer(&L, i, &m->layers[i])) return -1;

    set_id(m, g, path);
    return 0;
}

void bw_model_embed(const bw_model *m, int32_t token, float *out)
{
    const bw_tensor *t = &m->tok_embd;
    if (token < 0 || token >= t->rows) { /* the caller validates tokens; never read outside the table */
        memset(out, 0, (size_t)t->cols * sizeof *out);
        return;
    }
    bw_dequant_row(t->type, (const uint8_t *)t->data + (size_t)token * t->row_bytes, out, t->cols);
}
