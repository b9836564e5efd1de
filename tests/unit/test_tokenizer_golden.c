/* Token ids must equal llama.cpp's: compares engine/tokenizer.c against tests/golden/tokens_<name>.json
 * (written by tests/tools/make_golden_tokens.py from llama-cpp-python).
 *
 *   test_tokenizer_golden [GOLDEN.json GGUF ...]
 *
 * With no arguments it checks every tests/golden/tokens_*.json against the GGUF the file names
 * (relative to the source tree, found from BW_SOURCE_ROOT or by walking up from the working
 * directory). A vocabulary whose GGUF is absent is skipped with a message; exit 77 (skip) when
 * nothing could be checked. Also checks BOS/EOS/EOG, token pieces, decode(encode(s)) == s for
 * byte-level vocabularies, and that a 32 KiB prompt encodes in milliseconds. */
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/detok.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"

#include "check.h"

static char *hex_decode(const char *hex, size_t *len)
{
    size_t n = strlen(hex) / 2;
    char *out = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (char)v;
    }
    out[n] = 0;
    *len = n;
    return out;
}

static char *case_text(json_t *c, size_t *len)
{
    json_t *t = json_object_get(c, "text");
    if (t) {
        *len = json_string_length(t);
        char *s = malloc(*len + 1);
        memcpy(s, json_string_value(t), *len + 1);
        return s;
    }
    return hex_decode(json_string_value(json_object_get(c, "hex")), len);
}

static void show(const char *label, const int32_t *ids, int n)
{
    fprintf(stderr, "    %s:", label);
    for (int i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    if (n > 40) fprintf(stderr, " ... (%d)", n);
    fputc('\n', stderr);
}

static void show_text(const char *s, size_t n)
{
    fprintf(stderr, "    text: \"");
    for (size_t i = 0; i < n && i < 120; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fprintf(stderr, "\\n");
        else if (c < 0x20 || c == 0x7f) fprintf(stderr, "\\x%02x", c);
        else fputc(c, stderr);
    }
    fprintf(stderr, "%s\"\n", n > 120 ? "..." : "");
}

/* Encodes and compares with the expected array; returns 1 when identical. */
static int compare_ids(const bw_tok *tok, const char *s, size_t n, int parse_special, json_t *want, const char *what,
                       int verbose)
{
    size_t nw = json_array_size(want);
    int32_t cap = (int32_t)(n + 16);
    int32_t *ids = malloc(sizeof *ids * (size_t)cap);
    int32_t got = bw_tok_encode(tok, s, n, bw_tok_add_bos(tok), parse_special, ids, cap);
    int ok = got >= 0 && (size_t)got == nw;
    for (size_t i = 0; ok && i < nw; i++) ok = ids[i] == (int32_t)json_integer_value(json_array_get(want, i));
    if (!ok && verbose) {
        fprintf(stderr, "  mismatch (%s):\n", what);
        show_text(s, n);
        int32_t *w = malloc(sizeof *w * (nw + 1));
        for (size_t i = 0; i < nw; i++) w[i] = (int32_t)json_integer_value(json_array_get(want, i));
        show("want", w, (int)nw);
        show("got ", ids, got);
        free(w);
    }
    free(ids);
    return ok;
}

static int has_control(const bw_tok *tok, const int32_t *ids, int n)
{
    char buf[8];
    for (int i = 0; i < n; i++) {
        /* Control tokens print nothing unless rendered. */
        if (bw_tok_piece(tok, ids[i], 0, buf, sizeof buf) == 0 && bw_tok_piece(tok, ids[i], 1, buf, sizeof buf) != 0)
            return 1;
    }
    return 0;
}

/* decode(encode(s)) == s, through the streaming detokenizer. */
static int roundtrip(const bw_tok *tok, const char *s, size_t n)
{
    int32_t cap = (int32_t)(n + 16);
    int32_t *ids = malloc(sizeof *ids * (size_t)cap);
    int32_t got = bw_tok_encode(tok, s, n, 0, 0, ids, cap);
    int ok = got >= 0;
    if (ok && has_control(tok, ids, got)) {
        free(ids);
        return -1; /* not applicable */
    }
    size_t cap_out = n * 3 + 64, o = 0;
    char *out = malloc(cap_out);
    bw_detok d;
    bw_detok_init(&d);
    for (int32_t i = 0; ok && i < got; i++) {
        int k = bw_detok_push(&d, tok, ids[i], out + o, cap_out - o);
        ok = k >= 0;
        o += ok ? (size_t)k : 0;
    }
    if (ok) {
        int k = bw_detok_flush(&d, out + o, cap_out - o);
        ok = k >= 0;
        o += ok ? (size_t)k : 0;
    }
    ok = ok && o == n && memcmp(out, s, n) == 0;
    free(out);
    free(ids);
    return ok;
}

static int valid_utf8_no_nul(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80                   ? 1
                   : (c >= 0xC2 && c <= 0xDF) ? 2
                   : (c >= 0xE0 && c <= 0xEF) ? 3
                   : (c >= 0xF0 && c <= 0xF4) ? 4
                                              : 0;
        if (c == 0 || k == 0 || i + k > n) return 0;
        for (size_t j = 1; j < k; j++)
            if (((unsigned char)s[i + j] & 0xC0) != 0x80) return 0;
        if (k == 3 && ((c == 0xE0 && (unsigned char)s[i + 1] < 0xA0) || (c == 0xED && (unsigned char)s[i + 1] > 0x9F)))
            return 0;
        if (k == 4 && ((c == 0xF0 && (unsigned char)s[i + 1] < 0x90) || (c == 0xF4 && (unsigned char)s[i + 1] > 0x8F)))
            return 0;
        i += k;
    }
    return 1;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* A 32 KiB prompt of mixed prose, code, digits, whitespace runs and multi-byte text. */
static void speed_check(const bw_tok *tok, const char *name)
{
    static const char *parts[] = {"The quick brown fox, it's said, jumps over 1234567 lazy dogs.\n",
                                  "    for (int i = 0; i < n; i++) { sum += a[i] * b[i]; }\n",
                                  "Fédération Ωmega 中文文本 العربية 😀👍🏽  \t\t  \r\n",
                                  "<|im_start|>user\nhello<|im_end|>\n", "                                \n"};
    size_t n = 32 * 1024;
    char *s = malloc(n);
    size_t o = 0;
    for (int k = 0; o < n; k++) {
        const char *p = parts[k % 5];
        size_t l = strlen(p);
        if (o + l > n) l = n - o;
        memcpy(s + o, p, l);
        o += l;
    }
    int32_t *ids = malloc(sizeof *ids * (n + 16));
    double best = 1e9;
    int32_t got = 0;
    for (int r = 0; r < 3; r++) {
        double t0 = now_ms();
        got = bw_tok_encode(tok, s, n, 1, 1, ids, (int32_t)(n + 16));
        double dt = now_ms() - t0;
        if (dt < best) best = dt;
    }
    /* Worst case: one 32 KiB run of a single letter is one pre-tokenizer word. */
    memset(s, 'a', n);
    double t0 = now_ms();
    int32_t got2 = bw_tok_encode(tok, s, n, 1, 1, ids, (int32_t)(n + 16));
    double dt2 = now_ms() - t0;
    memset(s, ' ', n);
    t0 = now_ms();
    int32_t got3 = bw_tok_encode(tok, s, n, 1, 1, ids, (int32_t)(n + 16));
    double dt3 = now_ms() - t0;
    printf("tokenizer %s: 32 KiB prompt -> %d tokens in %.1f ms; 32 KiB of 'a' in %.1f ms; 32 KiB of spaces in "
           "%.1f ms\n",
           name, got, best, dt2, dt3);
    CHECK(got > 0 && got2 > 0 && got3 > 0, "%s: encoding the 32 KiB prompts failed", name);
    /* Generous so sanitizer builds pass; a quadratic path takes seconds. */
    CHECK(best < 1000 && dt2 < 1000 && dt3 < 1000, "%s: 32 KiB took too long", name);
    free(ids);
    free(s);
}

static int check_vocab(const char *golden, const char *gguf_path)
{
    json_error_t jerr;
    json_t *doc = json_load_file(golden, 0, &jerr);
    if (!doc) {
        fprintf(stderr, "FAIL: cannot read %s: %s (line %d)\n", golden, jerr.text, jerr.line);
        check_failed++;
        return 0;
    }
    const char *name = json_string_value(json_object_get(doc, "name"));
    char err[256];
    bw_gguf *g = bw_gguf_open(gguf_path, err, sizeof err);
    if (!g) {
        printf("tokenizer %s: SKIP (%s); scripts/fetch-model.sh fetches the default model, "
               "tests/tools/fetch_vocab_files.sh the vocab-only files\n",
               name, err);
        json_decref(doc);
        return 0;
    }
    bw_tok *tok = bw_tok_load(g, err, sizeof err);
    CHECK(tok, "%s: bw_tok_load: %s", name, err);
    if (!tok) {
        bw_gguf_close(g);
        json_decref(doc);
        return 1;
    }

    CHECK(bw_tok_n_vocab(tok) == json_integer_value(json_object_get(doc, "n_vocab")), "%s: n_vocab", name);
    CHECK(bw_tok_bos(tok) == json_integer_value(json_object_get(doc, "bos")), "%s: bos %d", name, bw_tok_bos(tok));
    CHECK(bw_tok_eos(tok) == json_integer_value(json_object_get(doc, "eos")), "%s: eos %d", name, bw_tok_eos(tok));
    CHECK(!!bw_tok_add_bos(tok) == json_is_true(json_object_get(doc, "add_bos")), "%s: add_bos", name);
    json_t *eog = json_object_get(doc, "eog");
    int n_eog = 0;
    for (int32_t i = 0; i < bw_tok_n_vocab(tok); i++) n_eog += bw_tok_is_eog(tok, i);
    CHECK(n_eog == (int)json_array_size(eog), "%s: %d end-of-generation tokens, want %zu", name, n_eog,
          json_array_size(eog));
    for (size_t i = 0; i < json_array_size(eog); i++) {
        int32_t id = (int32_t)json_integer_value(json_array_get(eog, i));
        CHECK(bw_tok_is_eog(tok, id), "%s: token %d should end generation", name, id);
    }

    json_t *cases = json_object_get(doc, "cases");
    size_t n = json_array_size(cases), same = 0, shown = 0, rt_n = 0, rt_ok = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(cases, i);
        size_t len;
        char *s = case_text(c, &len);
        int a = compare_ids(tok, s, len, 1, json_object_get(c, "special"), "parse_special", shown < 8);
        int b = compare_ids(tok, s, len, 0, json_object_get(c, "plain"), "plain", shown < 8);
        same += a && b;
        shown += !(a && b);
        if (valid_utf8_no_nul(s, len)) {
            int r = roundtrip(tok, s, len);
            if (r >= 0) {
                rt_n++;
                rt_ok += r;
            }
        }
        free(s);
    }
    printf("tokenizer %s: %zu/%zu strings identical\n", name, same, n);
    CHECK(same == n, "%s: %zu strings differ from llama.cpp", name, n - same);

    int byte_level = 0;
    json_t *pieces = json_object_get(doc, "pieces");
    size_t pn = json_array_size(pieces), pok = 0;
    for (size_t i = 0; i < pn; i++) {
        json_t *p = json_array_get(pieces, i);
        int32_t id = (int32_t)json_integer_value(json_object_get(p, "id"));
        int ok = 1;
        for (int special = 0; special < 2; special++) {
            size_t wl;
            char *want = hex_decode(json_string_value(json_object_get(p, special ? "special" : "plain")), &wl);
            char buf[512];
            int32_t got = bw_tok_piece(tok, id, special, buf, sizeof buf);
            if (got < 0 || (size_t)got != wl || memcmp(buf, want, wl) != 0) {
                if (ok && pn - pok < 5) fprintf(stderr, "  piece mismatch: id %d special %d\n", id, special);
                ok = 0;
            }
            free(want);
        }
        pok += ok;
    }
    printf("tokenizer %s: %zu/%zu pieces identical\n", name, pok, pn);
    CHECK(pok == pn, "%s: %zu pieces differ", name, pn - pok);

    /* Byte-level vocabularies reproduce any text; SentencePiece adds a leading space. */
    bw_gguf_str model;
    if (bw_gguf_get_str(g, "tokenizer.ggml.model", &model) == 0 && model.len == 4 && !memcmp(model.str, "gpt2", 4))
        byte_level = 1;
    if (byte_level) {
        printf("tokenizer %s: decode(encode(s)) == s for %zu/%zu valid UTF-8 strings without special tokens\n", name,
               rt_ok, rt_n);
        CHECK(rt_ok == rt_n, "%s: %zu round trips differ", name, rt_n - rt_ok);
    }

    speed_check(tok, name);
    bw_tok_free(tok);
    bw_gguf_close(g);
    json_decref(doc);
    return 1;
}

static int find_root(char *root, size_t cap)
{
    const char *env = getenv("BW_SOURCE_ROOT");
    if (env) {
        snprintf(root, cap, "%s", env);
        return 1;
    }
    char dir[4096];
    if (!getcwd(dir, sizeof dir)) return 0;
    for (;;) {
        char probe[4200];
        snprintf(probe, sizeof probe, "%s/tests/golden", dir);
        if (access(probe, F_OK) == 0) {
            snprintf(root, cap, "%s", dir);
            return 1;
        }
        char *slash = strrchr(dir, '/');
        if (!slash || slash == dir) return 0;
        *slash = 0;
    }
}

int main(int argc, char **argv)
{
    int checked = 0;
    if (argc > 1) {
        for (int i = 1; i + 1 < argc; i += 2) checked += check_vocab(argv[i], argv[i + 1]);
    } else {
        char root[4096];
        if (!find_root(root, sizeof root)) {
            printf("SKIP: cannot find the source tree (set BW_SOURCE_ROOT)\n");
            return 77;
        }
        char gdir[4200];
        snprintf(gdir, sizeof gdir, "%s/tests/golden", root);
        DIR *d = opendir(gdir);
        struct dirent *de;
        char *names[64];
        int nn = 0;
        while (d && (de = readdir(d)) && nn < 64) {
            size_t l = strlen(de->d_name);
            if (strncmp(de->d_name, "tokens_", 7) == 0 && l > 5 && strcmp(de->d_name + l - 5, ".json") == 0)
                names[nn++] = strdup(de->d_name);
        }
        if (d) closedir(d);
        for (int i = 0; i < nn; i++) {
            char golden[8400], gguf[8400];
            snprintf(golden, sizeof golden, "%s/%s", gdir, names[i]);
            json_t *doc = json_load_file(golden, 0, NULL);
            const char *rel = doc ? json_string_value(json_object_get(doc, "gguf")) : NULL;
            snprintf(gguf, sizeof gguf, "%s/%s", root, rel ? rel : "?");
            if (doc) json_decref(doc);
            checked += check_vocab(golden, gguf);
            free(names[i]);
        }
    }
    if (check_failed) {
        fprintf(stderr, "%d check(s) failed\n", check_failed);
        return 1;
    }
    return checked ? 0 : 77;
}
