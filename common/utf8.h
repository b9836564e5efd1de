/* Strict UTF-8 (RFC 3629), defined once for both processes: the front checks and escapes client text by
 * it (frontend/buf.c, request.c), and the engine's detokenizer releases text only in whole sequences by
 * it (engine/detok.c), so a token's text is never a partial or invalid sequence.
 *
 * Owns: which bytes form a sequence (no overlong forms, no surrogates, nothing past U+10FFFF) and the
 * encoding of a code point. The tokenizer's llama.cpp-compatible decoding of arbitrary input is lax on
 * purpose and stays in engine/tokenizer.c. */
#ifndef BW_COMMON_UTF8_H
#define BW_COMMON_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BW_UTF8_REPLACEMENT "\xef\xbf\xbd" /* U+FFFD, 3 bytes */

/* Bytes in all (1..4) of a sequence that starts with lead; 0 when lead cannot start one. */
int bw_utf8_len(uint8_t lead);

/* Whether c may be byte i (1..3) of a sequence that starts with lead: a continuation byte, and for the
 * second byte in the range the lead allows. */
bool bw_utf8_cont_ok(uint8_t lead, int i, uint8_t c);

/* Length of the valid sequence at s (n > 0 bytes available), or 0 when the bytes there are not one (a
 * truncated sequence included). */
size_t bw_utf8_seq(const char *s, size_t n);

/* Characters (code points) in valid UTF-8: the bytes that are not continuation bytes. */
size_t bw_utf8_chars(const char *s, size_t n);

/* Writes code point cp (at most U+10FFFF) at out as 1..4 bytes; returns how many. */
size_t bw_utf8_put(uint32_t cp, char *out);

#endif
