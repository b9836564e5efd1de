/* Tokenizer from GGUF metadata. The reference is llama.cpp (llama-vocab.cpp, unicode.cpp): token ids
 * must equal its output for the same file and flags, so several odd-looking rules below reproduce its
 * behaviour on purpose; each says so.
 *
 * Encoding runs in three stages:
 *   1. special-token partition: control/user-defined tokens written in the text are cut out first,
 *      longest token first (parse_special decides whether control tokens take part);
 *   2. per text fragment, either byte-level BPE (pre-tokenizer regexes, byte-to-unicode mapping,
 *      merges by rank) or SentencePiece-style BPE (spaces as U+2581, merges by score, byte fallback);
 *   3. BOS in front when asked.
 * Every step is O(n log n) in the input length; nothing recurses on input. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem, qsort_r */
#endif
#include "engine/tokenizer.h"
#include "common/err.h"
#include "common/utf8.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <ctype.h>
#include <string.h>

enum tok_kind { KIND_BPE, KIND_SPM };

/* Token attributes, as llama.cpp derives them from tokenizer.ggml.token_type. */
enum {
    ATTR_UNKNOWN = 1 << 0,
    ATTR_UNUSED = 1 << 1,
    ATTR_NORMAL = 1 << 2,
    ATTR_CONTROL = 1 << 3,
    ATTR_USER_DEFINED = 1 << 4,
    ATTR_BYTE = 1 << 5,
    ATTR_RSTRIP = 1 << 6, /* whitespace after this special token in the text is dropped (phi-3) */
};

/* One pass of the pre-tokenizer: a regex and what happens to text it does not match. llama.cpp runs
 * some expressions through std::regex (unmatched text stays one piece) and others through hand-written
 * splitters that emit every unmatched code point on its own; the regexes below are written so that
 * PCRE2 reproduces the output of either. */
struct pre_pass {
    pcre2_code *re;
    bool gap_per_codepoint;
};

#define MAX_PASSES 4

/* Interned byte strings: vocabulary tokens first (string id == token id), then merge operands and
 * results that are not tokens. */
typedef struct {
    char *buf;
    size_t len, cap;
    uint32_t *off, *slen;
    uint32_t n, cap_n;
    uint32_t *slots; /* open addressing; slot holds id + 1, 0 = empty */
    uint32_t mask;
} strtab;

/* (left string id, right string id) -> merge rank and result string id. */
typedef struct {
    uint64_t *keys; /* UINT64_MAX = empty */
    int32_t *rank;
    int32_t *result;
    uint32_t mask;
    uint32_t n;
} pairmap;

struct bw_tok {
    enum tok_kind kind;
    int32_t n_vocab;
    strtab strs;
    float *scores;
    uint8_t *attr;
    uint8_t *eog;
    int32_t *special; /* tokens matched in text before tokenizing, longest first */
    int32_t n_special;
    int32_t bos, eos, unk;
    bool add_bos, add_space_prefix, ignore_merges;
    uint32_t max_token_len;

    /* byte-level BPE */
    pairmap merges;
    struct pre_pass passes[MAX_PASSES];
    int n_passes;
    char byte_enc[256][3]; /* UTF-8 of the code point standing for each byte */
    uint8_t byte_enc_len[256];
    int32_t byte_sid[256];   /* string id of that code point, -1 if absent */
    int32_t single_tok[256]; /* token whose text is exactly this one byte, -1 if none */
    int16_t cp_to_byte[324]; /* inverse of byte_enc for code points below 324 */

    /* SentencePiece */
    int32_t byte_tok[256]; /* <0xXX> token (or the one-character token) for each byte */
};

/* every message from this module starts "tokenizer: " */
#define set_err(err, errlen, ...) bw_err_set(err, errlen, "tokenizer", __VA_ARGS__)

/* ---------------------------------------------------------------- hashing and tables */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static bool strtab_init(strtab *t, uint32_t expect, size_t bytes)
{
    memset(t, 0, sizeof *t);
    uint32_t cap = 16;
    while (cap < expect * 2u + 16u && cap < (1u << 30)) cap <<= 1;
    t->mask = cap - 1;
    t->slots = calloc(cap, sizeof *t->slots);
    t->cap_n = expect + 16;
    t->off = malloc(t->cap_n * sizeof *t->off);
    t->slen = malloc(t->cap_n * sizeof *t->slen);
    t->cap = bytes + 64;
    t->buf = malloc(t->cap);
    return t->slots && t->off && t->slen && t->buf;
}

static void strtab_free(strtab *t)
{
    free(t->buf);
    free(t->off);
    free(t->slen);
    free(t->slots);
}

static const char *strtab_str(const strtab *t, uint32_t id, uint32_t *len)
{
    *len = t->slen[id];
    return t->buf + t->off[id];
}

static int32_t strtab_find(const strtab *t, const char *s, size_t n)
{
    if (!t->slots) return -1;
    uint32_t i = (uint32_t)hash_bytes(s, n) & t->mask;
    for (;;) {
        uint32_t v = t->slots[i];
        if (v == 0) return -1;
        uint32_t id = v - 1;
        if (t->slen[id] == n && memcmp(t->buf + t->off[id], s, n) == 0) return (int32_t)id;
        i = (i + 1) & t->mask;
    }
}

static bool strtab_grow_slots(strtab *t)
{
    uint32_t cap = (t->mask + 1) * 2;
    uint32_t *slots = calloc(cap, sizeof *slots);
    if (!slots) return false;
    for (uint32_t id = 0; id < t->n; id++) {
        uint32_t i = (uint32_t)hash_bytes(t->buf + t->off[id], t->slen[id]) & (cap - 1);
        while (slots[i]) i = (i + 1) & (cap - 1);
        slots[i] = id + 1;
    }
    free(t->slots);
    t->slots = slots;
    t->mask = cap - 1;
    return true;
}

/* Appends s as a new string without checking for duplicates; returns its id or -1 on no memory. */
static int32_t strtab_push(strtab *t, const char *s, size_t n)
{
    if (n > UINT32_MAX / 2 || t->n >= INT32_MAX - 1) return -1;
    if (t->n == t->cap_n) {
        uint32_t nc = t->cap_n * 2;
        uint32_t *off = realloc(t->off, nc * sizeof *off);
        if (!off) return -1;
        t->off = off;
        uint32_t *slen = realloc(t->slen, nc * sizeof *slen);
        if (!slen) return -1;
        t->slen = slen;
        t->cap_n = nc;
    }
    if (t->len + n > t->cap) {
        size_t nc = t->cap * 2 + n;
        if (nc > UINT32_MAX) return -1;
        char *b = realloc(t->buf, nc);
        if (!b) return -1;
        t->buf = b;
        t->cap = nc;
    }
    memcpy(t->buf + t->len, s, n);
    t->off[t->n] = (uint32_t)t->len;
    t->slen[t->n] = (uint32_t)n;
    t->len += n;
    if ((t->n + 1) * 2 > t->mask && !strtab_grow_slots(t)) return -1;
    uint32_t i = (uint32_t)hash_bytes(s, n) & t->mask;
    while (t->slots[i]) i = (i + 1) & t->mask;
    t->slots[i] = t->n + 1;
    return (int32_t)t->n++;
}

static int32_t strtab_intern(strtab *t, const char *s, size_t n)
{
    int32_t id = strtab_find(t, s, n);
    return id >= 0 ? id : strtab_push(t, s, n);
}

static bool pairmap_init(pairmap *m, uint32_t expect)
{
    memset(m, 0, sizeof *m);
    uint32_t cap = 16;
    while (cap < expect * 2u + 16u && cap < (1u << 30)) cap <<= 1;
    m->mask = cap - 1;
    m->keys = malloc(cap * sizeof *m->keys);
    m->rank = malloc(cap * sizeof *m->rank);
    m->result = malloc(cap * sizeof *m->result);
    if (!m->keys || !m->rank || !m->result) return false;
    memset(m->keys, 0xff, cap * sizeof *m->keys);
    return true;
}

static void pairmap_free(pairmap *m)
{
    free(m->keys);
    free(m->rank);
    free(m->result);
}

static uint64_t pair_key(int32_t l, int32_t r) { return ((uint64_t)(uint32_t)l << 32) | (uint32_t)r; }

/* The first entry for a pair wins, as in llama.cpp's map emplace. */
static void pairmap_add(pairmap *m, int32_t l, int32_t r, int32_t rank, int32_t result)
{
    uint64_t k = pair_key(l, r);
    uint32_t i = (uint32_t)hash_u64(k) & m->mask;
    while (m->keys[i] != UINT64_MAX) {
        if (m->keys[i] == k) return;
        i = (i + 1) & m->mask;
    }
    m->keys[i] = k;
    m->rank[i] = rank;
    m->result[i] = result;
    m->n++;
}

static int32_t pairmap_find(const pairmap *m, int32_t l, int32_t r, int32_t *result)
{
    if (!m->keys) return -1;
    uint64_t k = pair_key(l, r);
    uint32_t i = (uint32_t)hash_u64(k) & m->mask;
    while (m->keys[i] != UINT64_MAX) {
        if (m->keys[i] == k) {
            *result = m->result[i];
            return m->rank[i];
        }
        i = (i + 1) & m->mask;
    }
    return -1;
}

/* ---------------------------------------------------------------- small growable buffers */

typedef struct {
    int32_t *v;
    size_t n, cap;
} ivec;

static bool ivec_push(ivec *a, int32_t x)
{
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 256;
        int32_t *v = realloc(a->v, nc * sizeof *v);
        if (!v) return false;
        a->v = v;
        a->cap = nc;
    }
    a->v[a->n++] = x;
    return true;
}

static bool reserve(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return true;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    void *q = realloc(*p, nc * elem);
    if (!q) return false;
    *p = q;
    *cap = nc;
    return true;
}

/* ---------------------------------------------------------------- UTF-8 */

/* Decodes one code point the way llama.cpp's unicode_cpt_from_utf8 does: it checks lead and
 * continuation bits only (overlong forms and surrogates pass), and a malformed sequence costs one byte
 * and yields U+FFFD. Returns the number of bytes consumed. */
static size_t lax_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t need;
    uint32_t v;
    if ((c & 0x40) == 0) {
        need = 0;
        v = 0;
    } else if ((c & 0x20) == 0) {
        need = 2;
        v = c & 0x1F;
    } else if ((c & 0x10) == 0) {
        need = 3;
        v = c & 0x0F;
    } else if ((c & 0x08) == 0) {
        need = 4;
        v = c & 0x07;
    } else {
        need = 0;
        v = 0;
    }
    if (need == 0 || need > n) {
        *cp = 0xFFFD;
        return 1;
    }
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = 0xFFFD;
            return 1;
        }
        v = (v << 6) | (s[i] & 0x3F);
    }
    /* llama.cpp cannot re-encode code points above U+10FFFF (it throws); U+FFFD keeps us total. */
    *cp = v > 0x10FFFF ? 0xFFFD : v;
    return need;
}

/* Rewrites text as llama.cpp sees it after decoding and re-encoding (malformed bytes become U+FFFD,
 * overlong forms their shortest form). `subj` gets the same bytes except that surrogates, which PCRE2
 * rejects, are replaced by U+FFFD: the same length, and of the same class for every regex we use
 * (neither letter, number nor space). Both outputs have room for 3 * n bytes. */
static size_t normalize_utf8(const char *text, size_t n, char *norm, char *subj)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += lax_decode((const uint8_t *)text + i, n - i, &cp);
        size_t k = bw_utf8_put(cp, norm + o);
        if (cp >= 0xD800 && cp <= 0xDFFF) bw_utf8_put(0xFFFD, subj + o);
        else memcpy(subj + o, norm + o, k);
        o += k;
    }
    return o;
}

static size_t utf8_len_from_lead(uint8_t c)
{
    static const uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[c >> 4];
}

/* ---------------------------------------------------------------- pre-tokenizer regexes */

/* llama.cpp's whitespace set (unicode_set_whitespace). PCRE2's \s also holds U+180E, so \s is never
 * used directly. */
#define WS "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

/* GPT-2's expression; llama.cpp runs it through a hand-written splitter with the same output. */
static const char RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS "])";

/* Llama 3's expression with the case-insensitive group spelled out, as llama.cpp adapts it. */
static const char RE_LLAMA3[] =
    "'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
    "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|[" WS "]*[\\r\\n]+|[" WS "]+(?![^" WS "])|[" WS "]+";

/* Qwen2's: Llama 3's with single digits. */
static const char RE_QWEN2[] =
    "'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
    "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|[" WS "]*[\\r\\n]+|[" WS "]+(?![^" WS "])|[" WS "]+";

struct pre_def {
    const char *names; /* NUL-separated, double-NUL-terminated */
    const char *re[MAX_PASSES];
    bool per_cp[MAX_PASSES];
    bool ignore_merges;
    bool add_bos;
};

static const struct pre_def PRE_DEFS[] = {
    {"default\0",
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"},
     {false, true, false, false},
     false,
     false},
    {"llama3\0llama-v3\0llama-bpe\0falcon3\0pixtral\0", {RE_LLAMA3}, {true}, true, true},
    {"qwen2\0deepseek-r1-qwen\0", {RE_QWEN2}, {true}, false, false},
    {"gpt-2\0gpt2\0phi-2\0mpt\0olmo\0jais\0", {RE_GPT2}, {true}, false, false},
    {"smollm\0starcoder\0refact\0command-r\0codeshell\0exaone\0minerva-7b\0",
     {"\\p{N}", RE_GPT2},
     {false, true},
     false,
     false},
};

static const struct pre_def *find_pre(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof PRE_DEFS / sizeof PRE_DEFS[0]; i++) {
        for (const char *p = PRE_DEFS[i].names; *p; p += strlen(p) + 1) {
            if (strlen(p) == len && memcmp(p, name, len) == 0) return &PRE_DEFS[i];
        }
    }
    return NULL;
}

static bool compile_passes(bw_tok *t, const struct pre_def *def, char *err, size_t errlen)
{
    for (int i = 0; i < MAX_PASSES && def->re[i]; i++) {
        int ec;
        PCRE2_SIZE eo;
        pcre2_code *re =
            pcre2_compile((PCRE2_SPTR)def->re[i], PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
        if (!re) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(ec, msg, sizeof msg);
            set_err(err, errlen, "pre-tokenizer regex %d does not compile at offset %zu: %s", i, (size_t)eo,
                    (const char *)msg);
            return false;
        }
        /* JIT is an optimisation only: without it PCRE2 interprets the same pattern. */
        (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
        t->passes[i].re = re;
        t->passes[i].gap_per_codepoint = def->per_cp[i];
        t->n_passes = i + 1;
    }
    return true;
}

/* ---------------------------------------------------------------- loading */

static const char *const EOG_NAMES[] = {
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\xef\xbd\x9c"
    "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
    "[e~[",
    /* fill-in-the-middle pad / repo / file-separator markers end generation too */
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
    NULL,
};

/* Names llama.cpp promotes to control tokens even when the file marks them normal (EOT/EOM/FIM
 * markers); this decides whether they are cut out of text when parse_special is set. */
static const char *const CONTROL_NAMES[] = {
    "<end_of_turn>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<|eom_id|>",
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<\xef\xbd\x9c"
    "fim\xe2\x96\x81"
    "begin\xef\xbd\x9c>",
    "<PRE>",
    "\xe2\x96\x81<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<\xef\xbd\x9c"
    "fim\xe2\x96\x81hole\xef\xbd\x9c>",
    "<SUF>",
    "\xe2\x96\x81<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<\xef\xbd\x9c"
    "fim\xe2\x96\x81"
    "end\xef\xbd\x9c>",
    "<MID>",
    "\xe2\x96\x81<MID>",
    "<|code_middle|>",
    "<|middle|>",
    NULL,
};

static bool in_list(const char *const *list, const char *s, size_t n)
{
    for (; *list; list++) {
        if (strlen(*list) == n && memcmp(*list, s, n) == 0) return true;
    }
    return false;
}

static int cmp_special(const void *a, const void *b, void *ctx);

/* Reads an optional token id; ids outside the vocabulary are an error. */
static bool get_id(const bw_gguf *g, const char *key, int32_t n_vocab, int32_t *id, char *err, size_t errlen)
{
    const bw_gguf_kv *kv = bw_gguf_find(g, key);
    if (!kv) return true;
    uint32_t v;
    if (bw_gguf_get_u32(g, key, &v) != 0) {
        set_err(err, errlen, "%s is not an unsigned 32-bit integer", key);
        return false;
    }
    if (v >= (uint32_t)n_vocab) {
        set_err(err, errlen, "%s = %u is outside the vocabulary (%d tokens)", key, v, n_vocab);
        return false;
    }
    *id = (int32_t)v;
    return true;
}

static bool get_flag(const bw_gguf *g, const char *key, bool *out, char *err, size_t errlen)
{
    if (!bw_gguf_find(g, key)) return true;
    int v;
    if (bw_gguf_get_bool(g, key, &v) != 0) {
        set_err(err, errlen, "%s is not a boolean", key);
        return false;
    }
    *out = v != 0;
    return true;
}

static const bw_gguf_kv *get_array(const bw_gguf *g, const char *key, enum bw_gguf_vtype t1, enum bw_gguf_vtype t2,
                                   const char *what, char *err, size_t errlen, bool *bad)
{
    const bw_gguf_kv *kv = bw_gguf_find(g, key);
    *bad = false;
    if (!kv) return NULL;
    if (kv->type != BW_GGUF_ARRAY || (kv->arr_type != t1 && kv->arr_type != t2)) {
        set_err(err, errlen, "%s is not an array of %s", key, what);
        *bad = true;
        return NULL;
    }
    return kv;
}

static bool load_vocab(bw_tok *t, const bw_gguf *g, char *err, size_t errlen)
{
    bool bad;
    const bw_gguf_kv *toks =
        get_array(g, "tokenizer.ggml.tokens", BW_GGUF_STRING, BW_GGUF_STRING, "strings", err, errlen, &bad);
    if (!toks) {
        if (!bad) set_err(err, errlen, "tokenizer.ggml.tokens is missing: the file has no vocabulary");
        return false;
    }
    if (toks->arr_len == 0 || toks->arr_len >= (1u << 30)) {
        set_err(err, errlen, "tokenizer.ggml.tokens has %llu entries (expected 1 to 2^30)",
                (unsigned long long)toks->arr_len);
        return false;
    }
    int32_t n = (int32_t)toks->arr_len;
    t->n_vocab = n;
    size_t bytes = 0;
    for (int32_t i = 0; i < n; i++) {
        bw_gguf_str s;
        if (bw_gguf_arr_str(g, toks, (uint64_t)i, &s) != 0) {
            set_err(err, errlen, "tokenizer.ggml.tokens entry %d cannot be read", i);
            return false;
        }
        if (s.len > (1u << 20)) {
            set_err(err, errlen, "token %d is %llu bytes long (limit 1 MiB)", i, (unsigned long long)s.len);
            return false;
        }
        bytes += s.len ? s.len : 24;
    }
    if (!strtab_init(&t->strs, (uint32_t)n, bytes)) goto oom;
    for (int32_t i = 0; i < n; i++) {
        bw_gguf_str s;
        bw_gguf_arr_str(g, toks, (uint64_t)i, &s);
        char empty[32];
        const char *p = s.str;
        size_t len = s.len;
        if (len == 0) {
            /* llama.cpp names empty tokens this way; matching it keeps ids and pieces identical. */
            len = (size_t)snprintf(empty, sizeof empty, "[EMPTY_%d]", i);
            p = empty;
        }
        int32_t prev = strtab_find(&t->strs, p, len);
        if (prev >= 0) {
            set_err(err, errlen, "token %d repeats token %d ('%.*s')", i, prev, (int)(len < 40 ? len : 40), p);
            return false;
        }
        if (strtab_push(&t->strs, p, len) != i) goto oom;
        if (len > t->max_token_len) t->max_token_len = (uint32_t)len;
    }

    t->attr = malloc((size_t)n);
    t->scores = calloc((size_t)n, sizeof *t->scores);
    t->eog = calloc((size_t)n, 1);
    if (!t->attr || !t->scores || !t->eog) goto oom;
    memset(t->attr, ATTR_NORMAL, (size_t)n);

    const bw_gguf_kv *types =
        get_array(g, "tokenizer.ggml.token_type", BW_GGUF_I32, BW_GGUF_I32, "int32", err, errlen, &bad);
    if (bad) return false;
    if (types) {
        if (types->arr_len != (uint64_t)n) {
            set_err(err, errlen, "tokenizer.ggml.token_type has %llu entries but there are %d tokens",
                    (unsigned long long)types->arr_len, n);
            return false;
        }
        for (int32_t i = 0; i < n; i++) {
            int32_t ty;
            memcpy(&ty, types->data + (size_t)i * 4, 4);
            static const uint8_t map[] = {0,           ATTR_NORMAL, ATTR_UNKNOWN, ATTR_CONTROL, ATTR_USER_DEFINED,
                                          ATTR_UNUSED, ATTR_BYTE};
            t->attr[i] = (ty >= 0 && ty <= 6) ? map[ty] : 0;
        }
    }

    const bw_gguf_kv *scores =
        get_array(g, "tokenizer.ggml.scores", BW_GGUF_F32, BW_GGUF_I32, "float32 or int32", err, errlen, &bad);
    if (bad) return false;
    if (scores) {
        if (scores->arr_len != (uint64_t)n) {
            set_err(err, errlen, "tokenizer.ggml.scores has %llu entries but there are %d tokens",
                    (unsigned long long)scores->arr_len, n);
            return false;
        }
        for (int32_t i = 0; i < n; i++) {
            if (scores->arr_type == BW_GGUF_F32) {
                memcpy(&t->scores[i], scores->data + (size_t)i * 4, 4);
            } else {
                int32_t v;
                memcpy(&v, scores->data + (size_t)i * 4, 4);
                t->scores[i] = (float)v;
            }
        }
    }
    return true;
oom:
    set_err(err, errlen, "out of memory loading %llu tokens", (unsigned long long)toks->arr_len);
    return false;
}

static bool load_merges(bw_tok *t, const bw_gguf *g, char *err, size_t errlen)
{
    bool bad;
    const bw_gguf_kv *kv =
        get_array(g, "tokenizer.ggml.merges", BW_GGUF_STRING, BW_GGUF_STRING, "strings", err, errlen, &bad);
    if (!kv) {
        if (!bad) set_err(err, errlen, "tokenizer.ggml.merges is missing: a gpt2 (byte-level BPE) vocabulary needs it");
        return false;
    }
    if (kv->arr_len >= (1u << 30)) {
        set_err(err, errlen, "tokenizer.ggml.merges has %llu entries (limit 2^30)", (unsigned long long)kv->arr_len);
        return false;
    }
    if (!pairmap_init(&t->merges, (uint32_t)kv->arr_len)) goto oom;
    char *cat = NULL;
    size_t cat_cap = 0;
    for (uint64_t i = 0; i < kv->arr_len; i++) {
        bw_gguf_str s;
        if (bw_gguf_arr_str(g, kv, i, &s) != 0) {
            set_err(err, errlen, "merges entry %llu cannot be read", (unsigned long long)i);
            free(cat);
            return false;
        }
        /* The split is at the first space after the first byte, as llama.cpp does. */
        const char *sp = s.len > 1 ? memchr(s.str + 1, ' ', s.len - 1) : NULL;
        if (!sp) {
            set_err(err, errlen, "merges entry %llu has no space", (unsigned long long)i);
            free(cat);
            return false;
        }
        size_t ln = (size_t)(sp - s.str), rn = s.len - ln - 1;
        if (!reserve((void **)&cat, &cat_cap, ln + rn, 1)) {
            free(cat);
            goto oom;
        }
        memcpy(cat, s.str, ln);
        memcpy(cat + ln, sp + 1, rn);
        int32_t l = strtab_intern(&t->strs, s.str, ln);
        int32_t r = strtab_intern(&t->strs, sp + 1, rn);
        int32_t res = strtab_intern(&t->strs, cat, ln + rn);
        if (l < 0 || r < 0 || res < 0) {
            free(cat);
            goto oom;
        }
        pairmap_add(&t->merges, l, r, (int32_t)i, res);
    }
    free(cat);
    return true;
oom:
    set_err(err, errlen, "out of memory loading merges");
    return false;
}

/* GPT-2's byte-to-unicode table: printable Latin-1 bytes stand for themselves, the other 68 bytes
 * for U+0100 onwards in byte order. */
static void build_byte_tables(bw_tok *t)
{
    int next = 0;
    for (int i = 0; i < 324; i++) t->cp_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        uint32_t cp = printable ? (uint32_t)b : (uint32_t)(256 + next++);
        t->byte_enc_len[b] = (uint8_t)bw_utf8_put(cp, t->byte_enc[b]);
        t->cp_to_byte[cp] = (int16_t)b;
    }
    for (int b = 0; b < 256; b++) {
        int32_t sid = strtab_find(&t->strs, t->byte_enc[b], t->byte_enc_len[b]);
        t->byte_sid[b] = sid;
        char c = (char)b;
        int32_t one = strtab_find(&t->strs, &c, 1);
        t->single_tok[b] = one < t->n_vocab ? one : -1;
    }
}

static bool parse_byte_token(const char *s, uint32_t n, uint8_t *out)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return false;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = (c >= '0' && c <= '9')   ? c - '0'
                : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                                         : -1;
        if (d < 0) return false;
        v = v * 16 + d;
    }
    *out = (uint8_t)v;
    return true;
}

static void finish_special(bw_tok *t)
{
    int32_t n = t->n_vocab;
    for (int32_t i = 0; i < n; i++) {
        uint32_t len;
        const char *s = strtab_str(&t->strs, (uint32_t)i, &len);
        if (in_list(EOG_NAMES, s, len)) {
            t->eog[i] = 1;
            t->attr[i] |= ATTR_CONTROL;
        } else if (in_list(CONTROL_NAMES, s, len)) {
            t->attr[i] |= ATTR_CONTROL;
        }
        if ((t->attr[i] & ATTR_CONTROL) && memmem(s, len, "unused", 6)) t->attr[i] |= ATTR_UNUSED;
    }
    if (t->eos >= 0) t->eog[t->eos] = 1;
}

static int cmp_special(const void *a, const void *b, void *ctx)
{
    const bw_tok *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t lx = t->strs.slen[x], ly = t->strs.slen[y];
    if (lx != ly) return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

static bool build_special_list(bw_tok *t)
{
    t->special = malloc((size_t)t->n_vocab * sizeof *t->special);
    if (!t->special) return false;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if (t->attr[i] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) t->special[t->n_special++] = i;
    }
    qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, cmp_special, t);
    return true;
}

/* llama.cpp strips the whitespace after the special tokens of models whose general.name contains "phi-3"
 * or "phi3" (case-insensitive), except after <unk>, <s> and <|endoftext|>, and also after </s>. */
static void set_rstrip(bw_tok *t, const bw_gguf *g)
{
    bw_gguf_str name;
    if (bw_gguf_get_str(g, "general.name", &name) != 0) return;
    char low[256];
    size_t n = name.len < sizeof low - 1 ? name.len : sizeof low - 1;
    for (size_t i = 0; i < n; i++) low[i] = (char)tolower((unsigned char)name.str[i]);
    low[n] = 0;
    if (!strstr(low, "phi-3") && !strstr(low, "phi3")) return;
    for (int32_t k = 0; k < t->n_special; k++) t->attr[t->special[k]] |= ATTR_RSTRIP;
    static const char *const on[] = {"</s>", NULL}, *const off[] = {"<unk>", "<s>", "<|endoftext|>", NULL};
    for (int i = 0; on[i]; i++) {
        int32_t id = strtab_find(&t->strs, on[i], strlen(on[i]));
        if (id >= 0) t->attr[id] |= ATTR_RSTRIP;
    }
    for (int i = 0; off[i]; i++) {
        int32_t id = strtab_find(&t->strs, off[i], strlen(off[i]));
        if (id >= 0) t->attr[id] &= (uint8_t)~ATTR_RSTRIP;
    }
}

bw_tok *bw_tok_load(const bw_gguf *g, char *err, size_t errlen)
{
    bw_gguf_str model;
    if (bw_gguf_get_str(g, "tokenizer.ggml.model", &model) != 0) {
        set_err(err, errlen, "tokenizer.ggml.model is missing or not a string");
        return NULL;
    }
    bw_tok *t = calloc(1, sizeof *t);
    if (!t) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    t->bos = t->eos = t->unk = -1;
    for (int b = 0; b < 256; b++) t->byte_tok[b] = t->byte_sid[b] = t->single_tok[b] = -1;

    const struct pre_def *pre = NULL;
    if (model.len == 4 && memcmp(model.str, "gpt2", 4) == 0) {
        t->kind = KIND_BPE;
        bw_gguf_str name = {7, "default"};
        if (bw_gguf_find(g, "tokenizer.ggml.pre") && bw_gguf_get_str(g, "tokenizer.ggml.pre", &name) != 0) {
            set_err(err, errlen, "tokenizer.ggml.pre is not a string");
            goto fail;
        }
        pre = find_pre(name.str, name.len);
        if (!pre) {
            set_err(err, errlen,
                    "unknown pre-tokenizer '%.*s' (supported: default, smollm, llama3/llama-bpe, qwen2, gpt-2)",
                    (int)(name.len < 64 ? name.len : 64), name.str);
            goto fail;
        }
        t->ignore_merges = pre->ignore_merges;
        t->add_bos = pre->add_bos;
    } else if (model.len == 5 && memcmp(model.str, "llama", 5) == 0) {
        t->kind = KIND_SPM;
        t->add_bos = true;
        t->add_space_prefix = true;
    } else {
        set_err(err, errlen, "tokenizer.ggml.model '%.*s' is not supported (supported: gpt2, llama)",
                (int)(model.len < 64 ? model.len : 64), model.str);
        goto fail;
    }

    if (!load_vocab(t, g, err, errlen)) goto fail;
    int32_t n = t->n_vocab;
    /* llama.cpp's defaults when the file names no special tokens. */
    if (t->kind == KIND_SPM) {
        t->bos = n > 1 ? 1 : -1;
        t->eos = n > 2 ? 2 : -1;
        t->unk = 0;
    } else {
        t->bos = t->eos = n > 11 ? 11 : -1;
    }
    int32_t eot = -1, eom = -1;
    if (!get_id(g, "tokenizer.ggml.bos_token_id", n, &t->bos, err, errlen) ||
        !get_id(g, "tokenizer.ggml.eos_token_id", n, &t->eos, err, errlen) ||
        !get_id(g, "tokenizer.ggml.eot_token_id", n, &eot, err, errlen) ||
        !get_id(g, "tokenizer.ggml.eom_token_id", n, &eom, err, errlen) ||
        !get_id(g, "tokenizer.ggml.unknown_token_id", n, &t->unk, err, errlen) ||
        !get_flag(g, "tokenizer.ggml.add_bos_token", &t->add_bos, err, errlen) ||
        !get_flag(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix, err, errlen))
        goto fail;

    finish_special(t);
    if (eot >= 0) t->eog[eot] = 1;
    if (eom >= 0) t->eog[eom] = 1;
    if (!build_special_list(t)) {
        set_err(err, errlen, "out of memory");
        goto fail;
    }
    set_rstrip(t, g);

    for (int32_t i = 0; i < n; i++) {
        if (!(t->attr[i] & ATTR_BYTE)) continue;
        uint32_t len;
        const char *s = strtab_str(&t->strs, (uint32_t)i, &len);
        uint8_t b;
        if (!parse_byte_token(s, len, &b)) {
            set_err(err, errlen, "byte token %d is '%.*s', expected the form <0xXX>", i, (int)(len < 40 ? len : 40), s);
            goto fail;
        }
    }

    if (t->kind == KIND_BPE) {
        if (!load_merges(t, g, err, errlen)) goto fail;
        build_byte_tables(t);
        if (!compile_passes(t, pre, err, errlen)) goto fail;
    } else {
        for (int b = 0; b < 256; b++) {
            char hex[8];
            snprintf(hex, sizeof hex, "<0x%02X>", b);
            int32_t id = strtab_find(&t->strs, hex, 6);
            if (id < 0) {
                char c = (char)b;
                id = strtab_find(&t->strs, &c, 1);
            }
            t->byte_tok[b] = id;
        }
    }
    return t;
fail:
    bw_tok_free(t);
    return NULL;
}

void bw_tok_free(bw_tok *t)
{
    if (!t) return;
    for (int i = 0; i < t->n_passes; i++) pcre2_code_free(t->passes[i].re);
    pairmap_free(&t->merges);
    strtab_free(&t->strs);
    free(t->scores);
    free(t->attr);
    free(t->eog);
    free(t->special);
    free(t);
}

int32_t bw_tok_n_vocab(const bw_tok *t) { return t->n_vocab; }
int32_t bw_tok_bos(const bw_tok *t) { return t->bos; }
int32_t bw_tok_eos(const bw_tok *t) { return t->eos; }
int bw_tok_add_bos(const bw_tok *t) { return t->add_bos && t->bos >= 0; }

int bw_tok_is_eog(const bw_tok *t, int32_t id) { return id >= 0 && id < t->n_vocab && t->eog[id]; }

/* ---------------------------------------------------------------- encoding */

/* Scratch memory for one bw_tok_encode call: the tokenizer itself stays read-only, so one bw_tok can
 * serve several threads. */
typedef struct {
    ivec out;
    char *norm, *subj;
    size_t norm_cap, subj_cap;
    size_t *seg, *seg2; /* pre-tokenizer pieces as (start, end) byte pairs */
    size_t seg_cap, seg2_cap;
    struct sym {
        int32_t sid; /* string id, -1 if the text is no known string */
        int32_t prev, next;
        uint32_t start, n;
    } * sym;
    size_t sym_cap;
    struct cand {
        float score;  /* SentencePiece */
        int32_t rank; /* BPE */
        int32_t left, right;
        uint32_t size;
    } * heap;
    size_t heap_n, heap_cap;
    char *word;
    size_t word_cap;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    bool spm;
} enc_state;

static void enc_free(enc_state *e)
{
    free(e->out.v);
    free(e->norm);
    free(e->subj);
    free(e->seg);
    free(e->seg2);
    free(e->sym);
    free(e->heap);
    free(e->word);
    if (e->md) pcre2_match_data_free(e->md);
    if (e->mctx) pcre2_match_context_free(e->mctx);
    if (e->jit) pcre2_jit_stack_free(e->jit);
}

/* Heap order. BPE: lowest rank first; SentencePiece: highest score first; ties: leftmost first. */
static bool cand_before(const enc_state *e, const struct cand *a, const struct cand *b)
{
    if (e->spm) {
        if (a->score != b->score) return a->score > b->score;
    } else if (a->rank != b->rank) {
        return a->rank < b->rank;
    }
    return a->left < b->left;
}

static bool heap_push(enc_state *e, struct cand c)
{
    if (!reserve((void **)&e->heap, &e->heap_cap, e->heap_n + 1, sizeof *e->heap)) return false;
    size_t i = e->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(e, &c, &e->heap[p])) break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = c;
    return true;
}

static struct cand heap_pop(enc_state *e)
{
    struct cand top = e->heap[0];
    struct cand last = e->heap[--e->heap_n];
    size_t i = 0, n = e->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_before(e, &e->heap[c + 1], &e->heap[c])) c++;
        if (!cand_before(e, &e->heap[c], &last)) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n > 0) e->heap[i] = last;
    return top;
}

/* ---- byte-level BPE */

static bool bpe_try_pair(const bw_tok *t, enc_state *e, int32_t l, int32_t r)
{
    if (l < 0 || r < 0) return true;
    const struct sym *a = &e->sym[l], *b = &e->sym[r];
    if (a->sid < 0 || b->sid < 0) return true;
    int32_t res;
    int32_t rank = pairmap_find(&t->merges, a->sid, b->sid, &res);
    if (rank < 0) return true;
    struct cand c = {.rank = rank, .left = l, .right = r, .size = a->n + b->n};
    (void)res;
    return heap_push(e, c);
}

static bool emit_bytes_fallback(const bw_tok *t, enc_state *e, const uint8_t *p, size_t n)
{
    /* llama.cpp looks up each byte of the symbol's byte-encoded text as a one-byte token. */
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < t->byte_enc_len[p[i]]; k++) {
            int32_t id = t->single_tok[(uint8_t)t->byte_enc[p[i]][k]];
            if (id >= 0 && !ivec_push(&e->out, id)) return false;
        }
    }
    return true;
}

static bool bpe_word(const bw_tok *t, enc_state *e, const char *w, size_t n)
{
    if (n == 0) return true;
    if (t->ignore_merges) {
        size_t need = 0;
        for (size_t i = 0; i < n; i++) need += t->byte_enc_len[(uint8_t)w[i]];
        if (!reserve((void **)&e->word, &e->word_cap, need, 1)) return false;
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            memcpy(e->word + o, t->byte_enc[(uint8_t)w[i]], t->byte_enc_len[(uint8_t)w[i]]);
            o += t->byte_enc_len[(uint8_t)w[i]];
        }
        int32_t id = strtab_find(&t->strs, e->word, o);
        if (id >= 0 && id < t->n_vocab) return ivec_push(&e->out, id);
    }
    if (n > INT32_MAX / 4 || !reserve((void **)&e->sym, &e->sym_cap, n, sizeof *e->sym)) return false;
    for (size_t i = 0; i < n; i++) {
        e->sym[i] = (struct sym){.sid = t->byte_sid[(uint8_t)w[i]],
                                 .prev = (int32_t)i - 1,
                                 .next = i + 1 < n ? (int32_t)i + 1 : -1,
                                 .start = (uint32_t)i,
                                 .n = 1};
    }
    e->heap_n = 0;
    for (size_t i = 1; i < n; i++) {
        if (!bpe_try_pair(t, e, (int32_t)i - 1, (int32_t)i)) return false;
    }
    while (e->heap_n > 0) {
        struct cand c = heap_pop(e);
        struct sym *a = &e->sym[c.left], *b = &e->sym[c.right];
        /* A stale candidate: one side has since merged with something else. */
        if (a->n == 0 || b->n == 0 || a->next != c.right || a->n + b->n != c.size) continue;
        int32_t res = -1;
        if (pairmap_find(&t->merges, a->sid, b->sid, &res) < 0) continue;
        a->sid = res;
        a->n += b->n;
        b->n = 0;
        a->next = b->next;
        if (b->next >= 0) e->sym[b->next].prev = c.left;
        if (!bpe_try_pair(t, e, a->prev, c.left) || !bpe_try_pair(t, e, c.left, a->next)) return false;
    }
    for (int32_t i = 0; i >= 0; i = e->sym[i].next) {
        const struct sym *s = &e->sym[i];
        if (s->sid >= 0 && s->sid < t->n_vocab) {
            if (!ivec_push(&e->out, s->sid)) return false;
        } else if (!emit_bytes_fallback(t, e, (const uint8_t *)w + s->start, s->n)) {
            return false;
        }
    }
    return true;
}

static bool push_seg(size_t **seg, size_t *cap, size_t *n, size_t a, size_t b)
{
    if (a >= b) return true;
    if (!reserve((void **)seg, cap, (*n + 1) * 2, sizeof **seg)) return false;
    (*seg)[*n * 2] = a;
    (*seg)[*n * 2 + 1] = b;
    (*n)++;
    return true;
}

/* Applies one regex to every current piece. Matches become pieces; text between matches becomes one
 * piece or one piece per code point (see struct pre_pass). Returns the new piece count or -1. */
static long pre_pass_run(const struct pre_pass *p, enc_state *e, size_t n_seg)
{
    size_t out = 0;
    const char *s = e->subj;
    for (size_t k = 0; k < n_seg; k++) {
        size_t a = e->seg[2 * k], b = e->seg[2 * k + 1];
        size_t pos = a, gap = a;
        while (pos < b) {
            int rc = pcre2_match(p->re, (PCRE2_SPTR)(s + a), b - a, pos - a, PCRE2_NO_UTF_CHECK, e->md, e->mctx);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) return -1;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
            size_t ms = a + ov[0], me = a + ov[1];
            if (me <= ms) { /* no expression here matches empty; guard against looping anyway */
                pos = ms + utf8_len_from_lead((uint8_t)s[ms]);
                continue;
            }
            if (p->gap_per_codepoint) {
                for (size_t q = gap; q < ms;) {
                    size_t l = utf8_len_from_lead((uint8_t)s[q]);
                    if (!push_seg(&e->seg2, &e->seg2_cap, &out, q, q + l)) return -1;
                    q += l;
                }
            } else if (!push_seg(&e->seg2, &e->seg2_cap, &out, gap, ms)) {
                return -1;
            }
            if (!push_seg(&e->seg2, &e->seg2_cap, &out, ms, me)) return -1;
            pos = gap = me;
        }
        if (p->gap_per_codepoint) {
            for (size_t q = gap; q < b;) {
                size_t l = utf8_len_from_lead((uint8_t)s[q]);
                if (!push_seg(&e->seg2, &e->seg2_cap, &out, q, q + l)) return -1;
                q += l;
            }
        } else if (!push_seg(&e->seg2, &e->seg2_cap, &out, gap, b)) {
            return -1;
        }
    }
    size_t *tmp = e->seg;
    e->seg = e->seg2;
    e->seg2 = tmp;
    size_t c = e->seg_cap;
    e->seg_cap = e->seg2_cap;
    e->seg2_cap = c;
    return (long)out;
}

static bool bpe_fragment(const bw_tok *t, enc_state *e, const char *text, size_t len)
{
    if (len == 0) return true;
    if (len > SIZE_MAX / 4) return false;
    if (!reserve((void **)&e->norm, &e->norm_cap, len * 3 + 4, 1) ||
        !reserve((void **)&e->subj, &e->subj_cap, len * 3 + 4, 1))
        return false;
    size_t n = normalize_utf8(text, len, e->norm, e->subj);
    if (!e->md) {
        e->md = pcre2_match_data_create(1, NULL);
        e->mctx = pcre2_match_context_create(NULL);
        e->jit = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, NULL);
        if (!e->md || !e->mctx) return false;
        if (e->jit) pcre2_jit_stack_assign(e->mctx, NULL, e->jit);
    }
    size_t n_seg = 0;
    if (!push_seg(&e->seg, &e->seg_cap, &n_seg, 0, n)) return false;
    for (int i = 0; i < t->n_passes; i++) {
        long r = pre_pass_run(&t->passes[i], e, n_seg);
        if (r < 0) return false;
        n_seg = (size_t)r;
    }
    for (size_t k = 0; k < n_seg; k++) {
        if (!bpe_word(t, e, e->norm + e->seg[2 * k], e->seg[2 * k + 1] - e->seg[2 * k])) return false;
    }
    return true;
}

/* ---- SentencePiece */

static bool spm_try_pair(const bw_tok *t, enc_state *e, const char *text, int32_t l, int32_t r)
{
    if (l < 0 || r < 0) return true;
    const struct sym *a = &e->sym[l], *b = &e->sym[r];
    uint32_t size = a->n + b->n;
    if (size > t->max_token_len) return true;
    int32_t id = strtab_find(&t->strs, text + a->start, size);
    if (id < 0 || id >= t->n_vocab) return true;
    struct cand c = {.score = t->scores[id], .left = l, .right = r, .size = size};
    return heap_push(e, c);
}

static bool spm_fragment(const bw_tok *t, enc_state *e, const char *frag, size_t len, bool prefix_space)
{
    /* Spaces become U+2581 (3 bytes), so the escaped text is at most 3x (+3 for the prefix). */
    if (len > (SIZE_MAX - 8) / 3 || len > INT32_MAX / 4) return false;
    if (!reserve((void **)&e->word, &e->word_cap, len * 3 + 4, 1)) return false;
    char *w = e->word;
    size_t n = 0;
    if (prefix_space) {
        memcpy(w, "\xe2\x96\x81", 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (frag[i] == ' ') {
            memcpy(w + n, "\xe2\x96\x81", 3);
            n += 3;
        } else {
            w[n++] = frag[i];
        }
    }
    if (n == 0) return true;
    /* Symbols are cut by the lead byte alone, without validation, as llama.cpp does. */
    size_t ns = 0;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_len_from_lead((uint8_t)w[i]);
        if (l > n - i) l = n - i;
        if (!reserve((void **)&e->sym, &e->sym_cap, ns + 1, sizeof *e->sym)) return false;
        e->sym[ns] = (struct sym){
            .sid = -1, .prev = (int32_t)ns - 1, .next = (int32_t)ns + 1, .start = (uint32_t)i, .n = (uint32_t)l};
        ns++;
        i += l;
    }
    e->sym[ns - 1].next = -1;
    e->heap_n = 0;
    for (size_t i = 1; i < ns; i++) {
        if (!spm_try_pair(t, e, w, (int32_t)i - 1, (int32_t)i)) return false;
    }
    while (e->heap_n > 0) {
        struct cand c = heap_pop(e);
        struct sym *a = &e->sym[c.left], *b = &e->sym[c.right];
        if (a->n == 0 || b->n == 0 || a->n + b->n != c.size) continue;
        a->n += b->n;
        b->n = 0;
        a->next = b->next;
        if (b->next >= 0) e->sym[b->next].prev = c.left;
        if (!spm_try_pair(t, e, w, a->prev, c.left) || !spm_try_pair(t, e, w, c.left, a->next)) return false;
    }
    for (int32_t i = 0; i >= 0; i = e->sym[i].next) {
        const struct sym *s = &e->sym[i];
        int32_t id = strtab_find(&t->strs, w + s->start, s->n);
        if (id >= 0 && id < t->n_vocab) {
            if (!ivec_push(&e->out, id)) return false;
            continue;
        }
        for (uint32_t j = 0; j < s->n; j++) {
            /* llama.cpp throws when a byte has no token; the unknown token is the graceful choice. */
            int32_t b = t->byte_tok[(uint8_t)w[s->start + j]];
            if (b < 0) b = t->unk;
            if (b >= 0 && !ivec_push(&e->out, b)) return false;
        }
    }
    return true;
}

/* ---- special-token partition */

typedef struct {
    size_t off, len;
    int32_t tok; /* -1 for raw text */
} frag;

static bool partition(const bw_tok *t, const char *text, size_t len, bool parse_special, frag **out, size_t *n_out)
{
    size_t cap = 16, n = 0, cap2 = 16;
    frag *f = malloc(cap * sizeof *f), *g = malloc(cap2 * sizeof *g);
    if (!f || !g) {
        free(f);
        free(g);
        return false;
    }
    if (len > 0) f[n++] = (frag){0, len, -1};
    for (int32_t k = 0; k < t->n_special && n > 0; k++) {
        int32_t id = t->special[k];
        if (!parse_special && (t->attr[id] & (ATTR_CONTROL | ATTR_UNKNOWN))) continue;
        uint32_t sl;
        const char *s = strtab_str(&t->strs, (uint32_t)id, &sl);
        size_t m = 0;
        bool any = false;
        for (size_t i = 0; i < n; i++) {
            size_t off = f[i].off, end = f[i].off + f[i].len;
            if (f[i].tok >= 0 || f[i].len < sl) {
                if (!reserve((void **)&g, &cap2, m + 1, sizeof *g)) goto oom;
                g[m++] = f[i];
                continue;
            }
            for (;;) {
                const char *hit = memmem(text + off, end - off, s, sl);
                if (!reserve((void **)&g, &cap2, m + 2, sizeof *g)) goto oom;
                if (!hit) {
                    if (end > off) g[m++] = (frag){off, end - off, -1};
                    break;
                }
                any = true;
                size_t h = (size_t)(hit - text);
                if (h > off) g[m++] = (frag){off, h - off, -1};
                g[m++] = (frag){h, sl, id};
                off = h + sl;
                if (t->attr[id] & ATTR_RSTRIP)
                    while (off < end && strchr(" \t\n\v\f\r", text[off]) && text[off]) off++;
            }
        }
        if (any) {
            frag *tmp = f;
            f = g;
            g = tmp;
            size_t c = cap;
            cap = cap2;
            cap2 = c;
            n = m;
        }
    }
    free(g);
    *out = f;
    *n_out = n;
    return true;
oom:
    free(f);
    free(g);
    return false;
}

int32_t bw_tok_encode(const bw_tok *t, const char *text, size_t len, int add_bos, int parse_special, int32_t *out,
                      int32_t cap)
{
    if (!t || (!text && len > 0) || len > (1u << 30)) return INT32_MIN;
    enc_state e = {0};
    e.spm = t->kind == KIND_SPM;
    frag *f = NULL;
    size_t nf = 0;
    int32_t ret = INT32_MIN;
    if (!partition(t, text, len, parse_special != 0, &f, &nf)) goto done;
    if (add_bos && t->bos >= 0 && !ivec_push(&e.out, t->bos)) goto done;
    /* SentencePiece puts a space before text at the start and after every special token. */
    bool prev_special = true;
    for (size_t i = 0; i < nf; i++) {
        if (f[i].tok >= 0) {
            if (!ivec_push(&e.out, f[i].tok)) goto done;
            prev_special = true;
            continue;
        }
        bool ok = t->kind == KIND_BPE
                      ? bpe_fragment(t, &e, text + f[i].off, f[i].len)
                      : spm_fragment(t, &e, text + f[i].off, f[i].len, t->add_space_prefix && prev_special);
        if (!ok) goto done;
        prev_special = false;
    }
    if (e.out.n > INT32_MAX) goto done;
    if ((int32_t)e.out.n > cap) {
        ret = -(int32_t)e.out.n;
        goto done;
    }
    if (e.out.n) memcpy(out, e.out.v, e.out.n * sizeof *out);
    ret = (int32_t)e.out.n;
done:
    free(f);
    enc_free(&e);
    return ret;
}

/* ---------------------------------------------------------------- decoding */

static int32_t put_piece(const char *s, size_t n, char *out, int32_t cap)
{
    if (n > INT32_MAX) return INT32_MIN;
    if ((int32_t)n > cap) return -(int32_t)n;
    if (n) memcpy(out, s, n);
    return (int32_t)n;
}

int32_t bw_tok_piece(const bw_tok *t, int32_t id, int render_special, char *out, int32_t cap)
{
    if (!t || id < 0 || id >= t->n_vocab) return 0;
    uint8_t attr = t->attr[id];
    if (!render_special && (attr & (ATTR_UNKNOWN | ATTR_CONTROL))) return 0;
    uint32_t len;
    const char *s = strtab_str(&t->strs, (uint32_t)id, &len);
    if (attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED)) return put_piece(s, len, out, cap);
    if (attr & ATTR_BYTE) {
        uint8_t b = 0;
        parse_byte_token(s, len, &b);
        return put_piece((const char *)&b, 1, out, cap);
    }
    if (!(attr & ATTR_NORMAL)) return 0;
    /* Count first, write second, so a short buffer gets the exact size needed. */
    int32_t need = 0;
    for (int pass = 0; pass < 2; pass++) {
        int32_t o = 0;
        for (uint32_t i = 0; i < len;) {
            uint32_t cp;
            size_t k = lax_decode((const uint8_t *)s + i, len - i, &cp);
            if (t->kind == KIND_SPM) {
                if (cp == 0x2581) {
                    if (pass) out[o] = ' ';
                    o++;
                } else {
                    if (pass) memcpy(out + o, s + i, k);
                    o += (int32_t)k;
                }
            } else if (cp < 324 && t->cp_to_byte[cp] >= 0) {
                if (pass) out[o] = (char)t->cp_to_byte[cp];
                o++;
            } else {
                /* Not a byte-level character; keep its text rather than inventing bytes. */
                if (pass) memcpy(out + o, s + i, k);
                o += (int32_t)k;
            }
            i += (uint32_t)k;
        }
        if (!pass) {
            need = o;
            if (need > cap) return -need;
        }
    }
    return need;
}
