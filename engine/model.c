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

static int str_is(bw_gguf_str s, const char *lit) { return s.len == strlen(lit) && memcmp(s.str, lit, s.len) == 0; }

/* What an architecture is, as far as the forward pass cares. Every other difference between them is in
 * which optional tensors their layers carry, found by name. */
enum {
    ARCH_QK_NORM = 1 << 0,     /* blk.N.attn_q_norm / attn_k_norm required */
    ARCH_POST_NORMS = 1 << 1,  /* blk.N.post_attention_norm / post_ffw_norm required */
    ARCH_FUSED_UP = 1 << 2,    /* blk.N.ffn_up holds gate then up (2 x n_ff rows), no ffn_gate */
    ARCH_EMBD_SCALE = 1 << 3,  /* embeddings scaled by sqrt(n_embd) */
    ARCH_SWA = 1 << 4,         /* sliding-window layers (attention.sliding_window), their own rope base */
    ARCH_QKV_FUSED_OK = 1 << 5 /* blk.N.attn_qkv may replace attn_q/attn_k/attn_v */
};

typedef struct {
    const char *name;
    enum bw_rope_style rope;
    enum bw_ffn_act act;
    unsigned flags;
} arch_desc;

static const arch_desc ARCHES[] = {
    {"llama", BW_ROPE_NORM, BW_ACT_SILU, 0},
    {"qwen2", BW_ROPE_NEOX, BW_ACT_SILU, 0},
    {"qwen3", BW_ROPE_NEOX, BW_ACT_SILU, ARCH_QK_NORM},
    {"phi3", BW_ROPE_NEOX, BW_ACT_SILU, ARCH_FUSED_UP | ARCH_QKV_FUSED_OK},
    {"gemma3", BW_ROPE_NEOX, BW_ACT_GELU, ARCH_QK_NORM | ARCH_POST_NORMS | ARCH_EMBD_SCALE | ARCH_SWA},
};

/* "<arch>.<suffix>": every hyper-parameter key is prefixed with the architecture's name. Returned by
 * value, so akey(c, "block_count").s lives until the end of the statement that uses it. */
typedef struct {
    char s[96];
} keyname;

static keyname akey(const bw_model_config *c, const char *suffix)
{
    keyname k;
    snprintf(k.s, sizeof k.s, "%s.%s", c->arch, suffix);
    return k;
}

static int read_rope_scaling(loader *L, bw_model_config *c)
{
    const bw_gguf *g = L->g;
    const keyname type = akey(c, "rope.scaling.type");
    char shown[65];
    c->rope_scale = 1.0f;
    bw_gguf_str st = {6, "linear"}; /* llama.cpp's default when only a factor is given */
    if (bw_gguf_find(g, type.s) && bw_gguf_get_str(g, type.s, &st)) return fail(L, "%s is not a string", type.s);
    if (str_is(st, "none")) return 0;
    if (str_is(st, "llama3")) {
        /* Llama 3.1's scaling lives in the per-dimension factors of rope_freqs.weight (read with the
         * tensors); the type alone carries nothing to apply. */
        if (!bw_gguf_find_tensor(g, "rope_freqs.weight"))
            return fail(L, "%s is 'llama3' but the file lacks the tensor rope_freqs.weight that holds its factors",
                        type.s);
        return 0;
    }
    if (!str_is(st, "linear")) {
        bw_gguf_str_print(st, shown, sizeof shown);
        return fail(L, "rope scaling type '%s' is not supported (only linear, llama3 and none)", shown);
    }
    keyname factor = akey(c, "rope.scaling.factor");
    if (!bw_gguf_find(g, factor.s)) factor = akey(c, "rope.scale_linear"); /* the older name */
    if (bw_gguf_find(g, factor.s) && get_float(L, factor.s, NAN, 0.0f, 1024.0f, &c->rope_scale)) return -1;
    return 0;
}

static int read_config(loader *L, bw_model_config *c, const arch_desc **out)
{
    const bw_gguf *g = L->g;
    bw_gguf_str arch;
    if (bw_gguf_get_str(g, "general.architecture", &arch)) return fail(L, "model file lacks general.architecture");
    const arch_desc *a = NULL;
    for (size_t i = 0; i < sizeof ARCHES / sizeof ARCHES[0]; i++)
        if (str_is(arch, ARCHES[i].name)) a = &ARCHES[i];
    char shown[65];
    if (!a) {
        bw_gguf_str_print(arch, shown, sizeof shown);
        return fail(L, "architecture '%s' is not supported (supported: llama, qwen2, qwen3, phi3, gemma3)", shown);
    }
    *out = a;
    snprintf(c->arch, sizeof c->arch, "%s", a->name);
    c->rope_style = a->rope;
    c->act = a->act;

    if (get_int(L, akey(c, "block_count").s, -1, 1, BW_MAX_LAYERS, &c->n_layer) ||
        get_int(L, akey(c, "embedding_length").s, -1, 1, MAX_EMBD, &c->n_embd) ||
        get_int(L, akey(c, "feed_forward_length").s, -1, 1, MAX_FF, &c->n_ff) ||
        get_int(L, akey(c, "attention.head_count").s, -1, 1, MAX_HEADS, &c->n_head) ||
        get_int(L, akey(c, "attention.head_count_kv").s, c->n_head, 1, c->n_head, &c->n_head_kv) ||
        get_int(L, akey(c, "context_length").s, -1, 1, MAX_CTX, &c->n_ctx_train))
        return -1;
    if (c->n_head % c->n_head_kv)
        return fail(L, "head count %d is not a multiple of the key/value head count %d", c->n_head, c->n_head_kv);
    /* The head size is n_embd / n_head unless attention.key_length says otherwise (qwen3, gemma3). */
    const keyname kl = akey(c, "attention.key_length"), vl = akey(c, "attention.value_length");
    if (!bw_gguf_find(g, kl.s) && c->n_embd % c->n_head)
        return fail(L, "embedding width %d is not a multiple of the head count %d", c->n_embd, c->n_head);
    int v_dim;
    if (get_int(L, kl.s, c->n_embd / c->n_head, 2, 4096, &c->head_dim) ||
        get_int(L, vl.s, c->head_dim, 1, 4096, &v_dim))
        return -1;
    if (v_dim != c->head_dim)
        return fail(L, "%s %d differs from %s %d; separate key and value head sizes are not supported", vl.s, v_dim,
                    kl.s, c->head_dim);
    if (c->head_dim % 2) return fail(L, "head size %d is odd; rotary embeddings need it even", c->head_dim);
    c->q_dim = c->n_head * c->head_dim;
    const keyname rk = akey(c, "rope.dimension_count");
    if (get_int(L, rk.s, c->head_dim, 2, c->head_dim, &c->n_rot)) return -1;
    if (c->n_rot % 2) return fail(L, "%s %d is odd", rk.s, c->n_rot);
    if (a->rope == BW_ROPE_NORM && c->n_rot != c->head_dim)
        return fail(L, "%s is %d, expected the head size %d", rk.s, c->n_rot, c->head_dim);

    if (get_float(L, akey(c, "rope.freq_base").s, 10000.0f, 0.0f, 1e12f, &c->rope_base) ||
        get_float(L, akey(c, "attention.layer_norm_rms_epsilon").s, NAN, 0.0f, 1.0f, &c->rms_eps) ||
        read_rope_scaling(L, c))
        return -1;

    c->embd_scale = (a->flags & ARCH_EMBD_SCALE) ? sqrtf((float)c->n_embd) : 1.0f;
    c->attn_scale = 1.0f / sqrtf((float)c->head_dim);
    /* Gemma 3 27B scales queries by 1/sqrt(n_embd / n_head) rather than by the head size (its
     * query_pre_attn_scalar); the GGUF carries no key for it, so llama.cpp tells it by its 62 layers. */
    if (a->flags & ARCH_EMBD_SCALE && c->n_layer == 62) c->attn_scale = 1.0f / sqrtf((float)(c->n_embd / c->n_head));
    c->logit_softcap = 0.0f;
    const keyname sc = akey(c, "final_logit_softcapping");
    if (bw_gguf_find(g, sc.s) && get_float(L, sc.s, NAN, 0.0f, 1e6f, &c->logit_softcap)) return -1;
    return 0;
}

/* Sliding-window layers (gemma3): window size, which layers slide (every layer but each n-th of
 * attention.sliding_window_pattern, default 6) and their rope base. Other architectures attend to the
 * whole context. */
static int read_swa(loader *L, bw_model *m, const arch_desc *a)
{
    bw_model_config *c = &m->cfg;
    for (int i = 0; i < c->n_layer; i++) {
        m->layers[i].swa = 0;
        m->layers[i].rope_base = c->rope_base;
        m->layers[i].rope_scale = c->rope_scale;
    }
    c->n_swa = 0;
    /* phi3 files may name a window too; llama.cpp ignores it for phi3, and so do we, to stay equal. */
    if (!(a->flags & ARCH_SWA)) return 0;
    if (get_int(L, akey(c, "attention.sliding_window").s, 0, 0, MAX_CTX, &c->n_swa)) return -1;
    if (c->n_swa == 0) return 0;
    float base_swa;
    if (get_float(L, akey(c, "rope.freq_base_swa").s, 10000.0f, 0.0f, 1e12f, &base_swa)) return -1;
    const keyname pk = akey(c, "attention.sliding_window_pattern");
    const bw_gguf_kv *kv = bw_gguf_find(L->g, pk.s);
    int pattern = 6;
    if (kv && kv->type == BW_GGUF_ARRAY) return fail(L, "%s as a per-layer array is not supported", pk.s);
    if (get_int(L, pk.s, 6, 0, BW_MAX_LAYERS, &pattern)) return -1;
    for (int i = 0; i < c->n_layer; i++) {
        /* with pattern n, layers n-1, 2n-1, ... attend globally; pattern 0: every layer slides */
        int swa = pattern == 0 || i % pattern < pattern - 1;
        m->layers[i].swa = swa;
        if (swa) {
            m->layers[i].rope_base = base_swa;
            m->layers[i].rope_scale = 1.0f;
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
        return fail(L, "tensor %s has shape %" PRId64 "x%" PRId64 "%s, expected %" PRId64 "x%" PRId64, name, gt->ne[0],
                    gt->ne[1], extra, cols, rows);
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

/* Rows [r0, r0 + n) of a fused matrix (or elements of a fused bias) as a tensor of their own. */
static int slice_rows(loader *L, bw_tensor *out, const bw_tensor *fused, int64_t r0, int64_t n)
{
    *out = *fused;
    if (fused->rows == 1) { /* a vector: slice its elements (float32 only, checked by the caller) */
        out->cols = n;
        out->row_bytes = (size_t)n * sizeof(float);
        out->data = (const float *)fused->data + r0;
        return 0;
    }
    out->rows = n;
    out->data = (const uint8_t *)fused->data + (size_t)r0 * fused->row_bytes;
    if ((uintptr_t)out->data % 4)
        return fail(L, "tensor %s: its row %" PRId64 " is not 4-byte aligned, cannot split it", fused->name, r0);
    return 0;
}

/* An optional tensor: absent leaves t zeroed (data NULL); present must have the shape. */
static int opt_tensor(loader *L, bw_tensor *t, const char *name, int64_t cols, int64_t rows, int f32_only)
{
    if (!bw_gguf_find_tensor(L->g, name)) {
        memset(t, 0, sizeof *t);
        return 0;
    }
    return get_tensor(L, t, name, cols, rows, f32_only);
}

static int get_layer(loader *L, int i, bw_layer_weights *w, const arch_desc *a)
{
    const bw_model_config *c = &L->m->cfg;
    const int64_t e = c->n_embd, q = c->q_dim, kv = (int64_t)c->n_head_kv * c->head_dim, ff = c->n_ff, hd = c->head_dim;
    char n[64];
#define NAME(part) (snprintf(n, sizeof n, "blk.%d.%s", i, part), n)
    if (get_tensor(L, &w->attn_norm, NAME("attn_norm.weight"), e, 1, 1) ||
        get_tensor(L, &w->wo, NAME("attn_output.weight"), q, e, 0) ||
        get_tensor(L, &w->ffn_norm, NAME("ffn_norm.weight"), e, 1, 1) ||
        get_tensor(L, &w->w_down, NAME("ffn_down.weight"), ff, e, 0))
        return -1;

    if ((a->flags & ARCH_QKV_FUSED_OK) && bw_gguf_find_tensor(L->g, NAME("attn_qkv.weight"))) {
        bw_tensor qkv, b;
        if (get_tensor(L, &qkv, n, e, q + 2 * kv, 0) || slice_rows(L, &w->wq, &qkv, 0, q) ||
            slice_rows(L, &w->wk, &qkv, q, kv) || slice_rows(L, &w->wv, &qkv, q + kv, kv) ||
            opt_tensor(L, &b, NAME("attn_qkv.bias"), q + 2 * kv, 1, 1))
            return -1;
        memset(&w->bq, 0, sizeof w->bq);
        memset(&w->bk, 0, sizeof w->bk);
        memset(&w->bv, 0, sizeof w->bv);
        if (b.data && (slice_rows(L, &w->bq, &b, 0, q) || slice_rows(L, &w->bk, &b, q, kv) ||
                       slice_rows(L, &w->bv, &b, q + kv, kv)))
            return -1;
    } else {
        if ((a->flags & ARCH_QKV_FUSED_OK) && !bw_gguf_find_tensor(L->g, NAME("attn_q.weight")))
            return fail(L, "model file lacks the tensor blk.%d.attn_qkv.weight (and separate attn_q/attn_k/attn_v)", i);
        if (get_tensor(L, &w->wq, NAME("attn_q.weight"), e, q, 0) ||
            get_tensor(L, &w->wk, NAME("attn_k.weight"), e, kv, 0) ||
            get_tensor(L, &w->wv, NAME("attn_v.weight"), e, kv, 0) ||
            opt_tensor(L, &w->bq, NAME("attn_q.bias"), q, 1, 1) ||
            opt_tensor(L, &w->bk, NAME("attn_k.bias"), kv, 1, 1) ||
            opt_tensor(L, &w->bv, NAME("attn_v.bias"), kv, 1, 1))
            return -1;
    }

    if (a->flags & ARCH_FUSED_UP) {
        bw_tensor up;
        if (get_tensor(L, &up, NAME("ffn_up.weight"), e, 2 * ff, 0) || slice_rows(L, &w->w_gate, &up, 0, ff) ||
            slice_rows(L, &w->w_up, &up, ff, ff))
            return -1;
    } else if (get_tensor(L, &w->w_gate, NAME("ffn_gate.weight"), e, ff, 0) ||
               get_tensor(L, &w->w_up, NAME("ffn_up.weight"), e, ff, 0)) {
        return -1;
    }

    memset(&w->q_norm, 0, sizeof w->q_norm);
    memset(&w->k_norm, 0, sizeof w->k_norm);
    memset(&w->attn_post_norm, 0, sizeof w->attn_post_norm);
    memset(&w->ffn_post_norm, 0, sizeof w->ffn_post_norm);
    if ((a->flags & ARCH_QK_NORM) && (get_tensor(L, &w->q_norm, NAME("attn_q_norm.weight"), hd, 1, 1) ||
                                      get_tensor(L, &w->k_norm, NAME("attn_k_norm.weight"), hd, 1, 1)))
        return -1;
    if ((a->flags & ARCH_POST_NORMS) &&
        (get_tensor(L, &w->attn_post_norm, NAME("post_attention_norm.weight"), e, 1, 1) ||
         get_tensor(L, &w->ffn_post_norm, NAME("post_ffw_norm.weight"), e, 1, 1)))
        return -1;
#undef NAME
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

/* The tensor types of the file, the type holding the most bytes first, for the operator to see. */
static void set_weight_types(bw_model *m, const bw_gguf *g)
{
    uint64_t bytes[64] = {0};
    for (uint64_t i = 0; i < bw_gguf_n_tensors(g); i++) {
        const bw_gguf_tensor *t = bw_gguf_tensor_at(g, i);
        if (t->type < 64) bytes[t->type] += t->nbytes;
    }
    size_t n = 0;
    m->weight_types[0] = '\0';
    for (;;) {
        int best = -1;
        for (int k = 0; k < 64; k++)
            if (bytes[k] && (best < 0 || bytes[k] > bytes[best])) best = k;
        if (best < 0) break;
        bytes[best] = 0;
        const struct bw_type_info *ti = bw_type_info((uint32_t)best);
        int w = snprintf(m->weight_types + n, sizeof m->weight_types - n, "%s%s", n ? "," : "", ti ? ti->name : "?");
        if (w < 0 || (size_t)w >= sizeof m->weight_types - n) break;
        n += (size_t)w;
    }
}

int bw_model_load(bw_model *m, const bw_gguf *g, const char *path, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    m->gguf = g;
    loader L = {.m = m, .g = g, .err = err, .errlen = errlen};
    bw_model_config *c = &m->cfg;
    const arch_desc *a = NULL;
    if (read_config(&L, c, &a)) return -1;

    const bw_gguf_tensor *te = bw_gguf_find_tensor(g, "token_embd.weight");
    if (!te) return fail(&L, "model file lacks the tensor token_embd.weight");
    int64_t n_vocab = te->ne[1];
    const keyname vk = akey(c, "vocab_size");
    if (bw_gguf_find(g, vk.s)) {
        int v;
        if (get_int(&L, vk.s, -1, 1, MAX_VOCAB, &v)) return -1;
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
    /* Phi-3's 128k-context files stretch rope with LongRoPE factors (and a matching attention factor),
     * which this engine does not implement: refuse rather than run them with a wrong rope. */
    if (bw_gguf_find_tensor(g, "rope_factors_long.weight") || bw_gguf_find_tensor(g, "rope_factors_short.weight"))
        return fail(&L, "model file uses LongRoPE (rope_factors_long/short.weight), which is not supported");
    if (bw_gguf_find_tensor(g, "rope_freqs.weight")) {
        bw_tensor rf;
        if (get_tensor(&L, &rf, "rope_freqs.weight", c->n_rot / 2, 1, 1)) return -1;
        m->rope_freqs = rf.data;
        for (int i = 0; i < c->n_rot / 2; i++)
            if (!(m->rope_freqs[i] > 0.0f && m->rope_freqs[i] < 1e30f))
                return fail(&L, "rope_freqs.weight[%d] is %g; frequency factors must be positive and finite", i,
                            m->rope_freqs[i]);
    }
    for (int i = 0; i < c->n_layer; i++)
        if (get_layer(&L, i, &m->layers[i], a)) return -1;
    if (read_swa(&L, m, a)) return -1;

    set_id(m, g, path);
    set_weight_types(m, g);
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
    if (m->cfg.embd_scale != 1.0f)
        for (int64_t i = 0; i < t->cols; i++) out[i] *= m->cfg.embd_scale;
}

int bw_model_is_plain_llama(const bw_model *m)
{
    const bw_model_config *c = &m->cfg;
    if (strcmp(c->arch, "llama") || c->q_dim != c->n_embd || c->n_swa || c->logit_softcap > 0) return 0;
    for (int l = 0; l < c->n_layer; l++) {
        const bw_layer_weights *w = &m->layers[l];
        if (w->bq.data || w->bk.data || w->bv.data || w->q_norm.data || w->attn_post_norm.data) return 0;
    }
    return 1;
}
