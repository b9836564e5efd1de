/* The chat renderer must produce exactly what the real Jinja templates render: compares
 * engine/chat.c with tests/golden/chat_cases.json (jinja2 output, from tests/tools/make_golden_chat.py),
 * including the conversations the templates reject.
 *
 *   test_chat [chat_cases.json]   (default: found under tests/golden from BW_SOURCE_ROOT or the cwd) */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/chat.h"

#include "check.h"

static enum bw_chat_kind kind_of(const char *name)
{
    if (strcmp(name, "llama2") == 0) return BW_CHAT_LLAMA2;
    if (strcmp(name, "llama3") == 0) return BW_CHAT_LLAMA3;
    if (strncmp(name, "phi3", 4) == 0) return BW_CHAT_PHI3;
    if (strcmp(name, "gemma") == 0) return BW_CHAT_GEMMA;
    return BW_CHAT_CHATML;
}

static int find_golden(char *path, size_t cap)
{
    const char *env = getenv("BW_SOURCE_ROOT");
    char dir[4096];
    if (env) snprintf(dir, sizeof dir, "%s", env);
    else if (!getcwd(dir, sizeof dir)) return 0;
    for (;;) {
        snprintf(path, cap, "%s/tests/golden/chat_cases.json", dir);
        if (access(path, R_OK) == 0) return 1;
        char *slash = strrchr(dir, '/');
        if (env || !slash || slash == dir) return 0;
        *slash = 0;
    }
}

static void detects_known_forms(void)
{
    CHECK(bw_chat_detect(NULL, 0) == BW_CHAT_CHATML, "no template means ChatML");
    CHECK(bw_chat_detect("", 0) == BW_CHAT_CHATML, "empty template means ChatML");
    const char *odd = "{{ messages[0]['content'] }}";
    CHECK(bw_chat_detect(odd, strlen(odd)) == BW_CHAT_UNKNOWN, "a template without markers is unknown");
    char err[200] = "";
    bw_chat_msg m = {"user", "hi"};
    CHECK(bw_chat_render(BW_CHAT_UNKNOWN, odd, strlen(odd), &m, 1, err, sizeof err) == NULL && err[0],
          "an unknown template is an error with a reason");
    bw_chat_msg bad = {"user", NULL};
    err[0] = 0;
    CHECK(bw_chat_render(BW_CHAT_CHATML, NULL, 0, &bad, 1, err, sizeof err) == NULL && err[0],
          "a message without content is an error");
}

int main(int argc, char **argv)
{
    char path[4400];
    if (argc > 1) snprintf(path, sizeof path, "%s", argv[1]);
    else if (!find_golden(path, sizeof path)) {
        printf("SKIP: tests/golden/chat_cases.json not found (set BW_SOURCE_ROOT)\n");
        return 77;
    }
    json_error_t jerr;
    json_t *doc = json_load_file(path, 0, &jerr);
    if (!doc) {
        fprintf(stderr, "FAIL: cannot read %s: %s\n", path, jerr.text);
        return 1;
    }
    detects_known_forms();
    json_t *templates = json_object_get(doc, "templates");
    json_t *cases = json_object_get(doc, "cases");
    size_t n = json_array_size(cases), same = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(cases, i);
        const char *name = json_string_value(json_object_get(c, "template"));
        json_t *tj = json_object_get(templates, name);
        const char *tmpl = json_string_value(tj);
        size_t tlen = json_string_length(tj);
        enum bw_chat_kind kind = bw_chat_detect(tmpl, tlen);
        CHECK(kind == kind_of(name), "template %s detected as %d", name, (int)kind);
        json_t *msgs = json_object_get(c, "messages");
        size_t nm = json_array_size(msgs);
        bw_chat_msg *m = calloc(nm + 1, sizeof *m);
        for (size_t k = 0; k < nm; k++) {
            m[k].role = json_string_value(json_object_get(json_array_get(msgs, k), "role"));
            m[k].content = json_string_value(json_object_get(json_array_get(msgs, k), "content"));
        }
        char err[256] = "";
        char *got = bw_chat_render(kind, tmpl, tlen, m, nm, err, sizeof err);
        json_t *want = json_object_get(c, "expected");
        int ok;
        if (json_is_null(want)) {
            ok = got == NULL && err[0] != 0;
            if (!ok)
                fprintf(stderr, "  case %zu (%s): Jinja rejects this conversation, we rendered \"%s\"\n", i, name,
                        got ? got : "(null)");
        } else {
            ok = got && strcmp(got, json_string_value(want)) == 0;
            if (!ok)
                fprintf(stderr, "  case %zu (%s):\n    want \"%s\"\n    got  \"%s\" %s\n", i, name,
                        json_string_value(want), got ? got : "(null)", err);
        }
        same += ok;
        free(got);
        free(m);
    }
    printf("chat: %zu/%zu renderings identical to jinja2\n", same, n);
    CHECK(same == n, "%zu renderings differ", n - same);
    json_decref(doc);
    if (check_failed) {
        fprintf(stderr, "%d check(s) failed\n", check_failed);
        return 1;
    }
    return 0;
}
