/* The chat-template renderer on hostile templates and messages (an OpenAI chat request's roles and
 * contents come from the client; the template from the model file).
 *
 * Input layout: byte 0 picks the template kind, the rest splits at 0x1e into the template text, then
 * role/content pairs. Invariants: detection never fails; rendering either fails with a reason or
 * returns a terminated string that contains every user message's content (less the whitespace a
 * template strips). */
#include <string.h>

#include "engine/chat.h"
#include "fuzz.h"

#define MAX_MSGS 16

/* Llama templates strip Unicode whitespace around contents: what must survive is the middle, between the
 * first and last ASCII non-space bytes. */
static int core_in(const char *out, const char *content)
{
    size_t a = 0, b = strlen(content);
    while (a < b && (strchr(" \t\n\r\v\f\x1c\x1d\x1f", content[a]) || (unsigned char)content[a] >= 0x80)) a++;
    while (b > a && (strchr(" \t\n\r\v\f\x1c\x1d\x1f", content[b - 1]) || (unsigned char)content[b - 1] >= 0x80)) b--;
    if (a == b) return 1;
    return memmem(out, strlen(out), content + a, b - a) != NULL;
}

static const char *role_of(const char *s)
{
    /* mostly the roles a client may send, sometimes whatever the input says */
    static const char *known[] = {"system", "user", "assistant"};
    return s[0] && (unsigned char)s[0] % 4 < 3 ? known[(unsigned char)s[0] % 4] : s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536) return 0;
    char *copy = malloc(size);
    memcpy(copy, data + 1, size - 1);
    copy[size - 1] = '\0';
    char *seg[1 + 2 * MAX_MSGS];
    size_t seg_len[1 + 2 * MAX_MSGS];
    size_t n_seg = 0;
    char *p = copy, *end = copy + size - 1;
    while (n_seg < 1 + 2 * MAX_MSGS) {
        char *sep = memchr(p, 0x1e, (size_t)(end - p));
        seg[n_seg] = p;
        seg_len[n_seg] = (size_t)((sep ? sep : end) - p);
        if (sep) *sep = '\0';
        n_seg++;
        if (!sep) break;
        p = sep + 1;
    }
    /* the template may hold NUL bytes (it is a length-counted GGUF string); contents are C strings */
    enum bw_chat_kind detected = bw_chat_detect(seg[0], seg_len[0]);
    FUZZ_CHECK(detected >= BW_CHAT_UNKNOWN && detected <= BW_CHAT_GEMMA, "kind %d", (int)detected);
    bw_chat_msg msgs[MAX_MSGS];
    size_t n = 0;
    for (size_t i = 1; i + 1 < n_seg; i += 2) msgs[n++] = (bw_chat_msg){role_of(seg[i]), seg[i + 1]};

    enum bw_chat_kind kinds[] = {detected, (enum bw_chat_kind)(data[0] % (BW_CHAT_GEMMA + 1))};
    for (size_t k = 0; k < 2; k++) {
        char err[256] = "";
        char *out = bw_chat_render(kinds[k], seg[0], seg_len[0], msgs, n, err, sizeof(err));
        if (!out) {
            FUZZ_CHECK(err[0] != '\0', "render failed without a reason");
            continue;
        }
        for (size_t i = 0; i < n; i++)
            if (strcmp(msgs[i].role, "user") == 0)
                FUZZ_CHECK(core_in(out, msgs[i].content), "user message %zu missing from the prompt", i);
        free(out);
    }
    free(copy);
    return 0;
}
