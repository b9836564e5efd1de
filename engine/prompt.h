/* Turns what a request asks for into prompt token ids: plain text, or chat messages rendered with the
 * model's template, with special-token parsing and the BOS rule applied once, in one place.
 *
 * Owns: the rules "chat text is encoded with special tokens parsed" and "a template that writes BOS as
 * text gets no second BOS". Used by the CLI and the scheduler alike. */
#ifndef BW_ENGINE_PROMPT_H
#define BW_ENGINE_PROMPT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/chat.h"
#include "engine/tokenizer.h"

typedef struct {
    const bw_tok *tok;
    enum bw_chat_kind chat_kind;
    const char *tmpl; /* tokenizer.chat_template, may be NULL */
    size_t tmpl_len;
} bw_prompt_ctx;

typedef struct {
    const char *text; /* plain prompt (when msgs is NULL) */
    size_t text_len;
    const bw_chat_msg *msgs; /* chat messages, or NULL */
    size_t n_msgs;
    int add_bos;       /* -1: the model's default */
    int parse_special; /* for plain text; chat text always parses special tokens */
} bw_prompt_req;

/* The chat form for a model: its template's shape (engine/chat.h). A file without a template gets ChatML
 * only when its vocabulary has ChatML's <|im_start|> and <|im_end|> tokens; otherwise chat requests are an
 * error rather than a prompt the model was never trained on. */
enum bw_chat_kind bw_prompt_chat_kind(const bw_tok *tok, const char *tmpl, size_t tmpl_len);

/* Returns a malloc'd array of *n ids with room for `extra` more after them (resume tokens), or NULL with
 * a one-line reason in err. An empty result is an error ("the prompt is empty"). */
int32_t *bw_prompt_encode(const bw_prompt_ctx *ctx, const bw_prompt_req *req, size_t extra, size_t *n, char *err,
                          size_t errlen);

#endif
