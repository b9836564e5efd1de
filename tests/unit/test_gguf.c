/* GGUF reader and llama model loader: well-formed files parse, every class of malformed file is refused
 * with one line that names the problem, and the default model loads with the expected shape.
 *
 * Usage: test_gguf [MODEL.gguf]   (or BW_MODEL=...; the real-model part is skipped when absent) */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/tensor.h"

#include "check.h"

/* ---- a little GGUF writer ---------------------------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} buf;

static void put(buf *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) exit(2);
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}
static void put_u8(buf *b, uint8_t v) { put(b, &v, 1); }
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_f32(buf *b, float v) { put(b, &v, 4); }
static void put_str(buf *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void pad_to(buf *b, size_t align)
{
    while (b->len % align) put_u8(b, 0);
}

static void header(buf *b, const char *magic, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    put(b, magic, 4);
    put_u32(b, version);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}
static void kv_head(buf *b, const char *key, uint32_t type)
{
    put_str(b, key);
    put_u32(b, type);
}
static void kv_u32(buf *b, const char *key, uint32_t v)
{
    kv_head(b, key, BW_GGUF_U32);
    put_u32(b, v);
}
static void kv_f32(buf *b, const char *key, float v)
{
    kv_head(b, key, BW_GGUF_F32);
    put_f32(b, v);
}
static void kv_str(buf *b, const char *key, const char *v)
{
    kv_head(b, key, BW_GGUF_STRING);
    put_str(b, v);
}

static void tensor_info(buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset)
{
    put_str(b, name);
    put_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) put_u64(b, ne[i]);
    put_u32(b, type);
    put_u64(b, offset);
}

static char tmpdir[] = "/tmp/test_gguf.XXXXXX";

static const char *write_file(const buf *b, size_t len, const char *name)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(b->p, 1, len, f) != len) || fclose(f)) {
        perror(path);
        exit(2);
    }
    return path;
}

/* ---- a well-formed file ------------------------------------------------------------------------------ */

struct good_tensor {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[4];
    uint32_t type;
    uint64_t nbytes;
};
static const struct good_tensor good_tensors[] = {
    {"a.vector", 1, {8}, BW_TYPE_F32, 32},    {"b.q8", 2, {32, 2}, BW_TYPE_Q8_0, 68},
    {"c.half", 2, {4, 3}, BW_TYPE_F16, 24},   {"d.bf16.cube", 3, {2, 2, 2}, BW_TYPE_BF16, 16},
    {"e.q4_1", 2, {64, 1}, BW_TYPE_Q4_1, 40},
};
#define N_GOOD (sizeof good_tensors / sizeof good_tensors[0])
static const char *const good_tokens[] = {"a", "bc", "",
                                          "d\xc3\xa9"
                                          "f"};

/* Returns the offset of the data section. Tensor data bytes are (offset + index) & 0xff, and the last
 * tensor ends the file, so that every shorter prefix is a truncated file. */
static size_t build_good(buf *b, uint32_t alignment, uint32_t version)
{
    b->len = 0;
    int with_align = alignment != 32;
    header(b, "GGUF", version, N_GOOD, 12 + with_align);
    kv_str(b, "general.architecture", "test");
    kv_head(b, "t.u8", BW_GGUF_U8);
    put_u8(b, 200);
    kv_head(b, "t.i32", BW_GGUF_I32);
    put_u32(b, (uint32_t)-5);
    kv_head(b, "t.u64", BW_GGUF_U64);
    put_u64(b, 1ull << 40);
    kv_head(b, "t.u64small", BW_GGUF_U64);
    put_u64(b, 123456);
    kv_f32(b, "t.f32", 1.5f);
    kv_head(b, "t.f64", BW_GGUF_F64);
    {
        double d = 2.25;
        put(b, &d, 8);
    }
    kv_head(b, "t.bool", BW_GGUF_BOOL);
    put_u8(b, 1);
    kv_str(b, "t.str", "hello");
    kv_head(b, "t.arr_u32", BW_GGUF_ARRAY);
    put_u32(b, BW_GGUF_U32);
    put_u64(b, 3);
    for (uint32_t i = 1; i <= 3; i++) put_u32(b, i * 10);
    kv_head(b, "t.tokens", BW_GGUF_ARRAY);
    put_u32(b, BW_GGUF_STRING);
    put_u64(b, 4);
    for (int i = 0; i < 4; i++) put_str(b, good_tokens[i]);
    kv_head(b, "t.merges", BW_GGUF_ARRAY);
    put_u32(b, BW_GGUF_STRING);
    put_u64(b, 2);
    put_str(b, "x y");
    put_str(b, "zz w");
    if (with_align) kv_u32(b, "general.alignment", alignment);
    uint64_t off = 0;
    for (size_t i = 0; i < N_GOOD; i++) {
        tensor_info(b, good_tensors[i].name, good_tensors[i].n_dims, good_tensors[i].ne, good_tensors[i].type, off);
        off = (off + good_tensors[i].nbytes + alignment - 1) / alignment * alignment;
    }
    pad_to(b, alignment);
    size_t data = b->len;
    off = 0;
    for (size_t i = 0; i < N_GOOD; i++) {
        while (b->len < data + off) put_u8(b, 0);
        for (uint64_t k = 0; k < good_tensors[i].nbytes; k++) put_u8(b, (uint8_t)(off + k));
        off = (off + good_tensors[i].nbytes + alignment - 1) / alignment * alignment;
    }
    return data;
}

static int str_eq(bw_gguf_str s, const char *lit) { return s.len == strlen(lit) && memcmp(s.str, lit, s.len) == 0; }

static void test_good_file(uint32_t alignment, uint32_t version)
{
    buf b = {0};
    size_t data = build_good(&b, alignment, version);
    char err[512] = "";
    bw_gguf *g = bw_gguf_open(write_file(&b, b.len, "good.gguf"), err, sizeof err);
    CHECK(g != NULL, "good file (alignment %u, v%u) refused: %s", alignment, version, err);
    if (!g) {
        free(b.p);
        return;
    }
    CHECK(bw_gguf_version(g) == version, "version %u", bw_gguf_version(g));
    CHECK(bw_gguf_n_kv(g) == 12u + (alignment != 32), "n_kv %llu", (unsigned long long)bw_gguf_n_kv(g));
    CHECK(bw_gguf_n_tensors(g) == N_GOOD, "n_tensors");

    /* Iteration sees the keys in file order. */
    const bw_gguf_kv *kv0 = bw_gguf_kv_at(g, 0);
    CHECK(kv0 && str_eq(kv0->key, "general.architecture") && kv0->type == BW_GGUF_STRING, "kv 0");
    CHECK(str_eq(bw_gguf_kv_at(g, 9)->key, "t.arr_u32"), "kv 9");
    CHECK(bw_gguf_kv_at(g, bw_gguf_n_kv(g)) == NULL, "kv past the end");

    uint32_t u;
    float f;
    int bl;
    bw_gguf_str s;
    CHECK(bw_gguf_get_u32(g, "t.u8", &u) == 0 && u == 200, "u8 as u32");
    CHECK(bw_gguf_get_u32(g, "t.i32", &u) == -1, "negative i32 must not read as u32");
    CHECK(bw_gguf_get_u32(g, "t.u64", &u) == -1, "2^40 must not read as u32");
    CHECK(bw_gguf_get_u32(g, "t.u64small", &u) == 0 && u == 123456, "small u64 as u32");
    CHECK(bw_gguf_get_u32(g, "t.f32", &u) == -1, "float is not an integer");
    CHECK(bw_gguf_get_u32(g, "no.such.key", &u) == -1, "missing key");
    CHECK(bw_gguf_get_f32(g, "t.f32", &f) == 0 && f == 1.5f, "f32");
    CHECK(bw_gguf_get_f32(g, "t.f64", &f) == 0 && f == 2.25f, "f64 as f32");
    CHECK(bw_gguf_get_f32(g, "t.str", &f) == -1, "string is not a float");
    CHECK(bw_gguf_get_bool(g, "t.bool", &bl) == 0 && bl == 1, "bool");
    CHECK(bw_gguf_get_bool(g, "t.u8", &bl) == -1, "u8 is not a bool");
    CHECK(bw_gguf_get_str(g, "t.str", &s) == 0 && str_eq(s, "hello"), "string");
    CHECK(bw_gguf_get_str(g, "t.tokens", &s) == -1, "array is not a string");

    const bw_gguf_kv *arr = bw_gguf_find(g, "t.arr_u32");
    CHECK(arr && arr->type == BW_GGUF_ARRAY && arr->arr_type == BW_GGUF_U32 && arr->arr_len == 3, "u32 array");
    if (arr) {
        uint32_t v;
        memcpy(&v, arr->data + 8, 4);
        CHECK(v == 30, "u32 array element 2 is %u", v);
        CHECK(bw_gguf_arr_str(g, arr, 0, &s) == -1, "arr_str on a u32 array");
    }
    const bw_gguf_kv *tok = bw_gguf_find(g, "t.tokens");
    CHECK(tok && tok->arr_len == 4, "string array");
    for (uint64_t i = 0; tok && i < 4; i++)
        CHECK(bw_gguf_arr_str(g, tok, i, &s) == 0 && str_eq(s, good_tokens[i]), "token %llu", (unsigned long long)i);
    CHECK(tok && bw_gguf_arr_str(g, tok, 4, &s) == -1, "arr_str past the end");
    const bw_gguf_kv *mer = bw_gguf_find(g, "t.merges");
    CHECK(mer && bw_gguf_arr_str(g, mer, 1, &s) == 0 && str_eq(s, "zz w"), "second string array");
    bw_gguf_kv copy = *tok;
    CHECK(bw_gguf_arr_str(g, &copy, 0, &s) == -1, "arr_str on a kv that is not this file's");

    size_t fsize;
    const uint8_t *map = bw_gguf_file_data(g, &fsize);
    CHECK(fsize == b.len, "file size");
    for (size_t i = 0; i < N_GOOD; i++) {
        const bw_gguf_tensor *t = bw_gguf_find_tensor(g, good_tensors[i].name);
        CHECK(t && t == bw_gguf_tensor_at(g, i), "tensor %s lookup", good_tensors[i].name);
        if (!t) continue;
        CHECK(t->type == good_tensors[i].type && t->n_dims == good_tensors[i].n_dims, "%s type", t->name.str);
        CHECK(t->nbytes == good_tensors[i].nbytes, "%s nbytes %llu", good_tensors[i].name,
              (unsigned long long)t->nbytes);
        CHECK(t->ne[0] == (int64_t)good_tensors[i].ne[0] && t->ne[3] == 1, "%s dims", good_tensors[i].name);
        CHECK((const uint8_t *)t->data == map + data + t->offset, "%s data pointer", good_tensors[i].name);
        CHECK((uintptr_t)t->data % alignment == 0, "%s aligned to %u", good_tensors[i].name, alignment);
        CHECK(((const uint8_t *)t->data)[1] == (uint8_t)(t->offset + 1), "%s data bytes", good_tensors[i].name);
    }
    CHECK(bw_gguf_find_tensor(g, "a.vecto") == NULL && bw_gguf_find_tensor(g, "a.vector.") == NULL,
          "prefix names must not match");
    bw_gguf_close(g);

    /* Every strict prefix of the file is refused, wherever the cut falls. */
    int refused = 0;
    for (size_t len = 0; len < b.len; len++) {
        err[0] = '\0';
        g = bw_gguf_open(write_file(&b, len, "cut.gguf"), err, sizeof err);
        CHECK(g == NULL, "file cut at %zu of %zu bytes was accepted", len, b.len);
        CHECK(err[0] && !strchr(err, '\n'), "cut at %zu: error must be one non-empty line: '%s'", len, err);
        if (g) bw_gguf_close(g);
        else refused++;
    }
    printf("ok   good file v%u, alignment %u: %zu bytes parsed; all %d truncations refused\n", version, alignment,
           b.len, refused);
    free(b.p);
}

/* ---- malformed files --------------------------------------------------------------------------------- */

static void expect_refused(const char *what, buf *b, const char *needle)
{
    char err[512] = "";
    bw_gguf *g = bw_gguf_open(write_file(b, b->len, "bad.gguf"), err, sizeof err);
    CHECK(g == NULL, "%s: accepted", what);
    if (g) bw_gguf_close(g);
    CHECK(strstr(err, needle) != NULL, "%s: error '%s' does not mention '%s'", what, err, needle);
    CHECK(!strchr(err, '\n'), "%s: error has several lines", what);
    printf("ok   %-34s -> %s\n", what, err);
    b->len = 0;
}

/* A file with one tensor and nothing else; data bytes are appended after the padding. */
static void one_tensor(buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset,
                       size_t data_bytes)
{
    header(b, "GGUF", 3, 1, 0);
    tensor_info(b, name, n_dims, ne, type, offset);
    pad_to(b, 32);
    for (size_t i = 0; i < data_bytes; i++) put_u8(b, 0);
}

static void test_bad_files(void)
{
    buf b = {0};
    const uint64_t v8[] = {8}, big[] = {1ull << 32, 1ull << 32}, huge[] = {1ull << 61, 2}, five[] = {1, 1, 1, 1, 1};
    const uint64_t k2[] = {256, 2};

    expect_refused("empty file", &b, "truncated");
    put(&b, "GGU", 3);
    expect_refused("3-byte file", &b, "truncated");
    header(&b, "GGUX", 3, 0, 0);
    expect_refused("wrong magic", &b, "magic");
    header(&b, "tjgg", 3, 0, 0);
    expect_refused("old GGJT file", &b, "GGJT");
    header(&b, "GGUF", 1, 0, 0);
    expect_refused("version 1", &b, "version 1");
    header(&b, "GGUF", 4, 0, 0);
    expect_refused("version 4", &b, "version 4");
    header(&b, "GGUF", 3u << 24, 0, 0);
    expect_refused("big-endian file", &b, "big-endian");

    header(&b, "GGUF", 3, 0, 1ull << 40);
    expect_refused("absurd kv count", &b, "count");
    header(&b, "GGUF", 3, 0, 1000);
    kv_u32(&b, "k", 1);
    expect_refused("kv count beyond the file", &b, "count");
    header(&b, "GGUF", 3, 1ull << 50, 0);
    expect_refused("absurd tensor count", &b, "count");

    header(&b, "GGUF", 3, 0, 1);
    put_u64(&b, 1ull << 62);
    put(&b, "key plus room for a value", 25);
    expect_refused("absurd key length", &b, "string length");
    header(&b, "GGUF", 3, 0, 1);
    kv_head(&b, "k", BW_GGUF_STRING);
    put_u64(&b, UINT64_MAX);
    expect_refused("absurd string value length", &b, "string length");
    header(&b, "GGUF", 3, 0, 1);
    kv_head(&b, "k", BW_GGUF_ARRAY);
    put_u32(&b, BW_GGUF_STRING);
    put_u64(&b, 3);
    put_str(&b, "one");
    put_u64(&b, 1ull << 40);
    for (int i = 0; i < 16; i++) put_u8(&b, 0);
    expect_refused("absurd length inside a string array", &b, "string length");
    header(&b, "GGUF", 3, 0, 1);
    kv_head(&b, "k", BW_GGUF_ARRAY);
    put_u32(&b, BW_GGUF_U64);
    put_u64(&b, 1ull << 61); /* times 8 bytes wraps around 2^64 */
    expect_refused("absurd array length", &b, "count");
    header(&b, "GGUF", 3, 0, 1);
    kv_head(&b, "k", BW_GGUF_ARRAY);
    put_u32(&b, BW_GGUF_ARRAY);
    put_u64(&b, 1);
    expect_refused("array of arrays", &b, "array of arrays");
    header(&b, "GGUF", 3, 0, 1);
    kv_head(&b, "k", 13);
    put_u32(&b, 0);
    expect_refused("unknown value type", &b, "value type 13");
    header(&b, "GGUF", 3, 0, 1);
    kv_u32(&b, "", 1);
    expect_refused("empty key", &b, "empty key");
    header(&b, "GGUF", 3, 0, 1);
    kv_u32(&b, "general.alignment", 48);
    expect_refused("alignment not a power of two", &b, "power of two");
    header(&b, "GGUF", 3, 0, 1);
    kv_u32(&b, "general.alignment", 0);
    expect_refused("alignment zero", &b, "power of two");

    one_tensor(&b, "t", 1, v8, BW_TYPE_F32, 4096, 32);
    expect_refused("offset past the end", &b, "past the end");
    one_tensor(&b, "t", 1, v8, BW_TYPE_F32, 0, 31);
    expect_refused("tensor data cut short", &b, "truncated: tensor t ends at 96 bytes, file has 95 bytes");
    one_tensor(&b, "t", 1, v8, BW_TYPE_F32, 4, 64);
    expect_refused("misaligned offset", &b, "alignment 32");
    one_tensor(&b, "t", 1, v8, 99, 0, 32);
    expect_refused("unknown tensor type", &b, "type 99 (unknown)");
    one_tensor(&b, "blk.0.ffn_up.weight", 1, v8, 16, 0, 32);
    expect_refused("known unsupported tensor type", &b,
                   "tensor blk.0.ffn_up.weight has type 16 (IQ2_XXS), which this engine does not support yet");
    one_tensor(&b, "blk.0.ffn_down.weight", 1, v8, BW_TYPE_Q4_K, 0, 32);
    expect_refused("K-type row not a whole super-block", &b,
                   "tensor blk.0.ffn_down.weight has 8 columns, not a multiple of the Q4_K block size 256");
    one_tensor(&b, "blk.0.ffn_down.weight", 2, k2, BW_TYPE_Q6_K, 0, 2 * 210 - 1);
    expect_refused("K-type data shorter than its shape", &b, "truncated: tensor blk.0.ffn_down.weight ends at");
    one_tensor(&b, "t", 1, k2, BW_TYPE_Q8_K, 0, 292);
    expect_refused("activation-only K type", &b, "Q8_K");
    one_tensor(&b, "t", 1, v8, BW_TYPE_Q8_1, 0, 32);
    expect_refused("activation-only tensor type", &b, "Q8_1");
    one_tensor(&b, "t", 5, five, BW_TYPE_F32, 0, 32);
    expect_refused("too many dims", &b, "5 dimensions");
    one_tensor(&b, "t", 0, v8, BW_TYPE_F32, 0, 32);
    expect_refused("zero dims", &b, "0 dimensions");
    const uint64_t zero[] = {8, 0};
    one_tensor(&b, "t", 2, zero, BW_TYPE_F32, 0, 32);
    expect_refused("zero-sized dim", &b, "impossible dimension 0");
    one_tensor(&b, "t", 2, big, BW_TYPE_F32, 0, 32);
    expect_refused("dim product overflow", &b, "impossible dimension");
    one_tensor(&b, "t", 2, huge, BW_TYPE_F32, 0, 32);
    expect_refused("byte size overflow", &b, "impossibly large");
    const uint64_t odd[] = {33};
    one_tensor(&b, "t", 1, odd, BW_TYPE_Q8_0, 0, 64);
    expect_refused("row not whole blocks", &b, "multiple of the Q8_0 block size 32");
    header(&b, "GGUF", 3, 2, 0);
    tensor_info(&b, "same", 1, v8, BW_TYPE_F32, 0);
    tensor_info(&b, "same", 1, v8, BW_TYPE_F32, 32);
    pad_to(&b, 32);
    for (int i = 0; i < 64; i++) put_u8(&b, 0);
    expect_refused("duplicate tensor names", &b, "twice");
    header(&b, "GGUF", 3, 1, 0);
    put_str(&b, "");
    for (int i = 0; i < 64; i++) put_u8(&b, 0);
    expect_refused("empty tensor name", &b, "empty name");
    free(b.p);
}

/* ---- the llama loader on tiny crafted models --------------------------------------------------------- */

struct tiny {
    const char *arch;
    const char *scaling; /* NULL: no key */
    float scaling_factor;
    int n_head, n_head_kv; /* n_head_kv 0: no key */
    int skip_tensor;       /* index in the tensor list to leave out, -1 none */
    int bad_shape;         /* give attn_k the query's shape */
    int with_output, with_name;
};

enum { TE = 32, TV = 5, TFF = 64, TLAYERS = 2 };

/* Returns the offset of the data section. */
static size_t build_tiny(buf *b, const struct tiny *o)
{
    struct {
        char name[48];
        uint64_t ne[2];
        uint32_t type;
    } t[4 + 9 * TLAYERS];
    int nt = 0, kvw = o->n_head ? TE / o->n_head * (o->n_head_kv ? o->n_head_kv : o->n_head) : TE;
#define ADD(nm, c, r, ty)                                                                                              \
    (snprintf(t[nt].name, sizeof t[nt].name, "%s", nm), t[nt].ne[0] = c, t[nt].ne[1] = r, t[nt].type = ty, nt++)
    ADD("token_embd.weight", TE, TV, BW_TYPE_Q8_0);
    ADD("output_norm.weight", TE, 1, BW_TYPE_F32);
    if (o->with_output) ADD("output.weight", TE, TV, BW_TYPE_F16);
    for (int l = 0; l < TLAYERS; l++) {
        const char *parts[] = {"attn_norm", "attn_q",   "attn_k", "attn_v",  "attn_output",
                               "ffn_norm",  "ffn_gate", "ffn_up", "ffn_down"};
        uint64_t cols[] = {TE, TE, TE, TE, TE, TE, TE, TE, TFF};
        uint64_t rows[] = {1, TE, (uint64_t)kvw, (uint64_t)kvw, TE, 1, TFF, TFF, TE};
        if (o->bad_shape && l == 1) rows[2] = TE;
        for (int k = 0; k < 9; k++) {
            char nm[48];
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, parts[k]);
            ADD(nm, cols[k], rows[k], rows[k] == 1 ? BW_TYPE_F32 : (k == 1 ? BW_TYPE_Q4_0 : BW_TYPE_Q4_1));
        }
    }
#undef ADD
    int n_kv = 8 + (o->scaling != NULL) * 2 + (o->n_head_kv != 0) + (o->with_name != 0);
    b->len = 0;
    header(b, "GGUF", 3, (uint64_t)(nt - (o->skip_tensor >= 0)), (uint64_t)n_kv);
    kv_str(b, "general.architecture", o->arch);
    kv_u32(b, "llama.block_count", TLAYERS);
    kv_u32(b, "llama.embedding_length", TE);
    kv_u32(b, "llama.feed_forward_length", TFF);
    kv_u32(b, "llama.attention.head_count", (uint32_t)o->n_head);
    kv_u32(b, "llama.context_length", 256);
    kv_f32(b, "llama.attention.layer_norm_rms_epsilon", 1e-6f);
    kv_f32(b, "llama.rope.freq_base", 500000.0f);
    if (o->n_head_kv) kv_u32(b, "llama.attention.head_count_kv", (uint32_t)o->n_head_kv);
    if (o->scaling) {
        kv_str(b, "llama.rope.scaling.type", o->scaling);
        kv_f32(b, "llama.rope.scaling.factor", o->scaling_factor);
    }
    if (o->with_name) kv_str(b, "general.name", "tiny\nllama\x7f");
    uint64_t off = 0, offs[4 + 9 * TLAYERS];
    for (int i = 0; i < nt; i++) {
        offs[i] = off;
        off += (bw_type_row_bytes(t[i].type, t[i].ne[0]) * t[i].ne[1] + 31) / 32 * 32;
        if (i != o->skip_tensor) tensor_info(b, t[i].name, 2, t[i].ne, t[i].type, offs[i]);
    }
    pad_to(b, 32);
    size_t data = b->len;
    for (uint64_t k = 0; k < off; k++) put_u8(b, 0);
    /* token_embd row r: scale 0.5 (f16 0x3800), quants r*32 + k - 64. */
    for (int r = 0; r < TV; r++) {
        uint8_t *blk = b->p + data + (size_t)r * 34;
        blk[0] = 0x00;
        blk[1] = 0x38;
        for (int k = 0; k < 32; k++) blk[2 + k] = (uint8_t)(int8_t)(r * 32 + k - 64);
    }
    return data;
}

static int load_tiny(const struct tiny *o, bw_model *m, char *err, size_t errlen)
{
    buf b = {0};
    build_tiny(&b, o);
    const char *path = write_file(&b, b.len, "tiny-llama.gguf");
    free(b.p);
    bw_gguf *g = bw_gguf_open(path, err, errlen);
    if (!g) return -2;
    int rc = bw_model_load(m, g, path, err, errlen);
    bw_gguf_close(g);
    return rc;
}

static void expect_model_refused(const char *what, const struct tiny *o, const char *needle)
{
    static bw_model m;
    char err[512] = "";
    int rc = load_tiny(o, &m, err, sizeof err);
    CHECK(rc == -1, "%s: model loaded (rc %d, err '%s')", what, rc, err);
    CHECK(strstr(err, needle) != NULL, "%s: error '%s' does not mention '%s'", what, err, needle);
    printf("ok   %-34s -> %s\n", what, err);
}

static void test_tiny_models(void)
{
    static bw_model m;
    char err[512] = "";
    const struct tiny base = {"llama", NULL, 0, 4, 2, -1, 0, 0, 0};
    struct tiny o = base;

    /* The model borrows the mapping, so check it while the file is open. */
    buf b = {0};
    build_tiny(&b, &o);
    const char *path = write_file(&b, b.len, "tiny-llama.gguf");
    free(b.p);
    bw_gguf *g = bw_gguf_open(path, err, sizeof err);
    CHECK(g && bw_model_load(&m, g, path, err, sizeof err) == 0, "tiny llama refused: %s", err);
    if (g) {
        const bw_model_config *c = &m.cfg;
        CHECK(c->n_layer == TLAYERS && c->n_embd == TE && c->n_head == 4 && c->n_head_kv == 2 && c->head_dim == 8 &&
                  c->n_ff == TFF && c->n_vocab == TV && c->n_ctx_train == 256 && c->n_rot == 8,
              "tiny config");
        CHECK(c->rope_base == 500000.0f && c->rope_scale == 1.0f && c->rms_eps == 1e-6f, "tiny floats");
        CHECK(m.output.data == m.tok_embd.data && m.rope_freqs == NULL, "absent output.weight ties to token_embd");
        CHECK(strcmp(m.id, "tiny-llama") == 0, "id from file name: '%s'", m.id);
        CHECK(m.layers[1].wk.rows == 16 && m.layers[1].w_down.cols == TFF && m.layers[0].wq.type == BW_TYPE_Q4_0 &&
                  m.layers[0].wk.row_bytes == 20,
              "tiny layer tensors");
        CHECK(strcmp(m.layers[1].w_up.name, "blk.1.ffn_up.weight") == 0, "tensor name");
        float row[TE];
        bw_model_embed(&m, 3, row);
        int ok = 1;
        for (int k = 0; k < TE; k++) ok &= row[k] == 0.5f * (float)(int8_t)(3 * 32 + k - 64);
        CHECK(ok, "embedding row 3 dequantized wrong (row[0] = %g)", row[0]);
        bw_model_embed(&m, TV, row);
        CHECK(row[0] == 0.0f, "out-of-range token embeds as zeros");
        bw_gguf_close(g);
        printf("ok   tiny llama loads: GQA 4/2, tied output, id '%s', embedding row dequantized\n", m.id);
    }

    o.n_head_kv = 0;
    o.with_output = 1;
    o.with_name = 1;
    o.scaling = "linear";
    o.scaling_factor = 4.0f;
    CHECK(load_tiny(&o, &m, err, sizeof err) == 0, "defaults: %s", err);
    CHECK(m.cfg.n_head_kv == 4 && m.cfg.rope_scale == 4.0f && m.output.type == BW_TYPE_F16, "defaults applied");
    CHECK(strcmp(m.id, "tiny_llama_") == 0, "id sanitized: '%s'", m.id);
    printf("ok   head_count_kv defaults to head_count, linear rope scaling, general.name sanitized\n");

    o = base;
    o.arch = "gpt9";
    expect_model_refused("architecture gpt9", &o,
                         "architecture 'gpt9' is not supported (supported: llama, qwen2, qwen3, phi3, gemma3)");
    o = base;
    o.scaling = "yarn";
    o.scaling_factor = 2;
    expect_model_refused("rope scaling yarn", &o, "yarn");
    o = base;
    o.n_head = 3;
    o.n_head_kv = 0;
    expect_model_refused("width not a multiple of heads", &o, "multiple of the head count");
    o = base;
    o.n_head = 4;
    o.n_head_kv = 3;
    expect_model_refused("heads not a multiple of kv heads", &o, "key/value head count");
    o = base;
    o.n_head = 0;
    o.n_head_kv = 0;
    expect_model_refused("zero heads", &o, "head_count is 0");
    o = base;
    o.skip_tensor = 5; /* blk.0.attn_v.weight */
    expect_model_refused("missing tensor", &o, "blk.0.attn_v.weight");
    o = base;
    o.bad_shape = 1;
    expect_model_refused("wrong shape", &o, "tensor blk.1.attn_k.weight has shape 32x32, expected 32x16");
}

/* ---- every metadata byte corrupted ------------------------------------------------------------------- */

/* Touches everything an open file hands out, so ASan sees any pointer that escaped the mapping. */
static unsigned walk(const bw_gguf *g)
{
    unsigned sum = 0;
    bw_gguf_str s;
    for (uint64_t i = 0; i < bw_gguf_n_kv(g); i++) {
        const bw_gguf_kv *kv = bw_gguf_kv_at(g, i);
        for (uint64_t k = 0; k < kv->key.len; k++) sum += (uint8_t)kv->key.str[k];
        for (uint64_t j = 0; kv->type == BW_GGUF_ARRAY && bw_gguf_arr_str(g, kv, j, &s) == 0; j++)
            for (uint64_t k = 0; k < s.len; k++) sum += (uint8_t)s.str[k];
    }
    for (uint64_t i = 0; i < bw_gguf_n_tensors(g); i++) {
        const bw_gguf_tensor *t = bw_gguf_tensor_at(g, i);
        sum += (uint8_t)t->name.str[t->name.len] + ((const uint8_t *)t->data)[t->nbytes - 1];
        sum += bw_gguf_find_tensor(g, t->name.str) != NULL;
    }
    return sum;
}

/* Each byte before the tensor data set to values that make lengths, counts and types hostile. Every
 * outcome is fine but a crash, a multi-line error or a model that loads with a bad shape. */
static void mutate_all(const char *what, buf *b, size_t upto, int load_model)
{
    static const uint8_t vals[] = {0x00, 0xff, 0x80, 0x7f, 0x01, 0x20};
    static bw_model m;
    char err[512];
    int opened = 0, loaded = 0, tries = 0;
    static volatile unsigned sink; /* keeps the walks from being optimized away */
    for (size_t pos = 0; pos < upto; pos++) {
        uint8_t orig = b->p[pos];
        for (size_t v = 0; v <= sizeof vals; v++) {
            b->p[pos] = v < sizeof vals ? vals[v] : (uint8_t)(orig + 1);
            if (b->p[pos] == orig) continue;
            tries++;
            err[0] = '\0';
            const char *path = write_file(b, b->len, "mutant.gguf");
            bw_gguf *g = bw_gguf_open(path, err, sizeof err);
            if (g) {
                opened++;
                sink += walk(g);
                if (load_model && bw_model_load(&m, g, path, err, sizeof err) == 0) {
                    float row[TE];
                    loaded++;
                    bw_model_embed(&m, m.cfg.n_vocab - 1, row);
                    sink += row[0] != 0;
                    CHECK(m.cfg.n_embd * (int64_t)m.cfg.n_vocab == m.tok_embd.cols * m.tok_embd.rows, "mutant shape");
                } else if (load_model) {
                    CHECK(err[0] && !strchr(err, '\n'), "%s byte %zu: model error '%s'", what, pos, err);
                }
                bw_gguf_close(g);
            } else {
                CHECK(err[0] && !strchr(err, '\n'), "%s byte %zu: error '%s'", what, pos, err);
            }
        }
        b->p[pos] = orig;
    }
    printf("ok   %s: %d single-byte corruptions of %zu metadata bytes, %d opened, %d loaded\n", what, tries, upto,
           opened, loaded);
}

static void test_mutations(void)
{
    buf b = {0};
    size_t data = build_good(&b, 32, 3);
    mutate_all("good file", &b, data, 0);
    const struct tiny base = {"llama", "linear", 2.0f, 4, 2, -1, 0, 0, 1};
    data = build_tiny(&b, &base);
    mutate_all("tiny llama", &b, data, 1);
    free(b.p);
}

/* ---- the default model ------------------------------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void test_real_model(const char *path)
{
    if (access(path, R_OK) != 0) {
        printf("skip real model: %s is absent (run scripts/fetch-model.sh)\n", path);
        return;
    }
    static bw_model m;
    char err[512] = "";
    double t0 = now_ms();
    bw_gguf *g = bw_gguf_open(path, err, sizeof err);
    double t1 = now_ms();
    CHECK(g != NULL, "%s: %s", path, err);
    if (!g) return;
    int rc = bw_model_load(&m, g, path, err, sizeof err);
    double t2 = now_ms();
    CHECK(rc == 0, "%s: %s", path, err);
    if (rc == 0) {
        const bw_model_config *c = &m.cfg;
        CHECK(c->n_layer == 30 && c->n_embd == 576 && c->n_head == 9 && c->n_head_kv == 3 && c->head_dim == 64,
              "SmolLM2 shape: %d layers %d wide %d/%d heads", c->n_layer, c->n_embd, c->n_head, c->n_head_kv);
        CHECK(c->n_vocab == 49152 && c->n_ff == 1536 && c->n_ctx_train == 8192 && c->n_rot == 64, "vocab/ff/ctx");
        CHECK(c->rope_base == 100000.0f && c->rope_scale == 1.0f && fabsf(c->rms_eps - 1e-5f) < 1e-12f, "floats");
        CHECK(m.output.data == m.tok_embd.data, "SmolLM2 ties output to token_embd");
        CHECK(m.tok_embd.type == BW_TYPE_Q8_0 && m.tok_embd.row_bytes == 18 * 34, "token_embd is Q8_0");
        int all_q41 = 1;
        for (int l = 0; l < c->n_layer; l++) {
            const bw_layer_weights *w = &m.layers[l];
            const bw_tensor *mats[] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
            for (int k = 0; k < 7; k++) all_q41 &= mats[k]->type == BW_TYPE_Q4_1;
            all_q41 &= w->attn_norm.type == BW_TYPE_F32 && w->ffn_norm.type == BW_TYPE_F32;
        }
        CHECK(all_q41, "layer matrices are Q4_1, norms F32");
        CHECK(m.id[0] != '\0', "model id");

        /* Row 1 of a Q8_0 table is 18 blocks of (f16 scale, 32 int8). */
        float row[576];
        bw_model_embed(&m, 1, row);
        const uint8_t *r1 = (const uint8_t *)m.tok_embd.data + m.tok_embd.row_bytes;
        int same = 1;
        for (int k = 0; k < 576; k++) {
            const uint8_t *blk = r1 + (k / 32) * 34;
            float d = bw_f16_to_f32((bw_f16)(blk[0] | blk[1] << 8));
            same &= row[k] == d * (float)(int8_t)blk[2 + k % 32];
        }
        CHECK(same, "embedding of token 1 differs from the Q8_0 data");
    }
    const bw_gguf_kv *tok = bw_gguf_find(g, "tokenizer.ggml.tokens");
    bw_gguf_str s;
    CHECK(tok && tok->arr_len == 49152, "49152 tokens");
    CHECK(tok && bw_gguf_arr_str(g, tok, 0, &s) == 0 && str_eq(s, "<|endoftext|>"), "token 0");
    CHECK(tok && bw_gguf_arr_str(g, tok, 49151, &s) == 0 && str_eq(s, "ectable"), "last token");
    printf("ok   %s: open %.1f ms, model load %.2f ms, id '%s', %llu tensors\n", path, t1 - t0, t2 - t1, m.id,
           (unsigned long long)bw_gguf_n_tensors(g));
    bw_gguf_close(g);
}

/* ---- f16 conversions, which every quantized type's scales go through ---------------------------------- */

static void test_half(void)
{
    CHECK(bw_f16_to_f32(0x3c00) == 1.0f && bw_f16_to_f32(0xc000) == -2.0f, "f16 normals");
    CHECK(bw_f16_to_f32(0x0001) == ldexpf(1, -24) && bw_f16_to_f32(0x03ff) == ldexpf(1023, -24), "f16 subnormals");
    CHECK(isinf(bw_f16_to_f32(0x7c00)) && isnan(bw_f16_to_f32(0x7e00)) && signbit(bw_f16_to_f32(0x8000)),
          "f16 specials");
    int round_trip = 1;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = bw_f16_to_f32((bw_f16)h);
        if (!isnan(f)) round_trip &= bw_f32_to_f16(f) == h;
        else round_trip &= (bw_f32_to_f16(f) & 0x7c00) == 0x7c00 && (bw_f32_to_f16(f) & 0x3ff) != 0;
    }
    CHECK(round_trip, "every half survives f16 -> f32 -> f16");
    /* Halfway cases round to even; just under 2^-25 flushes to zero; overflow goes to inf. */
    CHECK(bw_f32_to_f16(1.0f + ldexpf(1, -11)) == 0x3c00 && bw_f32_to_f16(1.0f + 3 * ldexpf(1, -11)) == 0x3c02,
          "round to nearest even");
    CHECK(bw_f32_to_f16(ldexpf(1, -25)) == 0x0000 && bw_f32_to_f16(ldexpf(3, -26)) == 0x0001, "subnormal rounding");
    CHECK(bw_f32_to_f16(ldexpf(1, -26)) == 0 && bw_f32_to_f16(-ldexpf(1, -30)) == 0x8000, "underflow keeps sign");
    CHECK(bw_f32_to_f16(65520.0f) == 0x7c00 && bw_f32_to_f16(65519.0f) == 0x7bff, "overflow to inf");
    CHECK(bw_f32_to_f16(nanf("")) != 0x7c00 && bw_f32_to_f16(-INFINITY) == 0xfc00, "nan stays nan");
    CHECK(bw_f32_to_f16(ldexpf(1023, -24) + ldexpf(1, -25)) == 0x0400, "subnormal rounds up into normal");
    CHECK(bw_bf16_to_f32(0x3f80) == 1.0f && isnan(bw_bf16_to_f32(0x7fc0)) && bw_bf16_to_f32(0x0001) > 0, "bf16");
    CHECK(bw_type_row_bytes(BW_TYPE_Q4_1, 576) == 360 && bw_type_row_bytes(BW_TYPE_Q4_0, 33) == 0 &&
              bw_type_row_bytes(BW_TYPE_F16, 7) == 14 && bw_type_row_bytes(77, 32) == 0 &&
              bw_type_row_bytes(BW_TYPE_F32, UINT64_MAX / 2) == 0,
          "row bytes");
    CHECK(bw_type_info(BW_TYPE_Q8_1) && !bw_type_info(BW_TYPE_Q8_1)->is_weight_type && !bw_type_info(16) &&
              bw_type_row_bytes(BW_TYPE_Q4_K, 1536) == 6 * 144 && bw_type_row_bytes(BW_TYPE_Q2_K, 576) == 0 &&
              !bw_type_info(BW_TYPE_Q8_K)->is_weight_type,
          "type table");
    printf("ok   f16/bf16 conversions (all 65536 halves round-trip), type table\n");
}

/* meson runs tests from the build directory, and compiles with source paths relative to it. */
static const char *default_model(int argc, char **argv)
{
    static char path[1024];
    if (argc > 1) return argv[1];
    if (getenv("BW_MODEL")) return getenv("BW_MODEL");
    const char *slash = strrchr(__FILE__, '/');
    snprintf(path, sizeof path, "%.*s/../../models/SmolLM2-135M-Instruct.Q4_1.gguf",
             slash ? (int)(slash - __FILE__) : 1, slash ? __FILE__ : ".");
    if (access(path, R_OK) == 0) return path;
    return "models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

int main(int argc, char **argv)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    test_half();
    test_good_file(32, 3);
    test_good_file(64, 2);
    test_good_file(8, 3);
    test_bad_files();
    test_tiny_models();
    test_mutations();
    test_real_model(default_model(argc, argv));

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", tmpdir);
    printf("%s: %d checks, %d failed\n", check_failed ? "FAIL" : "PASS", check_count, check_failed);
    return check_failed ? 1 : 0;
}
