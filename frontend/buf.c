/* Growable buffer and JSON string escaping; see buf.h. */
#include "frontend/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"

void bw_buf_init(bw_buf *b) { memset(b, 0, sizeof(*b)); }

void bw_buf_free(bw_buf *b)
{
    free(b->p);
    bw_buf_init(b);
}

void bw_buf_reset(bw_buf *b)
{
    b->len = 0;
    b->failed = 0;
}

static int reserve(bw_buf *b, size_t extra)
{
    if (b->failed) return -1;
    if (extra < b->cap - b->len) return 0; /* keeps one byte for the terminator */
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= extra) {
        if (cap > SIZE_MAX / 2) {
            b->failed = 1;
            return -1;
        }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

void bw_buf_add(bw_buf *b, const void *data, size_t n)
{
    if (reserve(b, n)) return;
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void bw_buf_adds(bw_buf *b, const char *s) { bw_buf_add(b, s, strlen(s)); }

void bw_buf_addf(bw_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void bw_buf_add_json_str(bw_buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0; /* run: start of bytes that need no escaping */
    while (i < n) {
        unsigned char c = u[i];
        const char *esc = NULL;
        char tmp[8];
        size_t adv = 1;
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c < 0x20 || c == 0x7f) {
            snprintf(tmp, sizeof(tmp), "\\u%04x", c);
            esc = tmp;
        } else if (c >= 0x80) {
            adv = bw_utf8_seq(s + i, n - i);
            if (adv == 0) {
                esc = BW_UTF8_REPLACEMENT;
                adv = 1;
            }
        }
        if (esc) {
            bw_buf_add(b, s + run, i - run);
            bw_buf_adds(b, esc);
            run = i + adv;
        }
        i += adv;
    }
    bw_buf_add(b, s + run, n - run);
}

char *bw_buf_take(bw_buf *b, size_t *len)
{
    if (b->failed) {
        bw_buf_free(b);
        return NULL;
    }
    if (!b->p) bw_buf_add(b, "", 0);
    char *p = b->p;
    if (len) *len = b->len;
    bw_buf_init(b);
    return p;
}
