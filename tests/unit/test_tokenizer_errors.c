/* Hostile tokenizer metadata is refused with one clear line, never a crash; a tiny valid vocabulary
 * works, and hostile text (random bytes, long runs) encodes without trouble. The GGUF files are written
 * here, so the test needs nothing from outside. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "engine/tokenizer.h"

#include "check.h"
#include "gguf_write.h"

static char path[64];

/* Writes the metadata as a GGUF file and loads a tokenizer from it; err receives the reason. */
static bw_tok *load(gw *w, char *err, size_t errlen)
{
    size_t n;
    unsigned char *file = gw_file(w, &n);
    FILE *fp = fopen(path, "wb");
    fwrite(file, 1, n, fp);
    fclose(fp);
    free(file);
    bw_gguf *g = bw_gguf_open(path, err, errlen);
    if (!g) return NULL;
    bw_tok *t = bw_tok_load(g, err, errlen);
    bw_gguf_close(g); /* the tokenizer keeps its own copy of everything */
    return t;
}

/* A byte-level vocabulary: the bytes of "abc d" as GPT-2 characters, "ab", "abc" and a control token. */
static const char *const BPE_TOKENS[] = {"a", "b", "c", "d", "\xc4\xa0", "ab", "abc", "<|end|>"};
static const int32_t BPE_TYPES[] = {1, 1, 1, 1, 1, 1, 1, 3};
static const char *const BPE_MERGES[] = {"a b", "ab c"};

static void bpe_base(gw *w, const char *pre)
{
    kv_str(w, "tokenizer.ggml.model", "gpt2");
    if (pre) kv_str(w, "tokenizer.ggml.pre", pre);
    kv_strs(w, "tokenizer.ggml.tokens", BPE_TOKENS, 8);
    kv_i32s(w, "tokenizer.ggml.token_type", BPE_TYPES, 8);
}

static void expect_error(gw *w, const char *want, const char *what)
{
    char err[256] = "";
    bw_tok *t = load(w, err, sizeof err);
    CHECK(!t, "%s: loaded", what);
    CHECK(strncmp(err, "tokenizer: ", 11) == 0 || strncmp(err, "gguf", 4) == 0, "%s: error '%s' names no module", what,
          err);
    CHECK(strstr(err, want) != NULL, "%s: error '%s' lacks '%s'", what, err, want);
    CHECK(strchr(err, '\n') == NULL, "%s: error is not one line", what);
    bw_tok_free(t);
}

static void refuses_bad_metadata(void)
{
    gw w = {0};
    bpe_base(&w, "gpt-2");
    const char *bad_merges[] = {"a b", "abc"};
    kv_strs(&w, "tokenizer.ggml.merges", bad_merges, 2);
    expect_error(&w, "merges entry 1 has no space", "merge without space");

    bpe_base(&w, "gpt-2");
    expect_error(&w, "tokenizer.ggml.merges is missing", "no merges");

    bpe_base(&w, "no-such-pre");
    kv_strs(&w, "tokenizer.ggml.merges", BPE_MERGES, 2);
    expect_error(&w, "unknown pre-tokenizer 'no-such-pre'", "unknown pre-tokenizer");

    kv_str(&w, "tokenizer.ggml.model", "wordpiece-9");
    kv_strs(&w, "tokenizer.ggml.tokens", BPE_TOKENS, 8);
    expect_error(&w, "'wordpiece-9' is not supported", "unknown model");

    kv_str(&w, "tokenizer.ggml.model", "gpt2");
    expect_error(&w, "tokenizer.ggml.tokens is missing", "no vocabulary");

    expect_error(&w, "tokenizer.ggml.model is missing", "no tokenizer at all");

    kv_str(&w, "tokenizer.ggml.model", "gpt2");
    kv_strs(&w, "tokenizer.ggml.tokens", BPE_TOKENS, 8);
    kv_i32s(&w, "tokenizer.ggml.token_type", BPE_TYPES, 7);
    expect_error(&w, "token_type has 7 entries but there are 8 tokens", "short token_type");

    bpe_base(&w, "gpt-2");
    kv_strs(&w, "tokenizer.ggml.merges", BPE_MERGES, 2);
    kv_u32(&w, "tokenizer.ggml.bos_token_id", 99);
    expect_error(&w, "bos_token_id = 99 is outside the vocabulary (8 tokens)", "BOS out of range");

    bpe_base(&w, "gpt-2");
    kv_strs(&w, "tokenizer.ggml.merges", BPE_MERGES, 2);
    kv_str(&w, "tokenizer.ggml.eos_token_id", "2");
    expect_error(&w, "eos_token_id is not an unsigned 32-bit integer", "EOS of the wrong type");

    const char *dup[] = {"a", "b", "a"};
    kv_str(&w, "tokenizer.ggml.model", "llama");
    kv_strs(&w, "tokenizer.ggml.tokens", dup, 3);
    expect_error(&w, "token 2 repeats token 0", "duplicate token");

    const char *spm[] = {"<unk>", "<s>", "</s>", "<0x41>", "<0xZZ>"};
    const int32_t spm_types[] = {2, 3, 3, 6, 6};
    const float scores[] = {0, 0, 0, 0, 0};
    kv_str(&w, "tokenizer.ggml.model", "llama");
    kv_strs(&w, "tokenizer.ggml.tokens", spm, 5);
    kv_i32s(&w, "tokenizer.ggml.token_type", spm_types, 5);
    kv_f32s(&w, "tokenizer.ggml.scores", scores, 5);
    expect_error(&w, "byte token 4 is '<0xZZ>', expected the form <0x", "malformed byte token");

    kv_str(&w, "tokenizer.ggml.model", "llama");
    kv_strs(&w, "tokenizer.ggml.tokens", spm, 5);
    kv_f32s(&w, "tokenizer.ggml.scores", scores, 4);
    expect_error(&w, "scores has 4 entries but there are 5 tokens", "short scores");

    kv_str(&w, "tokenizer.ggml.model", "llama");
    kv_strs(&w, "tokenizer.ggml.tokens", spm, 5);
    kv_strs(&w, "tokenizer.ggml.scores", spm, 5);
    expect_error(&w, "scores is not an array of float32 or int32", "scores of the wrong type");
}

static void tiny_vocabulary_works(void)
{
    gw w = {0};
    bpe_base(&w, "gpt-2");
    kv_strs(&w, "tokenizer.ggml.merges", BPE_MERGES, 2);
    kv_u32(&w, "tokenizer.ggml.eos_token_id", 7);
    char err[256] = "";
    bw_tok *t = load(&w, err, sizeof err);
    CHECK(t, "tiny vocabulary: %s", err);
    if (!t) return;
    int32_t ids[16];
    int32_t n = bw_tok_encode(t, "abc abd", 7, 0, 1, ids, 16);
    /* "abc" merges fully; " abd" is Ġ, ab, d (no "Ġa" merge in this vocabulary) */
    const int32_t want[] = {6, 4, 5, 3};
    CHECK(n == 4 && memcmp(ids, want, sizeof want) == 0, "tiny encode gave %d tokens", n);
    CHECK(bw_tok_encode(t, "abc abd", 7, 0, 1, ids, 2) == -4, "a short buffer reports the size needed");
    n = bw_tok_encode(t, "ab<|end|>", 9, 0, 1, ids, 16);
    CHECK(n == 2 && ids[0] == 5 && ids[1] == 7, "control token cut out of the text");
    CHECK(bw_tok_is_eog(t, 7), "the EOS token ends generation");
    n = bw_tok_encode(t, "", 0, 0, 1, ids, 16);
    CHECK(n == 0, "empty text gives no tokens");

    /* Hostile text: random bytes, a long run and many special tokens; none may crash or take long. */
    size_t big = 64 * 1024;
    char *s = malloc(big);
    int32_t *out = malloc(sizeof *out * (big + 16));
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < big; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s[i] = (char)(x >> 56);
    }
    CHECK(bw_tok_encode(t, s, big, 1, 1, out, (int32_t)big + 16) >= 0, "random bytes");
    memset(s, 'a', big);
    CHECK(bw_tok_encode(t, s, big, 1, 1, out, (int32_t)big + 16) >= 0, "one long word");
    for (size_t i = 0; i + 7 <= big; i += 7) memcpy(s + i, "<|end|>", 7);
    CHECK(bw_tok_encode(t, s, big, 1, 1, out, (int32_t)big + 16) >= 0, "thousands of special tokens");
    char piece[8];
    CHECK(bw_tok_piece(t, -1, 1, piece, 8) == 0 && bw_tok_piece(t, 1 << 30, 1, piece, 8) == 0,
          "ids outside the vocabulary have no piece");
    free(s);
    free(out);
    bw_tok_free(t);
}

int main(void)
{
    snprintf(path, sizeof path, "/tmp/bw_tok_errors_%d.gguf", (int)getpid());
    refuses_bad_metadata();
    tiny_vocabulary_works();
    unlink(path);
    printf("tokenizer errors: %s\n",
           check_failed ? "FAILED" : "bad metadata refused with one-line reasons; hostile text encodes");
    return check_failed ? 1 : 0;
}
