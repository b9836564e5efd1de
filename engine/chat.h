/* Chat templates: turns a list of messages into the prompt text a model was trained on.
 *
 * Owns: recognition of the template in tokenizer.chat_template (ChatML as in SmolLM2 and Qwen, Llama 2,
 * Llama 3, Phi-3, Gemma)
 * and rendering. It does not run Jinja: it recognises the known forms by their markers and renders them
 * natively, and reports an unknown template as an error the caller can show. */
#ifndef BW_ENGINE_CHAT_H
#define BW_ENGINE_CHAT_H

#include <stddef.h>

enum bw_chat_kind { BW_CHAT_UNKNOWN = 0, BW_CHAT_CHATML, BW_CHAT_LLAMA2, BW_CHAT_LLAMA3, BW_CHAT_PHI3, BW_CHAT_GEMMA };

typedef struct {
    const char *role; /* "system", "user", "assistant" */
    const char *content;
} bw_chat_msg;

/* Classifies a template text (NULL or empty → BW_CHAT_CHATML, the common default). */
enum bw_chat_kind bw_chat_detect(const char *tmpl, size_t len);

/* Renders msgs with the generation prompt for the assistant appended. `tmpl` is the model's template
 * (some forms carry a default system prompt, e.g. SmolLM2's). Returns a malloc'd NUL-terminated string,
 * or NULL with a reason in err. The text contains special-token markers: encode it with parse_special. */
char *bw_chat_render(enum bw_chat_kind kind, const char *tmpl, size_t tmpl_len, const bw_chat_msg *msgs, size_t n_msgs,
                     char *err, size_t errlen);

#endif
