/* The streaming detokenizer never emits part of a UTF-8 sequence: bytes of a character split over
 * several byte-level tokens are held until the character is complete, and bytes that can never
 * complete become U+FFFD. Uses the default model's vocabulary (argv[1]); exit 77 when it is absent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/detok.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"

#include "check.h"

static int32_t byte_tok[256];

/* Pushes one token and checks the text it releases. */
static void push_expect(bw_detok *d, const bw_tok *t, int32_t id, const char *want, size_t want_len, const char *what)
{
    char out[64];
    int n = bw_detok_push(d, t, id, out, sizeof out);
    CHECK(n >= 0 && (size_t)n == want_len && memcmp(out, want, want_len) == 0 && out[n] == '\0',
          "%s: token %d released %d bytes, want %zu", what, id, n, want_len);
}

static void flush_expect(bw_detok *d, const char *want, size_t want_len, const char *what)
{
    char out[16];
    int n = bw_detok_flush(d, out, sizeof out);
    CHECK(n >= 0 && (size_t)n == want_len && memcmp(out, want, want_len) == 0, "%s: flush gave %d bytes", what, n);
    CHECK(d->n_pending == 0, "%s: flush leaves nothing pending", what);
}

#define FFFD "\xef\xbf\xbd"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_detok MODEL.gguf\n");
        return 2;
    }
    char err[256];
    bw_gguf *g = bw_gguf_open(argv[1], err, sizeof err);
    if (!g) {
        printf("SKIP: %s (scripts/fetch-model.sh fetches it)\n", err);
        return 77;
    }
    bw_tok *t = bw_tok_load(g, err, sizeof err);
    if (!t) {
        fprintf(stderr, "FAIL: %s\n", err);
        return 1;
    }
    for (int b = 0; b < 256; b++) byte_tok[b] = -1;
    for (int32_t id = 0; id < bw_tok_n_vocab(t); id++) {
        char p[8];
        if (bw_tok_piece(t, id, 0, p, sizeof p) == 1 && byte_tok[(unsigned char)p[0]] < 0)
            byte_tok[(unsigned char)p[0]] = id;
    }
    /* SmolLM2's vocabulary leaves out bytes that never occur in UTF-8 (C0, C1, F5..FF): the cases
     * below use bytes it has. */
    static const unsigned char used[] = {0xF0, 0x9F, 0x98, 0x80, 0xE2, 0x82, 0xAC, 'a', 'x', 0xE0, 0xED, 0xA0};
    for (size_t i = 0; i < sizeof used; i++) {
        CHECK(byte_tok[used[i]] >= 0, "no byte-level token for byte 0x%02x", used[i]);
        if (byte_tok[used[i]] < 0) return 1;
    }

    bw_detok d;
    /* U+1F600 is F0 9F 98 80: nothing comes out until the fourth byte. */
    bw_detok_init(&d);
    push_expect(&d, t, byte_tok[0xF0], "", 0, "emoji byte 1");
    push_expect(&d, t, byte_tok[0x9F], "", 0, "emoji byte 2");
    push_expect(&d, t, byte_tok[0x98], "", 0, "emoji byte 3");
    push_expect(&d, t, byte_tok[0x80], "\xf0\x9f\x98\x80", 4, "emoji byte 4");
    flush_expect(&d, "", 0, "complete emoji");

    /* Text before a split character comes out at once; the split part waits. */
    bw_detok_init(&d);
    push_expect(&d, t, byte_tok['a'], "a", 1, "ascii");
    push_expect(&d, t, byte_tok[0xE2], "", 0, "euro byte 1");
    push_expect(&d, t, byte_tok[0x82], "", 0, "euro byte 2");
    push_expect(&d, t, byte_tok[0xAC], "\xe2\x82\xac", 3, "euro byte 3");

    /* A sequence cut short by a non-continuation byte: one U+FFFD, then the byte itself. */
    bw_detok_init(&d);
    push_expect(&d, t, byte_tok[0xF0], "", 0, "cut lead");
    push_expect(&d, t, byte_tok[0x9F], "", 0, "cut second");
    push_expect(&d, t, byte_tok['x'], FFFD "x", 4, "cut by ascii");

    /* Bytes that can never start or continue a character. */
    bw_detok_init(&d);
    push_expect(&d, t, byte_tok[0x80], FFFD, 3, "lone continuation");
    push_expect(&d, t, byte_tok[0xE0], "", 0, "E0 lead");
    push_expect(&d, t, byte_tok[0x80], FFFD FFFD, 6, "E0 80 is overlong");
    push_expect(&d, t, byte_tok[0xED], "", 0, "ED lead");
    push_expect(&d, t, byte_tok[0xA0], FFFD FFFD, 6, "ED A0 is a surrogate");

    /* Flush turns held bytes into U+FFFD. */
    bw_detok_init(&d);
    push_expect(&d, t, byte_tok[0xE2], "", 0, "held");
    push_expect(&d, t, byte_tok[0x82], "", 0, "held 2");
    flush_expect(&d, FFFD, 3, "flush incomplete");

    /* A buffer too small fails without losing state; a retry succeeds. */
    bw_detok_init(&d);
    push_expect(&d, t, byte_tok[0xF0], "", 0, "small-buffer lead");
    push_expect(&d, t, byte_tok[0x9F], "", 0, "small-buffer 2");
    push_expect(&d, t, byte_tok[0x98], "", 0, "small-buffer 3");
    char tiny[3];
    CHECK(bw_detok_push(&d, t, byte_tok[0x80], tiny, sizeof tiny) == -1, "4 bytes + NUL do not fit in 3");
    CHECK(d.n_pending == 3, "the failed push keeps the held bytes");
    push_expect(&d, t, byte_tok[0x80], "\xf0\x9f\x98\x80", 4, "retry");

    /* Control tokens print nothing; the text around them is unaffected. */
    bw_detok_init(&d);
    if (bw_tok_eos(t) >= 0) push_expect(&d, t, bw_tok_eos(t), "", 0, "EOS prints nothing");

    /* Whole-text check: a ZWJ emoji sequence through the real encoder, token by token. */
    const char *text = "family: \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7 ok";
    int32_t ids[64];
    int32_t n = bw_tok_encode(t, text, strlen(text), 0, 0, ids, 64);
    CHECK(n > 0, "encode");
    char out[256];
    size_t o = 0;
    bw_detok_init(&d);
    for (int32_t i = 0; i < n; i++) {
        int k = bw_detok_push(&d, t, ids[i], out + o, sizeof out - o);
        CHECK(k >= 0, "push %d", i);
        /* Every released chunk ends on a character boundary. */
        for (int j = 0; k > 0 && j < 4 && j < k; j++) {
            unsigned char c = (unsigned char)out[o + k - 1 - j];
            if ((c & 0xC0) != 0x80) {
                int need = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
                CHECK(need == j + 1, "chunk after token %d ends inside a character", i);
                break;
            }
        }
        o += k > 0 ? (size_t)k : 0;
    }
    o += (size_t)bw_detok_flush(&d, out + o, sizeof out - o);
    CHECK(o == strlen(text) && memcmp(out, text, o) == 0, "ZWJ sequence round trip");

    printf("detok: %s\n",
           check_failed ? "FAILED" : "UTF-8 holdback, U+FFFD on invalid bytes, flush and retry all hold");
    bw_tok_free(t);
    bw_gguf_close(g);
    return check_failed ? 1 : 0;
}
