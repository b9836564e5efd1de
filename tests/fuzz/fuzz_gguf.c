/* The GGUF reader on hostile bytes: bw_gguf_open_mem either refuses with a reason or returns a reader
 * whose every key, string, array element and tensor lies inside the input. The tokenizer, the chat
 * template detector and the model loader (every architecture's keys and tensors) then read that metadata,
 * as the engine does right after opening a model. */
#include <stdlib.h>
#include <string.h>

#include "engine/chat.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "fuzz.h"

static const uint8_t *base;
static size_t base_len;

/* Every pointer the reader hands out must lie inside the input; touching both ends lets ASan check it. */
static unsigned touch(const void *p, uint64_t n)
{
    if (n == 0) return 0;
    const uint8_t *b = p;
    FUZZ_CHECK(b >= base && n <= base_len && (size_t)(b - base) <= base_len - n, "span outside the input");
    return b[0] ^ b[n - 1];
}

static unsigned walk_kv(const bw_gguf *g, const bw_gguf_kv *kv)
{
    static const uint8_t width[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    unsigned acc = touch(kv->key.str, kv->key.len);
    char printable[96];
    size_t n = bw_gguf_str_print(kv->key, printable, sizeof(printable));
    FUZZ_CHECK(n < sizeof(printable) && strlen(printable) == n, "str_print length");
    if (n == kv->key.len && memcmp(printable, kv->key.str, n) == 0)
        FUZZ_CHECK(bw_gguf_find(g, printable) != NULL, "a key is not found by its own name");
    if (kv->type == BW_GGUF_STRING) {
        bw_gguf_str s;
        memcpy(&s.len, kv->data, 8); /* the reader checked this length against the file */
        return acc ^ touch(kv->data, 8 + s.len);
    }
    if (kv->type != BW_GGUF_ARRAY) return acc ^ touch(kv->data, width[kv->type]);
    if (kv->arr_type == BW_GGUF_STRING) {
        bw_gguf_str s;
        for (uint64_t i = 0; i < kv->arr_len; i++) {
            FUZZ_CHECK(bw_gguf_arr_str(g, kv, i, &s) == 0, "string element %llu missing", (unsigned long long)i);
            acc ^= touch(s.str, s.len);
        }
        FUZZ_CHECK(bw_gguf_arr_str(g, kv, kv->arr_len, &s) != 0, "element past the end of an array");
        return acc;
    }
    return acc ^ touch(kv->data, kv->arr_len * width[kv->arr_type]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512] = "";
    base = data;
    base_len = size;
    bw_gguf *g = bw_gguf_open_mem(data, size, err, sizeof(err));
    if (!g) {
        FUZZ_CHECK(err[0] && strlen(err) < sizeof(err), "refused without a reason");
        return 0;
    }
    volatile unsigned acc = 0;
    for (uint64_t i = 0; i < bw_gguf_n_kv(g); i++) acc ^= walk_kv(g, bw_gguf_kv_at(g, i));
    FUZZ_CHECK(bw_gguf_kv_at(g, bw_gguf_n_kv(g)) == NULL, "kv past the end");
    for (uint64_t i = 0; i < bw_gguf_n_tensors(g); i++) {
        const bw_gguf_tensor *t = bw_gguf_tensor_at(g, i);
        FUZZ_CHECK(t->n_dims >= 1 && t->n_dims <= 4, "n_dims %u", t->n_dims);
        FUZZ_CHECK(strlen(t->name.str) <= t->name.len, "tensor name");
        acc ^= touch(t->data, t->nbytes);
        if (!memchr(t->name.str, 0, t->name.len))
            FUZZ_CHECK(bw_gguf_find_tensor(g, t->name.str) != NULL, "tensor not found by its own name");
    }
    uint32_t u;
    float f;
    int b;
    acc ^= (unsigned)bw_gguf_get_u32(g, "general.alignment", &u) ^ (unsigned)bw_gguf_get_f32(g, "x", &f) ^
           (unsigned)bw_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b);

    bw_tok *t = bw_tok_load(g, err, sizeof(err));
    if (t) {
        int32_t ids[64];
        static const char text[] = "Hello, world! <|im_start|>user\n1234 \xc3\xa9t\xc3\xa9 \xf0\x9f\x90\x9d";
        int32_t n = bw_tok_encode(t, text, sizeof(text) - 1, 1, 1, ids, 64);
        FUZZ_CHECK(n != INT32_MIN, "internal tokenizer error on a vocabulary it accepted");
        char piece[256];
        for (int32_t i = 0; i < n && i < 64; i++) {
            FUZZ_CHECK(ids[i] >= 0 && ids[i] < bw_tok_n_vocab(t), "token id %d out of range", ids[i]);
            acc ^= (unsigned)bw_tok_piece(t, ids[i], 1, piece, sizeof(piece));
        }
        for (int32_t id = 0; id < bw_tok_n_vocab(t) && id < 512; id++) acc ^= (unsigned)bw_tok_is_eog(t, id);
        bw_tok_free(t);
    } else {
        FUZZ_CHECK(err[0], "tokenizer refused without a reason");
    }
    bw_model *m = malloc(sizeof *m);
    if (m) {
        if (bw_model_load(m, g, "fuzz.gguf", err, sizeof(err)) == 0) {
            const bw_model_config *c = &m->cfg;
            FUZZ_CHECK(c->n_layer >= 1 && c->head_dim >= 2 && c->q_dim == c->n_head * c->head_dim, "config");
            float row[64];
            if (c->n_embd <= 64) bw_model_embed(m, 0, row); /* reads the embedding row inside the input */
            for (int l = 0; l < c->n_layer; l++) acc ^= touch(m->layers[l].w_down.data, m->layers[l].w_down.row_bytes);
        } else {
            FUZZ_CHECK(err[0], "model refused without a reason");
        }
        free(m);
    }
    bw_gguf_str tmpl;
    if (bw_gguf_get_str(g, "tokenizer.chat_template", &tmpl) == 0)
        acc ^= (unsigned)bw_chat_detect(tmpl.str, (size_t)tmpl.len);
    bw_gguf_close(g);
    (void)acc;
    return 0;
}
