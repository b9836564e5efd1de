/* Chat templates rendered natively. Each form reproduces, byte for byte, what its reference Jinja
 * template renders with add_generation_prompt=True (tests/golden/chat_cases.json holds jinja2's output):
 *
 *   ChatML   <|im_start|>{role}\n{content}<|im_end|>\n ... <|im_start|>assistant\n
 *            SmolLM2's template adds a default system message when the first message is not a system
 *            message; its text is read from the template itself.
 *   Llama 2  <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ...
 *            (contents stripped, roles must alternate; the prompt ends after [/INST])
 *   Llama 3  <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|> ...
 *            <|start_header_id|>assistant<|end_header_id|>\n\n (contents trimmed)
 *
 *   Phi-3    <|system|>\n{content}<|end|>\n<|user|>\n...<|end|>\n<|assistant|>\n  (templates with a
 *            system turn), or the early form: <s> then <|user|>\n{user}<|end|>\n<|assistant|>\n per user
 *            message and {assistant}<|end|>\n per reply (system messages dropped, no separate
 *            generation prompt)
 *   Gemma    <bos><start_of_turn>user\n{system}\n\n{user}<end_of_turn>\n<start_of_turn>model\n...
 *            (assistant is "model", contents trimmed, roles must alternate)
 *
 * The BOS/EOS markers that the Llama templates take from bos_token/eos_token are written as text, as
 * Jinja renders them; encode such a prompt with parse_special and without a second BOS. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem, qsort_r */
#endif
#include "engine/chat.h"
#include "common/err.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* every message from this module starts "chat: " */
#define set_err(err, errlen, ...) bw_err_set(err, errlen, "chat", __VA_ARGS__)

static const char *find_in(const char *hay, size_t n, const char *needle)
{
    return memmem(hay, n, needle, strlen(needle));
}

enum bw_chat_kind bw_chat_detect(const char *tmpl, size_t len)
{
    if (!tmpl || len == 0) return BW_CHAT_CHATML;
    if (find_in(tmpl, len, "<|start_header_id|>")) return BW_CHAT_LLAMA3;
    if (find_in(tmpl, len, "<|im_start|>")) return BW_CHAT_CHATML;
    if (find_in(tmpl, len, "[INST]")) return BW_CHAT_LLAMA2;
    if (find_in(tmpl, len, "<|user|>") && find_in(tmpl, len, "<|assistant|>") && find_in(tmpl, len, "<|end|>"))
        return BW_CHAT_PHI3;
    if (find_in(tmpl, len, "<start_of_turn>")) return BW_CHAT_GEMMA;
    return BW_CHAT_UNKNOWN;
}

/* ---------------------------------------------------------------- output buffer */

typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) {
            if (cap > SIZE_MAX / 2) {
                b->oom = true;
                return;
            }
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

/* ---------------------------------------------------------------- Python str.strip() */

/* Length of the whitespace character at s (Python's str.isspace set), 0 if none. */
static size_t space_at(const unsigned char *s, size_t n)
{
    if (n == 0) return 0;
    unsigned char c = s[0];
    if ((c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20)) return 1;
    if (n >= 2 && c == 0xC2 && (s[1] == 0x85 || s[1] == 0xA0)) return 2;
    if (n >= 3 && c == 0xE1 && s[1] == 0x9A && s[2] == 0x80) /* U+1680 */
        return 3;
    if (n >= 3 && c == 0xE2 && s[1] == 0x80 &&
        ((s[2] >= 0x80 && s[2] <= 0x8A) || s[2] == 0xA8 || s[2] == 0xA9 ||
         s[2] == 0xAF)) /* U+2000..200A, 2028, 2029, 202F */
        return 3;
    if (n >= 3 && c == 0xE2 && s[1] == 0x81 && s[2] == 0x9F) /* U+205F */
        return 3;
    if (n >= 3 && c == 0xE3 && s[1] == 0x80 && s[2] == 0x80) /* U+3000 */
        return 3;
    return 0;
}

/* Jinja's trim and Python's strip() drop Unicode whitespace at both ends. A byte-wise scan is safe:
 * no whitespace sequence starts with a UTF-8 continuation byte. */
static void strip(const char *s, size_t n, size_t *start, size_t *len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t a = 0;
    for (size_t k; a < n && (k = space_at(u + a, n - a)) > 0;) a += k;
    size_t end = a;
    for (size_t i = a; i < n;) {
        size_t k = space_at(u + i, n - i);
        if (k) {
            i += k;
        } else {
            end = ++i;
        }
    }
    *start = a;
    *len = end - a;
}

static void put_stripped(sbuf *b, const char *s)
{
    size_t a, n;
    strip(s, strlen(s), &a, &n);
    put(b, s + a, n);
}

/* ---------------------------------------------------------------- ChatML */

/* SmolLM2's template writes a system turn when messages[0] is not a system message. Returns the
 * malloc'd text of that default message, or NULL when the template has none. */
static char *chatml_default_system(const char *tmpl, size_t len)
{
    if (!tmpl) return NULL;
    const char *cond = find_in(tmpl, len, "messages[0]['role'] != 'system'");
    if (!cond) cond = find_in(tmpl, len, "messages[0][\"role\"] != \"system\"");
    if (!cond) return NULL;
    size_t rest = len - (size_t)(cond - tmpl);
    const char *open = find_in(cond, rest, "<|im_start|>system");
    if (!open) return NULL;
    const char *p = open + strlen("<|im_start|>system");
    const char *end = tmpl + len;
    /* The newline after the role is either a real newline or a Jinja escape. */
    if (p < end && *p == '\n') p++;
    else if (end - p >= 2 && p[0] == '\\' && p[1] == 'n') p += 2;
    else return NULL;
    const char *close = find_in(p, (size_t)(end - p), "<|im_end|>");
    if (!close) return NULL;
    char *out = malloc((size_t)(close - p) + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (const char *q = p; q < close; q++) {
        if (*q == '\\' && q + 1 < close) {
            char c = q[1];
            out[o++] = c == 'n' ? '\n' : c == 't' ? '\t' : c;
            q++;
        } else {
            out[o++] = *q;
        }
    }
    out[o] = '\0';
    return out;
}

static void chatml_turn(sbuf *b, const char *role, const char *content)
{
    puts_(b, "<|im_start|>");
    puts_(b, role);
    puts_(b, "\n");
    puts_(b, content);
    puts_(b, "<|im_end|>\n");
}

static void render_chatml(sbuf *b, const char *tmpl, size_t tmpl_len, const bw_chat_msg *msgs, size_t n)
{
    char *def = chatml_default_system(tmpl, tmpl_len);
    for (size_t i = 0; i < n; i++) {
        if (i == 0 && def && strcmp(msgs[0].role, "system") != 0) chatml_turn(b, "system", def);
        chatml_turn(b, msgs[i].role, msgs[i].content);
    }
    puts_(b, "<|im_start|>assistant\n");
    free(def);
}

/* ---------------------------------------------------------------- Llama 2 */

static bool render_llama2(sbuf *b, const bw_chat_msg *msgs, size_t n, char *err, size_t errlen)
{
    const char *system = NULL;
    if (n == 0) {
        /* The template indexes messages[0]; Jinja fails on an empty conversation, and so do we. */
        set_err(err, errlen, "Llama 2 template: the conversation has no messages");
        return false;
    }
    if (strcmp(msgs[0].role, "system") == 0) {
        system = msgs[0].content;
        msgs++;
        n--;
    }
    for (size_t i = 0; i < n; i++) {
        bool is_user = strcmp(msgs[i].role, "user") == 0;
        if (is_user != (i % 2 == 0)) {
            set_err(err, errlen,
                    "Llama 2 template: conversation roles must alternate user/assistant/user/... "
                    "(message %zu is '%s')",
                    i + (system ? 1 : 0), msgs[i].role);
            return false;
        }
        sbuf content = {0};
        if (i == 0 && system) {
            puts_(&content, "<<SYS>>\n");
            puts_(&content, system);
            puts_(&content, "\n<</SYS>>\n\n");
        }
        puts_(&content, msgs[i].content);
        if (content.oom) {
            free(content.p);
            b->oom = true;
            return true;
        }
        if (is_user) {
            puts_(b, "<s>[INST] ");
            put_stripped(b, content.p);
            puts_(b, " [/INST]");
        } else if (strcmp(msgs[i].role, "assistant") == 0) {
            puts_(b, " ");
            put_stripped(b, content.p);
            puts_(b, " </s>");
        }
        free(content.p);
    }
    return true;
}

/* ---------------------------------------------------------------- Llama 3 */

static void render_llama3(sbuf *b, const bw_chat_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i == 0) puts_(b, "<|begin_of_text|>");
        puts_(b, "<|start_header_id|>");
        puts_(b, msgs[i].role);
        puts_(b, "<|end_header_id|>\n\n");
        put_stripped(b, msgs[i].content);
        puts_(b, "<|eot_id|>");
    }
    puts_(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* ---------------------------------------------------------------- Phi-3 */

static void render_phi3(sbuf *b, const char *tmpl, size_t tmpl_len, const bw_chat_msg *msgs, size_t n)
{
    if (tmpl && find_in(tmpl, tmpl_len, "<|system|>")) {
        for (size_t i = 0; i < n; i++) {
            const char *r = msgs[i].role;
            if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant")) continue;
            puts_(b, "<|");
            puts_(b, r);
            puts_(b, "|>\n");
            puts_(b, msgs[i].content);
            puts_(b, "<|end|>\n");
        }
        puts_(b, "<|assistant|>\n");
        return;
    }
    /* the early form: each user turn carries the assistant's header */
    if (tmpl && find_in(tmpl, tmpl_len, "bos_token")) puts_(b, "<s>");
    for (size_t i = 0; i < n; i++) {
        if (strcmp(msgs[i].role, "user") == 0) {
            puts_(b, "<|user|>\n");
            puts_(b, msgs[i].content);
            puts_(b, "<|end|>\n<|assistant|>\n");
        } else if (strcmp(msgs[i].role, "assistant") == 0) {
            puts_(b, msgs[i].content);
            puts_(b, "<|end|>\n");
        }
    }
}

/* ---------------------------------------------------------------- Gemma */

static bool render_gemma(sbuf *b, const bw_chat_msg *msgs, size_t n, char *err, size_t errlen)
{
    if (n == 0) {
        set_err(err, errlen, "Gemma template: the conversation has no messages");
        return false;
    }
    const char *system = NULL;
    if (strcmp(msgs[0].role, "system") == 0) {
        system = msgs[0].content;
        msgs++;
        n--;
    }
    puts_(b, "<bos>");
    for (size_t i = 0; i < n; i++) {
        bool is_user = strcmp(msgs[i].role, "user") == 0;
        if (is_user != (i % 2 == 0)) {
            set_err(err, errlen,
                    "Gemma template: conversation roles must alternate user/assistant/user/... "
                    "(message %zu is '%s')",
                    i + (system ? 1 : 0), msgs[i].role);
            return false;
        }
        puts_(b, "<start_of_turn>");
        puts_(b, strcmp(msgs[i].role, "assistant") == 0 ? "model" : msgs[i].role);
        puts_(b, "\n");
        if (i == 0 && system) {
            puts_(b, system);
            puts_(b, "\n\n");
        }
        put_stripped(b, msgs[i].content);
        puts_(b, "<end_of_turn>\n");
    }
    puts_(b, "<start_of_turn>model\n");
    return true;
}

char *bw_chat_render(enum bw_chat_kind kind, const char *tmpl, size_t tmpl_len, const bw_chat_msg *msgs, size_t n_msgs,
                     char *err, size_t errlen)
{
    if (n_msgs > 0 && !msgs) {
        set_err(err, errlen, "no messages given");
        return NULL;
    }
    for (size_t i = 0; i < n_msgs; i++) {
        if (!msgs[i].role || !msgs[i].content) {
            set_err(err, errlen, "message %zu has no %s", i, msgs[i].role ? "content" : "role");
            return NULL;
        }
    }
    sbuf b = {0};
    puts_(&b, ""); /* an empty conversation still yields a string */
    switch (kind) {
    case BW_CHAT_CHATML: render_chatml(&b, tmpl, tmpl ? tmpl_len : 0, msgs, n_msgs); break;
    case BW_CHAT_LLAMA2:
        if (!render_llama2(&b, msgs, n_msgs, err, errlen)) {
            free(b.p);
            return NULL;
        }
        break;
    case BW_CHAT_LLAMA3: render_llama3(&b, msgs, n_msgs); break;
    case BW_CHAT_PHI3: render_phi3(&b, tmpl, tmpl ? tmpl_len : 0, msgs, n_msgs); break;
    case BW_CHAT_GEMMA:
        if (!render_gemma(&b, msgs, n_msgs, err, errlen)) {
            free(b.p);
            return NULL;
        }
        break;
    default:
        if (!tmpl || tmpl_len == 0)
            set_err(err, errlen,
                    "the model file has no chat template (tokenizer.chat_template) and its vocabulary "
                    "is not ChatML's; send a plain prompt");
        else
            set_err(err, errlen,
                    "the model's chat template is not one we render (supported: ChatML, Llama 2, "
                    "Llama 3, Phi-3, Gemma)");
        free(b.p);
        return NULL;
    }
    if (b.oom) {
        free(b.p);
        set_err(err, errlen, "out of memory rendering %zu messages", n_msgs);
        return NULL;
    }
    return b.p;
}
