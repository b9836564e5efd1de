/* Streaming detokenizer; see detok.h. */
#include "engine/detok.h"

#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"

void bw_detok_init(bw_detok *d) { memset(d, 0, sizeof *d); }

typedef struct {
    char *out;
    size_t cap, n;
    bool overflow;
} sink;

static void sink_put(sink *k, const char *s, size_t n)
{
    if (k->n + n + 1 > k->cap) {
        k->overflow = true;
        return;
    }
    memcpy(k->out + k->n, s, n);
    k->n += n;
}

static void detok_feed(bw_detok *d, sink *k, const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = (uint8_t)s[i];
        if (d->n_pending == 0) {
            int need = bw_utf8_len(c);
            if (need == 1) sink_put(k, (const char *)&c, 1);
            else if (need == 0) sink_put(k, BW_UTF8_REPLACEMENT, 3);
            else d->pending[d->n_pending++] = (char)c;
            i++;
            continue;
        }
        if (!bw_utf8_cont_ok((uint8_t)d->pending[0], d->n_pending, c)) {
            /* The held bytes can never complete: one U+FFFD for them, then look at c afresh. */
            sink_put(k, BW_UTF8_REPLACEMENT, 3);
            d->n_pending = 0;
            continue;
        }
        d->pending[d->n_pending++] = (char)c;
        i++;
        if (d->n_pending == bw_utf8_len((uint8_t)d->pending[0])) {
            sink_put(k, d->pending, (size_t)d->n_pending);
            d->n_pending = 0;
        }
    }
}

int bw_detok_push(bw_detok *d, const bw_tok *t, int32_t id, char *out, size_t cap)
{
    char small[256];
    char *piece = small;
    int32_t n = bw_tok_piece(t, id, 0, small, (int32_t)sizeof small);
    if (n < 0) {
        if (n == INT32_MIN) return -1;
        piece = malloc((size_t)-n);
        if (!piece) return -1;
        n = bw_tok_piece(t, id, 0, piece, -n);
    }
    bw_detok next = *d;
    sink k = {out, cap, 0, false};
    detok_feed(&next, &k, piece, n > 0 ? (size_t)n : 0);
    if (piece != small) free(piece);
    if (k.overflow || cap == 0) return -1;
    out[k.n] = '\0';
    *d = next;
    return (int)k.n;
}

int bw_detok_flush(bw_detok *d, char *out, size_t cap)
{
    sink k = {out, cap, 0, false};
    if (d->n_pending > 0) sink_put(&k, BW_UTF8_REPLACEMENT, 3);
    if (k.overflow || cap == 0) return -1;
    out[k.n] = '\0';
    d->n_pending = 0;
    return (int)k.n;
}
