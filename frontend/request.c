/* Inference request validation; see request.h. Every field is checked even after a failure so the
 * client learns about all its mistakes in one round trip. */
#include "frontend/request.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <stdint.h>
#include <sys/random.h>
#include <time.h>

#define PROMPT_MAX_CHARS 32768
#define MAX_TOKENS_LIMIT 2048

static void add_err(json_t *errs, const char *field, const char *constraint, const char *message, json_t *value)
{
    json_t *e = json_pack("{s:s,s:s,s:s}", "field", field, "constraint", constraint, "message", message);
    if (!e) return;
    /* echo scalars only: a huge string or object in an error body helps nobody */
    if (value && (json_is_number(value) || json_is_boolean(value) || json_is_null(value)))
        json_object_set(e, "value", value);
    json_array_append_new(errs, e);
}

static size_t utf8_chars(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xc0) != 0x80;
    return c;
}

/* A number field in [lo, hi]; absent leaves *out at its default. */
static void get_number(json_t *root, json_t *errs, const char *name, double lo, double hi, float *out)
{
    json_t *v = json_object_get(root, name);
    if (!v) return;
    char msg[128];
    if (!json_is_number(v)) {
        snprintf(msg, sizeof(msg), "%s must be a number", name);
        add_err(errs, name, "type", msg, v);
        return;
    }
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi)) {
        snprintf(msg, sizeof(msg), "%s must be between %g and %g", name, lo, hi);
        add_err(errs, name, "range", msg, v);
        return;
    }
    *out = (float)d;
}

/* An integer field in [lo, hi]; returns 1 if present and valid. */
static int get_int(json_t *root, json_t *errs, const char *name, long long lo, long long hi, long long *out)
{
    json_t *v = json_object_get(root, name);
    if (!v) return 0;
    char msg[128];
    if (!json_is_integer(v)) {
        snprintf(msg, sizeof(msg), "%s must be an integer", name);
        add_err(errs, name, "type", msg, v);
        return 0;
    }
    long long x = json_integer_value(v);
    if (x < lo || x > hi) {
        snprintf(msg, sizeof(msg), "%s must be between %lld and %lld", name, lo, hi);
        add_err(errs, name, "range", msg, v);
        return 0;
    }
    *out = x;
    return 1;
}

static void get_stop(json_t *root, json_t *errs, bw_job_params *p)
{
    json_t *v = json_object_get(root, "stop");
    if (!v || json_is_null(v)) return;
    json_t *one[1] = {v};
    size_t n = 1;
    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n > BW_PROTO_MAX_STOP) {
            add_err(errs, "stop", "max_items", "stop takes at most 4 strings", NULL);
            return;
        }
    } else if (!json_is_string(v)) {
        add_err(errs, "stop", "type", "stop must be a string or an array of strings", v);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_is_array(v) ? json_array_get(v, i) : one[0];
        if (!json_is_string(s)) {
            add_err(errs, "stop", "type", "stop must be a string or an array of strings", s);
            return;
        }
        size_t len = json_string_length(s);
        if (len < 1 || len > BW_PROTO_MAX_STOP_LEN || memchr(json_string_value(s), '\0', len)) {
            add_err(errs, "stop", "length", "each stop string must be 1 to 100 bytes", NULL);
            return;
        }
        memcpy(p->stop[p->n_stop], json_string_value(s), len);
        p->stop[p->n_stop][len] = '\0';
        p->n_stop++;
    }
}

static void get_prompt(json_t *root, json_t *errs, bw_job_params *p)
{
    json_t *v = json_object_get(root, "prompt");
    if (!v) {
        add_err(errs, "prompt", "required", "prompt is required", NULL);
        return;
    }
    if (!json_is_string(v)) {
        add_err(errs, "prompt", "type", "prompt must be a string", v);
        return;
    }
    size_t len = json_string_length(v);
    size_t chars = utf8_chars(json_string_value(v), len);
    if (chars < 1 || chars > PROMPT_MAX_CHARS) {
        add_err(errs, "prompt", "length", "prompt must be 1 to 32768 characters", NULL);
        return;
    }
    if (memchr(json_string_value(v), '\0', len)) {
        add_err(errs, "prompt", "format", "prompt must not contain NUL characters", NULL);
        return;
    }
    p->prompt = json_string_value(v);
    p->prompt_len = len;
}

static json_t *bad_body(const char *code, const char *message)
{
    return json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
}

json_t *bw_request_parse_infer(const char *body, size_t len, unsigned n_ctx, bw_job_params *p, json_t **root_out)
{
    *root_out = NULL;
    memset(p, 0, sizeof(*p));
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;

    json_error_t jerr;
    json_t *root = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root) {
        char msg[256];
        snprintf(msg, sizeof(msg), "malformed JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        return bad_body("INVALID_JSON", msg);
    }
    if (!json_is_object(root)) {
        json_decref(root);
        return bad_body("INVALID_JSON", "the body must be a JSON object");
    }
    json_t *errs = json_array();
    json_t *op = json_object_get(root, "operation");
    if (op && !(json_is_string(op) && strcmp(json_string_value(op), "infer") == 0))
        add_err(errs, "operation", "enum", "operation must be \"infer\"", op);

    get_prompt(root, errs, p);
    long long v;
    long long max_tok = n_ctx > 1 && n_ctx - 1 < MAX_TOKENS_LIMIT ? n_ctx - 1 : MAX_TOKENS_LIMIT;
    if (!json_object_get(root, "max_tokens")) add_err(errs, "max_tokens", "required", "max_tokens is required", NULL);
    else if (get_int(root, errs, "max_tokens", 1, max_tok, &v)) p->max_tokens = (int32_t)v;
    get_number(root, errs, "temperature", 0, 2, &p->temperature);
    get_number(root, errs, "top_p", 0, 1, &p->top_p);
    get_number(root, errs, "min_p", 0, 1, &p->min_p);
    get_number(root, errs, "repetition_penalty", 0, 2, &p->repetition_penalty);
    if (get_int(root, errs, "top_k", 0, 1 << 20, &v)) p->top_k = (int32_t)v;
    if (get_int(root, errs, "seed", 0, INT64_MAX, &v)) p->seed = (uint64_t)v;
    else if (getrandom(&p->seed, sizeof(p->seed), 0) != (ssize_t)sizeof(p->seed))
        p->seed = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull;
    get_stop(root, errs, p);

    if (json_array_size(errs)) {
        json_decref(root);
        return json_pack("{s:o}", "errors", errs);
    }
    json_decref(errs);
    *root_out = root;
    return NULL;
}
