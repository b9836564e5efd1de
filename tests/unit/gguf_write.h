/* A minimal GGUF v3 writer for tests: metadata only, no tensors. Tests build tokenizers (and hostile
 * metadata) from it, so they need no model file. Header-only: each test is a single file.
 *
 *   gw w = {0};
 *   kv_str(&w, "tokenizer.ggml.model", "gpt2");   ... more keys ...
 *   size_t n; unsigned char *file = gw_file(&w, &n);   (w is emptied; free(file) when done) */
#ifndef BW_TESTS_UNIT_GGUF_WRITE_H
#define BW_TESTS_UNIT_GGUF_WRITE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"

typedef struct {
    unsigned char *p;
    size_t n, cap;
    uint64_t n_kv;
} gw;

static inline void raw(gw *w, const void *s, size_t n)
{
    if (n == 0) return;
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 256;
        w->p = realloc(w->p, w->cap);
    }
    memcpy(w->p + w->n, s, n);
    w->n += n;
}
static inline void u32(gw *w, uint32_t v) { raw(w, &v, 4); }
static inline void u64(gw *w, uint64_t v) { raw(w, &v, 8); }
static inline void str(gw *w, const char *s)
{
    u64(w, strlen(s));
    raw(w, s, strlen(s));
}
static inline void key(gw *w, const char *k, uint32_t type)
{
    str(w, k);
    u32(w, type);
    w->n_kv++;
}
static inline void kv_str(gw *w, const char *k, const char *v)
{
    key(w, k, BW_GGUF_STRING);
    str(w, v);
}
static inline void kv_u32(gw *w, const char *k, uint32_t v)
{
    key(w, k, BW_GGUF_U32);
    u32(w, v);
}
static inline void kv_strs(gw *w, const char *k, const char *const *v, int n)
{
    key(w, k, BW_GGUF_ARRAY);
    u32(w, BW_GGUF_STRING);
    u64(w, (uint64_t)n);
    for (int i = 0; i < n; i++) str(w, v[i]);
}
static inline void kv_i32s(gw *w, const char *k, const int32_t *v, int n)
{
    key(w, k, BW_GGUF_ARRAY);
    u32(w, BW_GGUF_I32);
    u64(w, (uint64_t)n);
    raw(w, v, 4 * (size_t)n);
}
static inline void kv_f32s(gw *w, const char *k, const float *v, int n)
{
    key(w, k, BW_GGUF_ARRAY);
    u32(w, BW_GGUF_F32);
    u64(w, (uint64_t)n);
    raw(w, v, 4 * (size_t)n);
}

/* The whole file (header, the metadata written so far, padding to 32 bytes); empties w. */
static inline unsigned char *gw_file(gw *w, size_t *len)
{
    gw f = {0};
    raw(&f, "GGUF", 4);
    u32(&f, 3);
    u64(&f, 0);
    u64(&f, w->n_kv);
    raw(&f, w->p, w->n);
    while (f.n % 32) raw(&f, "", 1);
    free(w->p);
    memset(w, 0, sizeof *w);
    *len = f.n;
    return f.p;
}

#endif
