/* GGUF v2/v3 reader: maps a model file read-only and exposes its metadata and tensor table.
 *
 * Owns: the mapping and every bounds check on it. Every count, string length, array length, offset, size
 * and type is validated against the file size in bw_gguf_open(); after a successful open, every pointer
 * handed out lies inside the mapping and stays valid until bw_gguf_close(). Knows nothing of model
 * architectures: model.c decides which keys and tensors it needs. */
#ifndef BW_ENGINE_GGUF_H
#define BW_ENGINE_GGUF_H

#include <stddef.h>
#include <stdint.h>

enum bw_gguf_vtype {
    BW_GGUF_U8 = 0,
    BW_GGUF_I8 = 1,
    BW_GGUF_U16 = 2,
    BW_GGUF_I16 = 3,
    BW_GGUF_U32 = 4,
    BW_GGUF_I32 = 5,
    BW_GGUF_F32 = 6,
    BW_GGUF_BOOL = 7,
    BW_GGUF_STRING = 8,
    BW_GGUF_ARRAY = 9,
    BW_GGUF_U64 = 10,
    BW_GGUF_I64 = 11,
    BW_GGUF_F64 = 12,
};

typedef struct {
    uint64_t len;
    const char *str;
} bw_gguf_str; /* not NUL-terminated */

typedef struct {
    bw_gguf_str key;
    enum bw_gguf_vtype type;
    /* For ARRAY: element type and count; `data` points at the first element in the file. Arrays of
     * strings are walked with bw_gguf_arr_str(). */
    enum bw_gguf_vtype arr_type;
    uint64_t arr_len;
    const uint8_t *data; /* the raw value (or first array element) inside the mapping */
} bw_gguf_kv;

typedef struct {
    bw_gguf_str name; /* also NUL-terminated (a copy owned by the reader, valid until close) */
    uint32_t type;    /* enum bw_type number; validated to be one we support */
    uint32_t n_dims;  /* 1..4 */
    int64_t ne[4];    /* unused dims are 1 */
    uint64_t offset;  /* relative to the data section */
    uint64_t nbytes;
    const void *data; /* inside the mapping, aligned to the file's alignment */
} bw_gguf_tensor;

typedef struct bw_gguf bw_gguf;

/* Returns NULL and writes a one-line reason into err (never NULL on failure) for any malformed file. */
bw_gguf *bw_gguf_open(const char *path, char *err, size_t errlen);
/* The same checks on bytes already in memory (a fuzzer's input: an exact-size buffer lets ASan catch a
 * read one byte past the end, which a page-rounded mapping hides). data must outlive the reader. */
bw_gguf *bw_gguf_open_mem(const void *data, size_t size, char *err, size_t errlen);
void bw_gguf_close(bw_gguf *g);

uint32_t bw_gguf_version(const bw_gguf *g);
uint64_t bw_gguf_n_kv(const bw_gguf *g);
const bw_gguf_kv *bw_gguf_kv_at(const bw_gguf *g, uint64_t i);
const bw_gguf_kv *bw_gguf_find(const bw_gguf *g, const char *key);
uint64_t bw_gguf_n_tensors(const bw_gguf *g);
const bw_gguf_tensor *bw_gguf_tensor_at(const bw_gguf *g, uint64_t i);
const bw_gguf_tensor *bw_gguf_find_tensor(const bw_gguf *g, const char *name);
const void *bw_gguf_file_data(const bw_gguf *g, size_t *size); /* whole mapping */

/* Typed getters: return 0 on success, -1 if the key is missing or has another type. Integer getters
 * accept any integer type whose value fits. */
int bw_gguf_get_u32(const bw_gguf *g, const char *key, uint32_t *out);
int bw_gguf_get_f32(const bw_gguf *g, const char *key, float *out);
int bw_gguf_get_bool(const bw_gguf *g, const char *key, int *out);
int bw_gguf_get_str(const bw_gguf *g, const char *key, bw_gguf_str *out);

/* Copies at most outlen-1 bytes of s into out, NUL-terminated, each byte outside printable ASCII
 * replaced by '_': file strings are untrusted, and error lines and ids must stay one printable line.
 * Returns the length written. */
size_t bw_gguf_str_print(bw_gguf_str s, char *out, size_t outlen);

/* Element i of an array of strings (O(1) after open: the reader indexes string arrays). -1 if out of
 * range or not a string array. */
int bw_gguf_arr_str(const bw_gguf *g, const bw_gguf_kv *kv, uint64_t i, bw_gguf_str *out);

#endif
