#include "engine/prompt.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Llama 2/3 templates write <s> or <|begin_of_text|> themselves. */
static int starts_with_bos(const bw_tok *tok, const char *text)
{
    int32_t bos = bw_tok_bos(tok);
    char piece[64];
    int32_t n = bos >= 0 ? bw_tok_piece(tok, bos, 1, piece, (int32_t)sizeof piece) : 0;
    return n > 0 && strncmp(text, piece, (size_t)n) == 0;
}

static int is_one_special_token(const bw_tok *tok, const char *s)
{
    int32_t id;
    return bw_tok_encode(tok, s, strlen(s), 0, 1, &id, 1) == 1 && bw_tok_piece(tok, id, 0, NULL, 0) == 0;
}

enum bw_chat_kind bw_prompt_chat_kind(const bw_tok *tok, const char *tmpl, size_t tmpl_len)
{
    if (tmpl && tmpl_len) return bw_chat_detect(tmpl, tmpl_len);
    if (is_one_special_token(tok, "<|im_start|>") && is_one_special_token(tok, "<|im_end|>")) return BW_CHAT_CHATML;
    return BW_CHAT_UNKNOWN;
}

int32_t *bw_prompt_encode(const bw_prompt_ctx *ctx, const bw_prompt_req *req, size_t extra, size_t *n, char *err,
                          size_t errlen)
{
    const char *text = req->text;
    size_t len = req->text_len;
    char *rendered = NULL;
    int special = req->parse_special;
    int add_bos = req->add_bos >= 0 ? req->add_bos : bw_tok_add_bos(ctx->tok);
    if (req->msgs) {
        rendered = bw_chat_render(ctx->chat_kind, ctx->tmpl, ctx->tmpl_len, req->msgs, req->n_msgs, err, errlen);
        if (!rendered) return NULL;
        text = rendered;
        len = strlen(rendered);
        special = 1;
        if (starts_with_bos(ctx->tok, rendered)) add_bos = 0;
    }
    int32_t *ids = NULL;
    /* Byte-level BPE never yields more tokens than bytes (+ BOS); the retry covers other vocabularies. */
    int32_t cap = len + 16 > (size_t)INT32_MAX / 8 ? INT32_MAX / 8 : (int32_t)(len + 16);
    for (int tries = 0; tries < 2; tries++) {
        ids = malloc(((size_t)cap + extra) * sizeof *ids);
        if (!ids) break;
        int32_t got = bw_tok_encode(ctx->tok, text, len, add_bos, special, ids, cap);
        if (got >= 0) {
            *n = (size_t)got;
            break;
        }
        free(ids);
        ids = NULL;
        if (got == INT32_MIN || -got <= cap) break;
        cap = -got;
    }
    free(rendered);
    if (!ids) {
        snprintf(err, errlen, "the prompt could not be tokenized");
        return NULL;
    }
    if (*n == 0) {
        snprintf(err, errlen, "the prompt is empty after tokenization");
        free(ids);
        return NULL;
    }
    return ids;
}
