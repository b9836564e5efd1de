/* The tokenizer of the default model (SmolLM2's byte-level BPE, 49152 tokens) on any bytes.
 *
 * Invariants: encoding never fails and every id is in the vocabulary; for valid UTF-8 encoded without
 * special-token parsing, the pieces and the streaming detokenizer (the SSE path) both give back exactly
 * the input; for any bytes the detokenizer emits valid UTF-8 only. A byte the vocabulary has no token for
 * (SmolLM2 lacks 0x1d, for one) is dropped, as llama.cpp drops it: the round trip then gives the text
 * without those bytes, which the initializer lists. The vocabulary is loaded once from
 * BW_FUZZ_MODEL or the default model path; without it the runner reports a skip. */
#include <string.h>

#include "engine/detok.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "fuzz.h"

#ifndef BW_DEFAULT_MODEL
#define BW_DEFAULT_MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#endif

static bw_gguf *g;
static bw_tok *tok;
static uint8_t unrepresentable[256];

/* Byte-level BPE starts from one token per byte; a byte whose one-byte token the vocabulary lacks cannot
 * be encoded at all. */
static void find_unrepresentable(void)
{
    uint8_t seen[256] = {0};
    char out[256];
    for (int32_t id = 0; id < bw_tok_n_vocab(tok); id++)
        if (bw_tok_piece(tok, id, 0, out, (int32_t)sizeof(out)) == 1) seen[(uint8_t)out[0]] = 1;
    for (int b = 0; b < 256; b++) {
        /* 0xc0, 0xc1 and 0xf5..0xff never occur in UTF-8, so a vocabulary may well skip them */
        unrepresentable[b] = !seen[b];
        if (!seen[b] && b < 0xf5 && b != 0xc0 && b != 0xc1)
            printf("the vocabulary has no token for byte 0x%02x: it is dropped from texts\n", b);
    }
}

/* The vocabulary lives for the whole run; closing it at exit keeps LeakSanitizer's report about the
 * fuzzed code only (an optimizer may drop the otherwise unread pointer to the file). */
static void close_vocabulary(void)
{
    bw_tok_free(tok);
    bw_gguf_close(g);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *path = getenv("BW_FUZZ_MODEL") ? getenv("BW_FUZZ_MODEL") : BW_DEFAULT_MODEL;
    char err[512];
    if (!(g = bw_gguf_open(path, err, sizeof(err))) || !(tok = bw_tok_load(g, err, sizeof(err)))) {
        printf("skipped: no vocabulary (%s)\n", err);
        exit(FUZZ_SKIP);
    }
    atexit(close_vocabulary);
    find_unrepresentable();
    return 0;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if s does not start one (overlongs, surrogates
 * and code points past U+10FFFF are invalid, as in RFC 3629). */
static size_t utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    size_t len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (!len || len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (c == 0xe0 && s[1] < 0xa0) return 0;
    if (c == 0xed && s[1] >= 0xa0) return 0;
    if (c == 0xf0 && s[1] < 0x90) return 0;
    if (c == 0xf4 && s[1] >= 0x90) return 0;
    return len;
}

static int valid_utf8(const uint8_t *s, size_t n)
{
    for (size_t i = 0, k; i < n; i += k)
        if (!(k = utf8_seq(s + i, n - i))) return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096) return 0; /* longer texts add time, not paths */
    const char *text = (const char *)data;
    int32_t cap = (int32_t)size + 2;
    int32_t *ids = malloc((size_t)cap * sizeof(*ids));
    int32_t n = bw_tok_encode(tok, text, size, 0, 0, ids, cap);
    FUZZ_CHECK(n >= 0 && n <= (int32_t)size, "encode returned %d for %zu bytes", n, size);

    /* the pieces, and the streaming detokenizer fed one id at a time, must both give the text back */
    size_t out_cap = size * 3 + 64, got = 0, streamed = 0;
    char *pieces = malloc(out_cap), *stream = malloc(out_cap);
    bw_detok d;
    bw_detok_init(&d);
    for (int32_t i = 0; i < n; i++) {
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < bw_tok_n_vocab(tok), "id %d out of range", ids[i]);
        int32_t k = bw_tok_piece(tok, ids[i], 0, pieces + got, (int32_t)(out_cap - got));
        FUZZ_CHECK(k >= 0, "piece of %d does not fit", ids[i]);
        got += (size_t)k;
        int w = bw_detok_push(&d, tok, ids[i], stream + streamed, out_cap - streamed);
        FUZZ_CHECK(w >= 0, "detok buffer");
        FUZZ_CHECK(valid_utf8((const uint8_t *)stream + streamed, (size_t)w), "detok emitted invalid UTF-8");
        streamed += (size_t)w;
    }
    int w = bw_detok_flush(&d, stream + streamed, out_cap - streamed);
    FUZZ_CHECK(w >= 0, "detok flush buffer");
    FUZZ_CHECK(valid_utf8((const uint8_t *)stream + streamed, (size_t)w), "detok flush emitted invalid UTF-8");
    streamed += (size_t)w;
    if (valid_utf8(data, size)) {
        /* the text comes back whole, less only the bytes the vocabulary cannot represent */
        size_t want = 0;
        int lossless = 1;
        for (size_t i = 0; i < size; i++) {
            if (unrepresentable[data[i]]) {
                lossless = 0;
                continue;
            }
            FUZZ_CHECK(want < got && (uint8_t)pieces[want] == data[i], "pieces differ from the text at byte %zu", i);
            want++;
        }
        FUZZ_CHECK(want == got, "pieces have %zu bytes, the text %zu representable ones", got, want);
        if (lossless)
            FUZZ_CHECK(streamed == size && memcmp(stream, data, size) == 0,
                       "streamed text differs from valid UTF-8 input (%zu vs %zu bytes)", streamed, size);
    }

    /* with special-token parsing and BOS: any bytes still encode to ids in range */
    int32_t m = bw_tok_encode(tok, text, size, 1, 1, ids, cap);
    FUZZ_CHECK(m >= 0 && m <= cap, "encode with specials returned %d", m);
    for (int32_t i = 0; i < m; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < bw_tok_n_vocab(tok), "special id");
    free(ids);
    free(pieces);
    free(stream);
    return 0;
}
