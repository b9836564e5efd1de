/* Tokenizer built from GGUF metadata: byte-level BPE (tokenizer.ggml.model = "gpt2", pre-tokenizer chosen
 * by tokenizer.ggml.pre) and SentencePiece-style BPE ("llama").
 *
 * Owns: the vocabulary, merges/scores, special tokens and the pre-tokenizer regexes. Token ids must equal
 * llama.cpp's for the same file and flags. Knows nothing of models or sampling. */
#ifndef BW_ENGINE_TOKENIZER_H
#define BW_ENGINE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

typedef struct bw_tok bw_tok;

bw_tok *bw_tok_load(const bw_gguf *g, char *err, size_t errlen);
void bw_tok_free(bw_tok *t);

int32_t bw_tok_n_vocab(const bw_tok *t);
int32_t bw_tok_bos(const bw_tok *t);            /* -1 if none */
int32_t bw_tok_eos(const bw_tok *t);            /* -1 if none */
int bw_tok_add_bos(const bw_tok *t);            /* tokenizer.ggml.add_bos_token (model default) */
int bw_tok_is_eog(const bw_tok *t, int32_t id); /* EOS, EOT, <|im_end|>, <|eot_id|> and the like */

/* Encodes text (len bytes, any bytes) into out (capacity cap). add_bos: prepend BOS when the model has
 * one. parse_special: text like "<|im_start|>" becomes the special token instead of plain text.
 * Returns the number of tokens, or -(needed) if cap is too small, or INT32_MIN on an internal error. */
int32_t bw_tok_encode(const bw_tok *t, const char *text, size_t len, int add_bos, int parse_special, int32_t *out,
                      int32_t cap);

/* The bytes a token stands for when printed (byte-level decoding applied; control tokens give "" unless
 * render_special). Returns the byte count written (at most cap) or -(needed). Streaming text out of
 * token ids, whole UTF-8 sequences only, is engine/detok.h's. */
int32_t bw_tok_piece(const bw_tok *t, int32_t id, int render_special, char *out, int32_t cap);

#endif
