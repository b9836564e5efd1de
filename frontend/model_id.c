/* The model's public id; see model_id.h. */
#include "frontend/model_id.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "frontend/link.h"

void bw_model_slug(const char *in, char *out, size_t cap)
{
    size_t n = strlen(in), k = 0;
    if (n >= 5 && strcasecmp(in + n - 5, ".gguf") == 0) n -= 5;
    int dash = 0;
    for (size_t i = 0; i < n && k + 1 < cap; i++) {
        unsigned char c = (unsigned char)in[i];
        if (isascii(c) && (isalnum(c) || c == '.' || c == '_' || c == '-')) {
            if (dash && k && k + 2 < cap) out[k++] = '-';
            dash = 0;
            out[k++] = (char)tolower(c);
        } else {
            dash = 1;
        }
    }
    out[k] = '\0';
}

const char *bw_model_id(bw_front *f)
{
    static char slug[BW_PROTO_MAX_NAME + 1];
    if (f->opts->model_ref) return f->opts->model_ref;
    if (f->opts->model) {
        const char *base = strrchr(f->opts->model, '/');
        bw_model_slug(base ? base + 1 : f->opts->model, slug, sizeof(slug));
    } else {
        bw_model_slug(bw_link_hello(f->link)->model_id, slug, sizeof(slug));
    }
    return slug;
}

const char *bw_model_name(bw_front *f) { return bw_link_hello(f->link)->model_id; }
