/* A growable byte buffer for building response bodies and SSE events, with the JSON string escaping the
 * hot path (one SSE event per token) needs without a JSON library round trip.
 *
 * Owns: its memory. On allocation failure the buffer remembers it (bw_buf.failed) and later appends are
 * no-ops, so callers check once at the end instead of after every append. */
#ifndef BW_FRONT_BUF_H
#define BW_FRONT_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} bw_buf;

void bw_buf_init(bw_buf *b);
void bw_buf_free(bw_buf *b);
void bw_buf_reset(bw_buf *b); /* keeps the memory */
void bw_buf_add(bw_buf *b, const void *data, size_t n);
void bw_buf_adds(bw_buf *b, const char *s);
void bw_buf_addf(bw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as the inside of a JSON string: quotes, backslashes and control characters escaped, and
 * every byte sequence that is not valid UTF-8 replaced by U+FFFD, so the output is always valid JSON. */
void bw_buf_add_json_str(bw_buf *b, const char *s, size_t n);
/* Takes the contents (NUL-terminated) and leaves the buffer empty; NULL if an allocation failed. */
char *bw_buf_take(bw_buf *b, size_t *len);

#endif
