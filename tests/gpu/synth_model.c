/* Writes a synthetic GGUF model of a real model's exact shape and weight types, with random weights,
 * so a GPU host can make the files speed tests need instead of receiving them (they are far above
 * what one device call carries). The weights are random but well scaled (each product of a normalised
 * row has about unit size), so activations stay finite through every layer; the text they produce is
 * noise. Not for parity: only the real model shows that.
 *
 * Presets:
 *   smollm2-135m   the default model's shape and types: 30 layers, width 576, FFN 1536, 9 query heads,
 *                  3 KV heads, vocab 49,152; matrices Q4_1, token embedding Q8_0 (tied output), norms F32
 *   llama3-8b-q4_0 Llama-3-8B's shape: 32 layers, width 4096, FFN 14,336, 32/8 heads, vocab 128,256;
 *                  every matrix Q4_0 (output separate from the embedding), norms F32
 * The vocabulary is a llama (SentencePiece) one: <unk> <s> </s>, the 256 byte tokens, then "▁tN".
 *
 * Usage: synth_model PRESET OUT.gguf [--layers N] [--seed S]   (--layers: fewer layers, for tests) */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cuda/numerics.h" /* bw_nm_f2h */
#include "engine/tensor.h"

typedef struct {
    const char *name, *label;
    int n_layer, n_embd, n_ff, n_head, n_head_kv, n_vocab, tied;
    int t_mat, t_embd, t_out;
    float rope_base;
} preset;

static const preset PRESETS[] = {
    {"smollm2-135m", "synthetic smollm2-135m shape", 30, 576, 1536, 9, 3, 49152, 1, BW_TYPE_Q4_1, BW_TYPE_Q8_0,
     BW_TYPE_Q8_0, 100000.0f},
    {"llama3-8b-q4_0", "synthetic llama3-8b shape", 32, 4096, 14336, 32, 8, 128256, 0, BW_TYPE_Q4_0, BW_TYPE_Q4_0,
     BW_TYPE_Q4_0, 500000.0f},
};

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next64(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static float unit(void) /* [0, 1) */ { return (float)(next64() >> 40) / 16777216.0f; }

static FILE *out;
static int wfail;
static void put(const void *p, size_t n)
{
    if (fwrite(p, 1, n, out) != n) wfail = 1;
}
static void put_u32(uint32_t v) { put(&v, 4); }
static void put_u64(uint64_t v) { put(&v, 8); }
static void put_str(const char *s)
{
    put_u64(strlen(s));
    put(s, strlen(s));
}
enum { G_U32 = 4, G_I32 = 5, G_F32 = 6, G_BOOL = 7, G_STR = 8, G_ARR = 9 };
static void kv_u32(const char *k, uint32_t v) { put_str(k), put_u32(G_U32), put_u32(v); }
static void kv_f32(const char *k, float v) { put_str(k), put_u32(G_F32), put(&v, 4); }
static void kv_str(const char *k, const char *v) { put_str(k), put_u32(G_STR), put_str(v); }

typedef struct {
    char name[64];
    int type;
    int64_t cols, rows; /* rows = 1 for a vector */
    uint64_t offset, bytes;
} tensor;

static uint64_t tensor_bytes(int type, int64_t cols, int64_t rows)
{
    const struct bw_type_info *ti = bw_type_info((uint32_t)type);
    return (uint64_t)(cols / ti->block_size) * ti->block_bytes * (uint64_t)rows;
}

/* Random data for one tensor, written in pieces: quant blocks with scales that give a normalised
 * row's product unit size (sigma_q * d * sqrt(K) ~ 1), F32 vectors of ones (RMS-norm weights). */
static void write_tensor(const tensor *t)
{
    static uint8_t buf[1 << 20];
    const int K = (int)t->cols;
    const float s = 1.0f / sqrtf((float)K);
    if (t->type == BW_TYPE_F32) {
        for (int64_t i = 0; i < t->cols * t->rows; i++) {
            const float one = 0.9f + 0.2f * unit();
            put(&one, 4);
        }
        return;
    }
    const int bsz = (int)bw_type_info((uint32_t)t->type)->block_bytes;
    const uint64_t nblk = t->bytes / (uint64_t)bsz, per = sizeof buf / (uint64_t)bsz;
    for (uint64_t b0 = 0; b0 < nblk; b0 += per) {
        const uint64_t n = nblk - b0 < per ? nblk - b0 : per;
        for (uint64_t i = 0; i < n * (uint64_t)bsz; i += 8) {
            const uint64_t r = next64();
            memcpy(buf + i, &r, n * (uint64_t)bsz - i < 8 ? n * (uint64_t)bsz - i : 8);
        }
        for (uint64_t b = 0; b < n; b++) {
            uint8_t *blk = buf + b * (uint64_t)bsz;
            float d;
            uint16_t h, m;
            switch (t->type) {
            case BW_TYPE_Q4_0: d = s / 4.6f * (0.5f + unit()); break;
            case BW_TYPE_Q4_1: d = s / 4.6f * (0.5f + unit()); break;
            default: d = s / 73.0f * (0.5f + unit()); break; /* Q8_0: codes spread over -128..127 */
            }
            h = bw_nm_f2h(unit() < 0.5f ? d : -d);
            memcpy(blk, &h, 2);
            if (t->type == BW_TYPE_Q4_1) { /* centred codes: m = -7.5 d */
                h = bw_nm_f2h(d);
                m = bw_nm_f2h(-7.5f * d);
                memcpy(blk, &h, 2);
                memcpy(blk + 2, &m, 2);
            }
        }
        put(buf, n * (uint64_t)bsz);
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: synth_model smollm2-135m|llama3-8b-q4_0 OUT.gguf [--layers N] [--seed S]\n");
        return 2;
    }
    const preset *p = NULL;
    for (size_t i = 0; i < sizeof PRESETS / sizeof PRESETS[0]; i++)
        if (!strcmp(argv[1], PRESETS[i].name)) p = &PRESETS[i];
    if (!p) {
        fprintf(stderr, "synth_model: unknown preset '%s' (smollm2-135m, llama3-8b-q4_0)\n", argv[1]);
        return 2;
    }
    preset P = *p;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--layers")) P.n_layer = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seed")) rng = strtoull(argv[i + 1], NULL, 10) | 1;
        else {
            fprintf(stderr, "synth_model: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (P.n_layer < 1 || P.n_layer > 256) {
        fprintf(stderr, "synth_model: --layers wants 1..256\n");
        return 2;
    }
    const int hd = P.n_embd / P.n_head, kv = hd * P.n_head_kv;

    /* tensors, in the order llama.cpp's converter writes them */
    int nt = 0, cap = 3 + 9 * P.n_layer;
    tensor *ts = calloc((size_t)cap, sizeof *ts);
    if (!ts) return 1;
#define ADD(nm, ty, c, r)                                                                                              \
    do {                                                                                                               \
        tensor *t_ = &ts[nt++];                                                                                        \
        snprintf(t_->name, sizeof t_->name, "%s", nm);                                                                 \
        t_->type = ty, t_->cols = c, t_->rows = r, t_->bytes = tensor_bytes(ty, c, r);                                 \
    } while (0)
    char nm[64];
    ADD("token_embd.weight", P.t_embd, P.n_embd, P.n_vocab);
    for (int l = 0; l < P.n_layer; l++) {
        static const char *mats[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
        ADD(nm, BW_TYPE_F32, P.n_embd, 1);
        for (int m = 0; m < 7; m++) {
            const int64_t rows = m == 1 || m == 2 ? kv : m == 4 || m == 5 ? P.n_ff : P.n_embd;
            const int64_t cols = m == 6 ? P.n_ff : P.n_embd;
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, mats[m]);
            ADD(nm, P.t_mat, cols, rows);
        }
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l);
        ADD(nm, BW_TYPE_F32, P.n_embd, 1);
    }
    ADD("output_norm.weight", BW_TYPE_F32, P.n_embd, 1);
    if (!P.tied) ADD("output.weight", P.t_out, P.n_embd, P.n_vocab);
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        ts[i].offset = off;
        off = (off + ts[i].bytes + 31) & ~(uint64_t)31;
    }

    out = fopen(argv[2], "wb");
    if (!out) {
        perror(argv[2]);
        return 1;
    }
    const int n_kv = 20;
    put("GGUF", 4);
    put_u32(3);
    put_u64((uint64_t)nt);
    put_u64((uint64_t)n_kv);
    kv_str("general.architecture", "llama");
    kv_str("general.name", P.label);
    kv_u32("general.alignment", 32);
    kv_u32("llama.block_count", (uint32_t)P.n_layer);
    kv_u32("llama.context_length", 8192);
    kv_u32("llama.embedding_length", (uint32_t)P.n_embd);
    kv_u32("llama.feed_forward_length", (uint32_t)P.n_ff);
    kv_u32("llama.attention.head_count", (uint32_t)P.n_head);
    kv_u32("llama.attention.head_count_kv", (uint32_t)P.n_head_kv);
    kv_f32("llama.rope.freq_base", P.rope_base);
    kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
    kv_u32("llama.rope.dimension_count", (uint32_t)hd);
    kv_u32("llama.vocab_size", (uint32_t)P.n_vocab);
    kv_str("tokenizer.ggml.model", "llama");
    /* tokens, scores, types */
    put_str("tokenizer.ggml.tokens"), put_u32(G_ARR), put_u32(G_STR), put_u64((uint64_t)P.n_vocab);
    for (int i = 0; i < P.n_vocab; i++) {
        char tok[32];
        if (i < 3) snprintf(tok, sizeof tok, "%s", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
        else if (i < 259) snprintf(tok, sizeof tok, "<0x%02X>", i - 3);
        else snprintf(tok, sizeof tok, "\xe2\x96\x81t%d", i);
        put_str(tok);
    }
    put_str("tokenizer.ggml.scores"), put_u32(G_ARR), put_u32(G_F32), put_u64((uint64_t)P.n_vocab);
    for (int i = 0; i < P.n_vocab; i++) {
        const float sc = i < 259 ? 0.0f : -(float)i;
        put(&sc, 4);
    }
    put_str("tokenizer.ggml.token_type"), put_u32(G_ARR), put_u32(G_I32), put_u64((uint64_t)P.n_vocab);
    for (int i = 0; i < P.n_vocab; i++) put_u32(i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1);
    kv_u32("tokenizer.ggml.bos_token_id", 1);
    kv_u32("tokenizer.ggml.eos_token_id", 2);
    kv_u32("tokenizer.ggml.unknown_token_id", 0);

    for (int i = 0; i < nt; i++) {
        put_str(ts[i].name);
        const int nd = ts[i].rows == 1 ? 1 : 2;
        put_u32((uint32_t)nd);
        put_u64((uint64_t)ts[i].cols);
        if (nd == 2) put_u64((uint64_t)ts[i].rows);
        put_u32((uint32_t)ts[i].type);
        put_u64(ts[i].offset);
    }
    static const uint8_t zeros[32];
    long pos = ftell(out);
    if (pos % 32) put(zeros, (size_t)(32 - pos % 32));
    for (int i = 0; i < nt; i++) {
        write_tensor(&ts[i]);
        const uint64_t pad = ((ts[i].bytes + 31) & ~(uint64_t)31) - ts[i].bytes;
        if (pad) put(zeros, pad);
    }
    if (fclose(out) != 0 || wfail) {
        fprintf(stderr, "synth_model: writing %s failed\n", argv[2]);
        return 1;
    }
    printf("%s: %s, %d layers, %d tensors, %.1f MiB\n", argv[2], P.name, P.n_layer, nt,
           (double)off / (1024.0 * 1024.0));
    free(ts);
    return 0;
}
