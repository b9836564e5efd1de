/* Strict UTF-8; see utf8.h. */
#include "common/utf8.h"

int bw_utf8_len(uint8_t lead)
{
    if (lead < 0x80) return 1;
    if (lead >= 0xC2 && lead <= 0xDF) return 2; /* C0, C1 would only start overlong forms */
    if (lead >= 0xE0 && lead <= 0xEF) return 3;
    if (lead >= 0xF0 && lead <= 0xF4) return 4; /* F5.. would start code points past U+10FFFF */
    return 0;
}

bool bw_utf8_cont_ok(uint8_t lead, int i, uint8_t c)
{
    if ((c & 0xC0) != 0x80) return false;
    if (i != 1) return true;
    /* the second byte's range is where overlong forms, surrogates and values past U+10FFFF show */
    if (lead == 0xE0) return c >= 0xA0;
    if (lead == 0xED) return c <= 0x9F;
    if (lead == 0xF0) return c >= 0x90;
    if (lead == 0xF4) return c <= 0x8F;
    return true;
}

size_t bw_utf8_seq(const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;
    const int len = bw_utf8_len(u[0]);
    if (len == 0 || (size_t)len > n) return 0;
    for (int i = 1; i < len; i++)
        if (!bw_utf8_cont_ok(u[0], i, u[i])) return 0;
    return (size_t)len;
}

size_t bw_utf8_chars(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((uint8_t)s[i] & 0xC0) != 0x80;
    return c;
}

size_t bw_utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}
