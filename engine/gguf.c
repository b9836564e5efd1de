#include "engine/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/tensor.h"

/* Hard ceilings well above any real model, so a corrupt count fails with a clear message instead of a
 * huge allocation. */
#define MAX_KV (1u << 20)
#define MAX_TENSORS (1u << 20)
#define DEFAULT_ALIGNMENT 32

/* Smallest encodings: a key/value is a key length, a type and at least one value byte; a tensor info is
 * a name length, n_dims, one dim, a type and an offset. */
#define MIN_KV_BYTES (8 + 4 + 1)
#define MIN_TENSOR_BYTES (8 + 4 + 8 + 4 + 8)

struct kv_rec {
    bw_gguf_kv pub;    /* first, so a bw_gguf_kv pointer handed out converts back */
    uint64_t str_base; /* string arrays: index of element 0 in bw_gguf.str_off */
};

struct bw_gguf {
    const uint8_t *map;
    uint64_t size;
    int mapped; /* 0 for bw_gguf_open_mem: the caller owns the bytes */
    uint32_t version;
    uint64_t alignment;
    uint64_t n_kv, n_tensors;
    struct kv_rec *kvs;
    bw_gguf_tensor *tensors;
    uint64_t *str_off; /* file offset of every element of every string array, in file order */
    uint32_t *hash;    /* tensor index + 1 by name, open addressing; 0 = empty slot */
    char *names;       /* NUL-terminated copies of the tensor names, so bw_tensor.name is a C string */
    uint64_t hash_mask;
};

/* A reading position in the mapping, plus what is being read, for the error message. */
typedef struct {
    bw_gguf *g;
    uint64_t pos;
    char *err;
    size_t errlen;
    char where[192];
} cursor;

/* Names of ggml types we know but cannot compute with, so the operator learns which quantization the
 * file uses. */
static const char *const ggml_type_names[] = {
    [6] = "Q5_0",     [7] = "Q5_1",   [10] = "Q2_K",   [11] = "Q3_K",    [12] = "Q4_K",
    [13] = "Q5_K",    [14] = "Q6_K",  [15] = "Q8_K",   [16] = "IQ2_XXS", [17] = "IQ2_XS",
    [18] = "IQ3_XXS", [19] = "IQ1_S", [20] = "IQ4_NL", [21] = "IQ3_S",   [22] = "IQ2_S",
    [23] = "IQ4_XS",  [24] = "I8",    [25] = "I16",    [26] = "I32",     [27] = "I64",
    [28] = "F64",     [29] = "IQ1_M", [34] = "TQ1_0",  [35] = "TQ2_0",   [39] = "MXFP4",
};

static const char *type_name(uint32_t type)
{
    const struct bw_type_info *ti = bw_type_info(type);
    if (ti) return ti->name;
    if (type < sizeof ggml_type_names / sizeof ggml_type_names[0] && ggml_type_names[type])
        return ggml_type_names[type];
    return "unknown";
}

static int fail(cursor *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(cursor *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* Operators read sizes in MB; a few-byte test file reads better in bytes. */
static const char *human(uint64_t n, char buf[32])
{
    if (n < 1000000) snprintf(buf, 32, "%" PRIu64 " bytes", n);
    else snprintf(buf, 32, "%.1f MB", (double)n / 1e6);
    return buf;
}

static uint64_t remaining(const cursor *c) { return c->g->size - c->pos; }

static int need(cursor *c, uint64_t n)
{
    if (n <= remaining(c)) return 0;
    char a[32];
    return fail(c, "model file truncated: %s needs %" PRIu64 " bytes at offset %" PRIu64 ", file has %s", c->where, n,
                c->pos, human(c->g->size, a));
}

static uint32_t peek_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint64_t peek_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static int read_u32(cursor *c, uint32_t *out)
{
    if (need(c, 4)) return -1;
    *out = peek_u32(c->g->map + c->pos);
    c->pos += 4;
    return 0;
}

static int read_u64(cursor *c, uint64_t *out)
{
    if (need(c, 8)) return -1;
    *out = peek_u64(c->g->map + c->pos);
    c->pos += 8;
    return 0;
}

/* A count of items of at least `min_bytes` each must fit in what is left of the file; otherwise it is
 * garbage (or the file is cut short), and must not size an allocation or a loop. */
static int check_count(cursor *c, const char *what, uint64_t count, uint64_t min_bytes, uint64_t cap)
{
    char a[32];
    if (count > cap)
        return fail(c, "absurd %s count %" PRIu64 " in %s (limit %" PRIu64 "): corrupt model file", what, count,
                    c->where, cap);
    if (count > remaining(c) / min_bytes)
        return fail(c,
                    "%s count %" PRIu64 " in %s cannot fit in the %" PRIu64
                    " bytes left of the file (%s): corrupt or truncated model file",
                    what, count, c->where, remaining(c), human(c->g->size, a));
    return 0;
}

static int read_str(cursor *c, bw_gguf_str *out)
{
    uint64_t len;
    if (read_u64(c, &len)) return -1;
    if (len > c->g->size)
        return fail(c,
                    "absurd string length %" PRIu64 " in %s (the file has only %" PRIu64 " bytes): corrupt model file",
                    len, c->where, c->g->size);
    if (need(c, len)) return -1;
    out->len = len;
    out->str = (const char *)c->g->map + c->pos;
    c->pos += len;
    return 0;
}

/* Bytes of a scalar value; 0 for STRING and ARRAY (variable) and for type numbers GGUF does not define. */
static uint64_t scalar_size(uint32_t t)
{
    switch (t) {
    case BW_GGUF_U8:
    case BW_GGUF_I8:
    case BW_GGUF_BOOL: return 1;
    case BW_GGUF_U16:
    case BW_GGUF_I16: return 2;
    case BW_GGUF_U32:
    case BW_GGUF_I32:
    case BW_GGUF_F32: return 4;
    case BW_GGUF_U64:
    case BW_GGUF_I64:
    case BW_GGUF_F64: return 8;
    default: return 0;
    }
}

static int check_vtype(cursor *c, uint32_t t)
{
    if (t == BW_GGUF_STRING || t == BW_GGUF_ARRAY || scalar_size(t)) return 0;
    return fail(c, "unknown value type %" PRIu32 " in %s: corrupt model file", t, c->where);
}

/* Validates one value and moves past it; counts the strings of string arrays into *n_strs. */
static int parse_value(cursor *c, bw_gguf_kv *kv, uint64_t *n_strs)
{
    bw_gguf_str s;
    kv->data = c->g->map + c->pos;
    if (kv->type == BW_GGUF_STRING) return read_str(c, &s);
    if (kv->type != BW_GGUF_ARRAY) {
        if (need(c, scalar_size(kv->type))) return -1;
        c->pos += scalar_size(kv->type);
        return 0;
    }
    uint32_t at;
    if (read_u32(c, &at) || check_vtype(c, at)) return -1;
    if (at == BW_GGUF_ARRAY)
        return fail(c, "%s is an array of arrays, which GGUF models do not use: corrupt model file", c->where);
    kv->arr_type = (enum bw_gguf_vtype)at;
    if (read_u64(c, &kv->arr_len)) return -1;
    kv->data = c->g->map + c->pos;
    uint64_t elem = at == BW_GGUF_STRING ? 8 : scalar_size(at);
    if (check_count(c, "array element", kv->arr_len, elem, UINT64_MAX)) return -1;
    if (at != BW_GGUF_STRING) {
        c->pos += kv->arr_len * elem;
        return 0;
    }
    for (uint64_t i = 0; i < kv->arr_len; i++)
        if (read_str(c, &s)) return -1;
    *n_strs += kv->arr_len;
    return 0;
}

static void key_where(cursor *c, const bw_gguf_kv *kv)
{
    char key[81];
    bw_gguf_str_print(kv->key, key, sizeof key);
    snprintf(c->where, sizeof c->where, "the value of key '%s'", key);
}

static int parse_kvs(cursor *c)
{
    bw_gguf *g = c->g;
    uint64_t n_strs = 0;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        bw_gguf_kv *kv = &g->kvs[i].pub;
        uint32_t t;
        snprintf(c->where, sizeof c->where, "the key of metadata entry %" PRIu64 " of %" PRIu64, i, g->n_kv);
        if (read_str(c, &kv->key)) return -1;
        if (kv->key.len == 0) return fail(c, "metadata entry %" PRIu64 " has an empty key: corrupt model file", i);
        key_where(c, kv);
        if (read_u32(c, &t) || check_vtype(c, t)) return -1;
        kv->type = (enum bw_gguf_vtype)t;
        g->kvs[i].str_base = n_strs;
        if (parse_value(c, kv, &n_strs)) return -1;
    }
    if (n_strs == 0) return 0;
    /* One offset table for all string arrays (the tokenizer's hold ~50k-150k entries each), so that
     * element i is a lookup rather than a walk. The strings were validated above. */
    g->str_off = malloc(n_strs * sizeof *g->str_off);
    if (!g->str_off) return fail(c, "out of memory indexing %" PRIu64 " metadata strings", n_strs);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const bw_gguf_kv *kv = &g->kvs[i].pub;
        if (kv->type != BW_GGUF_ARRAY || kv->arr_type != BW_GGUF_STRING) continue;
        uint64_t off = (uint64_t)(kv->data - g->map);
        for (uint64_t j = 0; j < kv->arr_len; j++) {
            g->str_off[g->kvs[i].str_base + j] = off;
            off += 8 + peek_u64(g->map + off);
        }
    }
    return 0;
}

size_t bw_gguf_str_print(bw_gguf_str s, char *out, size_t outlen)
{
    if (outlen == 0) return 0;
    size_t n = s.len < outlen - 1 ? (size_t)s.len : outlen - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s.str[i];
        out[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '_';
    }
    out[n] = '\0';
    return n;
}

static uint64_t name_hash(const char *s, uint64_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (uint64_t i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int str_eq(bw_gguf_str a, const char *b, size_t blen) { return a.len == blen && memcmp(a.str, b, blen) == 0; }

/* Slot of `name` in the tensor hash: either the one holding it or the empty one where it would go. */
static uint64_t hash_slot(const bw_gguf *g, const char *name, size_t len)
{
    uint64_t h = name_hash(name, len) & g->hash_mask;
    while (g->hash[h] && !str_eq(g->tensors[g->hash[h] - 1].name, name, len)) h = (h + 1) & g->hash_mask;
    return h;
}

static int parse_tensor_info(cursor *c, uint64_t i)
{
    bw_gguf *g = c->g;
    bw_gguf_tensor *t = &g->tensors[i];
    snprintf(c->where, sizeof c->where, "the name of tensor %" PRIu64 " of %" PRIu64, i, g->n_tensors);
    if (read_str(c, &t->name)) return -1;
    if (t->name.len == 0) return fail(c, "tensor %" PRIu64 " has an empty name: corrupt model file", i);
    char nm[97];
    bw_gguf_str_print(t->name, nm, sizeof nm);
    snprintf(c->where, sizeof c->where, "tensor %s", nm);

    if (read_u32(c, &t->n_dims)) return -1;
    if (t->n_dims < 1 || t->n_dims > 4)
        return fail(c, "tensor %s has %" PRIu32 " dimensions (1 to 4 allowed): corrupt model file", nm, t->n_dims);
    uint64_t n_elems = 1;
    for (int d = 0; d < 4; d++) {
        uint64_t ne = 1;
        if ((uint32_t)d < t->n_dims && read_u64(c, &ne)) return -1;
        if (ne == 0 || ne > INT64_MAX || n_elems > INT64_MAX / ne)
            return fail(c, "tensor %s has an impossible dimension %" PRIu64 " (dim %d): corrupt model file", nm, ne, d);
        n_elems *= ne;
        t->ne[d] = (int64_t)ne;
    }

    if (read_u32(c, &t->type)) return -1;
    const struct bw_type_info *ti = bw_type_info(t->type);
    if (!ti || !ti->is_weight_type)
        return fail(c, "tensor %s has type %" PRIu32 " (%s), which this engine does not support yet", nm, t->type,
                    type_name(t->type));
    size_t row = bw_type_row_bytes(t->type, (uint64_t)t->ne[0]);
    if (row == 0)
        return fail(c, "tensor %s has %" PRId64 " columns, not a multiple of the %s block size %d", nm, t->ne[0],
                    ti->name, ti->block_size);
    uint64_t n_rows = n_elems / (uint64_t)t->ne[0];
    if (n_rows > UINT64_MAX / row) return fail(c, "tensor %s is impossibly large: corrupt model file", nm);
    t->nbytes = n_rows * row;

    if (read_u64(c, &t->offset)) return -1;
    if (t->offset % g->alignment)
        return fail(c,
                    "tensor %s has offset %" PRIu64 ", not a multiple of the file's alignment %" PRIu64
                    ": corrupt model file",
                    nm, t->offset, g->alignment);

    uint64_t slot = hash_slot(g, t->name.str, t->name.len);
    if (g->hash[slot]) return fail(c, "tensor %s appears twice in the model file", nm);
    g->hash[slot] = (uint32_t)(i + 1);
    return 0;
}

static int copy_names(cursor *c)
{
    bw_gguf *g = c->g;
    uint64_t total = 1;
    for (uint64_t i = 0; i < g->n_tensors; i++) total += g->tensors[i].name.len + 1; /* bounded by size */
    char *p = g->names = malloc(total);
    if (!p) return fail(c, "out of memory copying %" PRIu64 " tensor names", g->n_tensors);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        bw_gguf_str *n = &g->tensors[i].name;
        memcpy(p, n->str, n->len);
        p[n->len] = '\0';
        n->str = p;
        p += n->len + 1;
    }
    return 0;
}

/* Places every tensor inside the data section, once its start is known. */
static int place_tensors(cursor *c, uint64_t data_start)
{
    bw_gguf *g = c->g;
    char a[32], b[32];
    if (g->n_tensors && data_start > g->size)
        return fail(c, "model file truncated: tensor data would start at offset %" PRIu64 ", file has %s", data_start,
                    human(g->size, a));
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        bw_gguf_tensor *t = &g->tensors[i];
        char nm[97];
        bw_gguf_str_print(t->name, nm, sizeof nm);
        uint64_t room = g->size - data_start;
        if (t->offset >= room)
            return fail(c,
                        "tensor %s starts at offset %" PRIu64 " of the data section, past the end of the "
                        "file (%s of tensor data): corrupt or truncated model file",
                        nm, t->offset, human(room, a));
        if (t->nbytes > room - t->offset)
            return fail(c, "model file truncated: tensor %s ends at %s, file has %s", nm,
                        human(data_start + t->offset + t->nbytes, a), human(g->size, b));
        t->data = g->map + data_start + t->offset;
    }
    return 0;
}

static int parse_header(cursor *c)
{
    bw_gguf *g = c->g;
    snprintf(c->where, sizeof c->where, "the file header");
    if (g->size < 4 || memcmp(g->map, "GGUF", 4) != 0) {
        /* The pre-GGUF formats, whose magic is a little-endian u32 ("ggml", "ggmf", "ggjt"). */
        const uint8_t *m = g->map;
        if (g->size >= 4 && (!memcmp(m, "lmgg", 4) || !memcmp(m, "fmgg", 4) || !memcmp(m, "tjgg", 4)))
            return fail(c, "this is an old GGML/GGJT model file; convert it to GGUF with a current llama.cpp");
        if (g->size < 4) return need(c, 4);
        return fail(c, "not a GGUF model file (bad magic %02x %02x %02x %02x, expected 'GGUF')", g->map[0], g->map[1],
                    g->map[2], g->map[3]);
    }
    c->pos = 4;
    if (read_u32(c, &g->version)) return -1;
    if (g->version == 1)
        return fail(c, "GGUF version 1 is not supported (only 2 and 3); re-convert the model with a current "
                       "llama.cpp");
    if (g->version != 2 && g->version != 3) {
        if ((g->version & 0xffff) == 0 && (g->version >> 16) != 0)
            return fail(c, "big-endian GGUF files are not supported");
        return fail(c, "unsupported GGUF version %" PRIu32 " (only 2 and 3)", g->version);
    }
    if (read_u64(c, &g->n_tensors) || read_u64(c, &g->n_kv)) return -1;
    if (check_count(c, "metadata key/value", g->n_kv, MIN_KV_BYTES, MAX_KV)) return -1;
    if (check_count(c, "tensor", g->n_tensors, MIN_TENSOR_BYTES, MAX_TENSORS)) return -1;
    return 0;
}

static int parse(cursor *c)
{
    bw_gguf *g = c->g;
    if (parse_header(c)) return -1;

    g->kvs = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kvs);
    if (!g->kvs) return fail(c, "out of memory reading %" PRIu64 " metadata entries", g->n_kv);
    if (parse_kvs(c)) return -1;

    const bw_gguf_kv *al = bw_gguf_find(g, "general.alignment");
    g->alignment = DEFAULT_ALIGNMENT;
    if (al) {
        uint32_t a;
        if (bw_gguf_get_u32(g, "general.alignment", &a) || a == 0 || (a & (a - 1)))
            return fail(c, "general.alignment must be a power of two: corrupt model file");
        g->alignment = a;
    }

    uint64_t hash_size = 16;
    while (hash_size < 2 * g->n_tensors) hash_size *= 2;
    g->hash_mask = hash_size - 1;
    g->hash = calloc(hash_size, sizeof *g->hash);
    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors);
    if (!g->hash || !g->tensors) return fail(c, "out of memory reading %" PRIu64 " tensors", g->n_tensors);
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (parse_tensor_info(c, i)) return -1;
    if (copy_names(c)) return -1;

    uint64_t pad = (g->alignment - c->pos % g->alignment) % g->alignment;
    return place_tensors(c, c->pos + pad); /* pos <= size, so this cannot overflow */
}

bw_gguf *bw_gguf_open(const char *path, char *err, size_t errlen)
{
    bw_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory opening %s", path);
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "cannot open model file %s: %s", path, strerror(errno));
        goto fail_fd;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "model file %s is not a regular file", path);
        goto fail_fd;
    }
    g->size = (uint64_t)st.st_size;
    if (g->size > 0) {
        void *p = mmap(NULL, (size_t)g->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            snprintf(err, errlen, "cannot map model file %s: %s", path, strerror(errno));
            goto fail_fd;
        }
        g->map = p;
        g->mapped = 1;
    } else {
        g->map = (const uint8_t *)"";
    }
    close(fd);
    fd = -1;

    cursor c = {.g = g, .err = err, .errlen = errlen};
    if (parse(&c) == 0) return g;
    bw_gguf_close(g);
    return NULL;

fail_fd:
    if (fd >= 0) close(fd);
    free(g);
    return NULL;
}

bw_gguf *bw_gguf_open_mem(const void *data, size_t size, char *err, size_t errlen)
{
    bw_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory reading a GGUF image");
        return NULL;
    }
    g->map = size ? data : (const uint8_t *)"";
    g->size = size;
    cursor c = {.g = g, .err = err, .errlen = errlen};
    if (parse(&c) == 0) return g;
    bw_gguf_close(g);
    return NULL;
}

void bw_gguf_close(bw_gguf *g)
{
    if (!g) return;
    if (g->mapped) munmap((void *)g->map, (size_t)g->size);
    free(g->kvs);
    free(g->tensors);
    free(g->str_off);
    free(g->hash);
    free(g->names);
    free(g);
}

uint32_t bw_gguf_version(const bw_gguf *g) { return g->version; }
uint64_t bw_gguf_n_kv(const bw_gguf *g) { return g->n_kv; }
uint64_t bw_gguf_n_tensors(const bw_gguf *g) { return g->n_tensors; }

const bw_gguf_kv *bw_gguf_kv_at(const bw_gguf *g, uint64_t i) { return i < g->n_kv ? &g->kvs[i].pub : NULL; }

const bw_gguf_kv *bw_gguf_find(const bw_gguf *g, const char *key)
{
    size_t len = strlen(key);
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (str_eq(g->kvs[i].pub.key, key, len)) return &g->kvs[i].pub;
    return NULL;
}

const bw_gguf_tensor *bw_gguf_tensor_at(const bw_gguf *g, uint64_t i)
{
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const bw_gguf_tensor *bw_gguf_find_tensor(const bw_gguf *g, const char *name)
{
    uint32_t idx = g->hash[hash_slot(g, name, strlen(name))];
    return idx ? &g->tensors[idx - 1] : NULL;
}

const void *bw_gguf_file_data(const bw_gguf *g, size_t *size)
{
    if (size) *size = (size_t)g->size;
    return g->map;
}

int bw_gguf_get_u32(const bw_gguf *g, const char *key, uint32_t *out)
{
    const bw_gguf_kv *kv = bw_gguf_find(g, key);
    if (!kv) return -1;
    const uint8_t *p = kv->data;
    int64_t s = 0;
    uint64_t u = 0;
    int is_signed = 1;
    switch (kv->type) {
    case BW_GGUF_U8:
        u = p[0];
        is_signed = 0;
        break;
    case BW_GGUF_I8: s = (int8_t)p[0]; break;
    case BW_GGUF_U16: {
        uint16_t v;
        memcpy(&v, p, 2);
        u = v;
        is_signed = 0;
        break;
    }
    case BW_GGUF_I16: {
        int16_t v;
        memcpy(&v, p, 2);
        s = v;
        break;
    }
    case BW_GGUF_U32:
        u = peek_u32(p);
        is_signed = 0;
        break;
    case BW_GGUF_I32: s = (int32_t)peek_u32(p); break;
    case BW_GGUF_U64:
        u = peek_u64(p);
        is_signed = 0;
        break;
    case BW_GGUF_I64: s = (int64_t)peek_u64(p); break;
    default: return -1;
    }
    if (is_signed) {
        if (s < 0) return -1;
        u = (uint64_t)s;
    }
    if (u > UINT32_MAX) return -1;
    *out = (uint32_t)u;
    return 0;
}

/* F64 is accepted too: a converter may write any float width, and the value reads the same. */
int bw_gguf_get_f32(const bw_gguf *g, const char *key, float *out)
{
    const bw_gguf_kv *kv = bw_gguf_find(g, key);
    if (!kv) return -1;
    if (kv->type == BW_GGUF_F32) {
        memcpy(out, kv->data, 4);
    } else if (kv->type == BW_GGUF_F64) {
        double d;
        memcpy(&d, kv->data, 8);
        *out = (float)d;
    } else {
        return -1;
    }
    return 0;
}

int bw_gguf_get_bool(const bw_gguf *g, const char *key, int *out)
{
    const bw_gguf_kv *kv = bw_gguf_find(g, key);
    if (!kv || kv->type != BW_GGUF_BOOL) return -1;
    *out = kv->data[0] != 0;
    return 0;
}

int bw_gguf_get_str(const bw_gguf *g, const char *key, bw_gguf_str *out)
{
    const bw_gguf_kv *kv = bw_gguf_find(g, key);
    if (!kv || kv->type != BW_GGUF_STRING) return -1;
    out->len = peek_u64(kv->data);
    out->str = (const char *)kv->data + 8;
    return 0;
}

int bw_gguf_arr_str(const bw_gguf *g, const bw_gguf_kv *kv, uint64_t i, bw_gguf_str *out)
{
    /* Only entries of this file carry a str_base; anything else is a caller bug, answered with -1. */
    uintptr_t base = (uintptr_t)g->kvs, at = (uintptr_t)kv;
    if (!kv || at < base || (at - base) % sizeof(struct kv_rec) || (at - base) / sizeof(struct kv_rec) >= g->n_kv)
        return -1;
    const struct kv_rec *r = (const struct kv_rec *)kv;
    if (kv->type != BW_GGUF_ARRAY || kv->arr_type != BW_GGUF_STRING || i >= kv->arr_len) return -1;
    uint64_t off = g->str_off[r->str_base + i];
    out->len = peek_u64(g->map + off);
    out->str = (const char *)g->map + off + 8;
    return 0;
}
