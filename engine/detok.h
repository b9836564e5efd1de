/* Streaming detokenizer: token ids in, UTF-8 text out that never ends inside a multi-byte sequence
 * (SPEC §2: a TOKEN's text is never a partial UTF-8 sequence).
 *
 * Owns: the bytes of an unfinished sequence between tokens and the repair of invalid ones (U+FFFD), by
 * the strict rules of common/utf8.h. Token pieces come from the tokenizer (bw_tok_piece); stop strings
 * and what is released to a client are engine/generate's. */
#ifndef BW_ENGINE_DETOK_H
#define BW_ENGINE_DETOK_H

#include <stddef.h>
#include <stdint.h>

#include "engine/tokenizer.h"

/* Bytes of an incomplete sequence are held until the next token completes it; bw_detok_flush emits
 * what is left (as U+FFFD). */
typedef struct {
    char pending[8];
    int n_pending;
} bw_detok;

void bw_detok_init(bw_detok *d);
/* Appends the text that token `id` completes to out (capacity cap, NUL-terminated); returns its length
 * in bytes, or -1 if cap is too small (d is then unchanged). */
int bw_detok_push(bw_detok *d, const bw_tok *t, int32_t id, char *out, size_t cap);
int bw_detok_flush(bw_detok *d, char *out, size_t cap);

#endif
