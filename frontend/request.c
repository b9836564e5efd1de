/* Inference request validation; see request.h. Every field is checked even after a failure so the
 * client learns about all its mistakes in one round trip. */
#include "frontend/request.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/utf8.h"
#include "frontend/buf.h"

#define COMPLETIONS_DEFAULT_MAX_TOKENS 16 /* OpenAI's documented default for /v1/completions */
#define MAX_MESSAGE_ERRORS 8              /* per-message failures listed before the rest are summarised */
#define MODEL_MAX_BYTES 256               /* the echoed model name: it is repeated in every streamed chunk */

static void add_err(json_t *errs, const char *field, const char *constraint, const char *message, json_t *value)
{
    json_t *e = json_pack("{s:s,s:s,s:s}", "field", field, "constraint", constraint, "message", message);
    if (!e) return;
    /* echo scalars only: a huge string or object in an error body helps nobody */
    if (value && (json_is_number(value) || json_is_boolean(value) || json_is_null(value)))
        json_object_set(e, "value", value);
    json_array_append_new(errs, e);
}

/* A number field in [lo, hi]; absent (or null, where allowed) leaves *out at its default. */
static void get_number(json_t *root, json_t *errs, const char *name, double lo, double hi, int null_ok, float *out)
{
    json_t *v = json_object_get(root, name);
    if (!v || (null_ok && json_is_null(v))) return;
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
    if (out) *out = (float)d;
}

/* An integer field in [lo, hi]; returns 1 if present and valid. */
static int get_int(json_t *root, json_t *errs, const char *name, long long lo, long long hi, int null_ok,
                   long long *out)
{
    json_t *v = json_object_get(root, name);
    if (!v || (null_ok && json_is_null(v))) return 0;
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
        json_t *s = json_is_array(v) ? json_array_get(v, i) : v;
        if (!json_is_string(s)) {
            add_err(errs, "stop", "type", "stop must be a string or an array of strings", s);
            p->n_stop = 0;
            return;
        }
        size_t len = json_string_length(s);
        if (len < 1 || len > BW_PROTO_MAX_STOP_LEN || memchr(json_string_value(s), '\0', len)) {
            add_err(errs, "stop", "length", "each stop string must be 1 to 100 bytes (no NUL)", NULL);
            p->n_stop = 0;
            return;
        }
        memcpy(p->stop[p->n_stop], json_string_value(s), len);
        p->stop[p->n_stop][len] = '\0';
        p->n_stop++;
    }
}

/* A prompt text's rule (SPEC §3.2): 1..32768 characters, no NUL. `what` names the field in errors. */
static int check_text(json_t *errs, const char *what, const char *s, size_t len)
{
    char msg[128];
    size_t chars = bw_utf8_chars(s, len);
    if (chars < 1 || chars > BW_PROTO_PROMPT_MAX_CHARS) {
        snprintf(msg, sizeof(msg), "%s must be 1 to %d characters", what, BW_PROTO_PROMPT_MAX_CHARS);
        add_err(errs, what, "length", msg, NULL);
        return -1;
    }
    if (memchr(s, '\0', len)) {
        snprintf(msg, sizeof(msg), "%s must not contain NUL characters", what);
        add_err(errs, what, "format", msg, NULL);
        return -1;
    }
    return 0;
}

/* prompt: a string; with one_of_array (OpenAI) also an array holding exactly one string. */
static void get_prompt(json_t *root, json_t *errs, int one_of_array, bw_job_params *p)
{
    json_t *v = json_object_get(root, "prompt");
    if (!v) {
        add_err(errs, "prompt", "required", "prompt is required", NULL);
        return;
    }
    if (one_of_array && json_is_array(v)) {
        if (json_array_size(v) != 1 || !json_is_string(json_array_get(v, 0))) {
            add_err(errs, "prompt", "type",
                    "prompt must be a string or an array of exactly one string (token "
                    "arrays and batches are not supported)",
                    NULL);
            return;
        }
        v = json_array_get(v, 0);
    }
    if (!json_is_string(v)) {
        add_err(errs, "prompt", "type", "prompt must be a string", v);
        return;
    }
    if (check_text(errs, "prompt", json_string_value(v), json_string_length(v)) == 0) {
        p->prompt = json_string_value(v);
        p->prompt_len = json_string_length(v);
    }
}

/* prediction (OpenAI Predicted Outputs): {"type":"content","content":"…"} or null; the content is a
 * string, or an array of {"type":"text","text":"…"} parts of which only a single one is taken. It is only a
 * hint for speculative decoding: it changes the speed, never the output. */
static void get_prediction(json_t *root, json_t *errs, bw_job_params *p)
{
    json_t *v = json_object_get(root, "prediction");
    if (!v || json_is_null(v)) return;
    if (!json_is_object(v)) {
        add_err(errs, "prediction", "type", "prediction must be an object {\"type\":\"content\",\"content\":…}", v);
        return;
    }
    json_t *type = json_object_get(v, "type"), *c = json_object_get(v, "content");
    if (!json_is_string(type) || strcmp(json_string_value(type), "content") != 0) {
        add_err(errs, "prediction.type", "enum", "prediction.type must be \"content\"", NULL);
        return;
    }
    if (json_is_array(c) && json_array_size(c) == 1) {
        json_t *part = json_array_get(c, 0), *pt = json_object_get(part, "type");
        if (json_is_string(pt) && strcmp(json_string_value(pt), "text") == 0) c = json_object_get(part, "text");
    }
    if (!json_is_string(c)) {
        add_err(errs, "prediction.content", "type",
                "prediction.content must be a string (or an array of one text part)", c);
        return;
    }
    size_t len = json_string_length(c);
    if (len == 0) return; /* nothing predicted: nothing to draft from */
    if (check_text(errs, "prediction.content", json_string_value(c), len) == 0) {
        p->prediction = json_string_value(c);
        p->prediction_len = len;
    }
}

/* jansson keeps integers in 64 signed bits and refuses a larger literal as malformed JSON, but a seed is
 * a u64 (SPEC §3.2). load_object puts this placeholder where the top-level seed's literal was and parses
 * the literal itself; a client cannot mean it (a negative seed is out of range). */
#define BIG_SEED_PLACEHOLDER "-9223372036854775807"
#define BIG_SEED_PLACEHOLDER_VALUE (-INT64_MAX)
#define SEED_RANGE_MESSAGE "seed must be an integer from 0 to 18446744073709551615"

typedef struct {
    int present;  /* the body held a seed literal beyond INT64_MAX */
    int overflow; /* ... and beyond UINT64_MAX */
    uint64_t value;
} big_seed;

static void get_seed(json_t *root, json_t *errs, int null_ok, const big_seed *big, bw_job_params *p)
{
    json_t *v = json_object_get(root, "seed");
    if (big->present) {
        if (!json_is_integer(v) || json_integer_value(v) != BIG_SEED_PLACEHOLDER_VALUE)
            add_err(errs, "seed", "type", "an integer beyond 64 bits is only read as the top-level seed", NULL);
        else if (big->overflow) add_err(errs, "seed", "range", SEED_RANGE_MESSAGE, NULL);
        else p->seed = big->value;
        return;
    }
    if (v && !(null_ok && json_is_null(v))) {
        if (!json_is_integer(v)) add_err(errs, "seed", "type", "seed must be an integer", v);
        else if (json_integer_value(v) < 0) add_err(errs, "seed", "range", SEED_RANGE_MESSAGE, v);
        else p->seed = (uint64_t)json_integer_value(v);
        return;
    }
    /* 53 bits: the seed reported in `started` survives a round trip through any JSON client */
    if (getrandom(&p->seed, sizeof(p->seed), 0) != (ssize_t)sizeof(p->seed))
        p->seed = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull;
    p->seed &= (1ull << 53) - 1;
}

/* The sampling fields both body kinds share. */
static void get_sampling(json_t *root, json_t *errs, int null_ok, const big_seed *big, bw_job_params *p)
{
    long long v;
    get_number(root, errs, "temperature", 0, BW_PROTO_TEMPERATURE_MAX, null_ok, &p->temperature);
    get_number(root, errs, "top_p", 0, 1, null_ok, &p->top_p);
    get_number(root, errs, "min_p", 0, 1, null_ok, &p->min_p);
    get_number(root, errs, "repetition_penalty", 0, BW_PROTO_REPETITION_PENALTY_MAX, null_ok, &p->repetition_penalty);
    if (get_int(root, errs, "top_k", 0, BW_PROTO_TOP_K_MAX, null_ok, &v)) p->top_k = (int32_t)v;
    get_seed(root, errs, null_ok, big, p);
    get_stop(root, errs, p);
    get_prediction(root, errs, p);
}

static long long max_tokens_limit(unsigned n_ctx)
{
    return n_ctx > 1 && n_ctx - 1 < BW_PROTO_MAX_TOKENS ? n_ctx - 1 : BW_PROTO_MAX_TOKENS;
}

static json_t *bad_body(const char *code, const char *message)
{
    json_t *o = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
    /* never NULL: a caller reads NULL as success */
    return o ? o : json_pack("{s:{s:s,s:s}}", "error", "code", "INTERNAL", "message", "out of memory");
}

static void init_params(bw_job_params *p)
{
    memset(p, 0, sizeof(*p));
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;
}

/* When jansson refused the literal that ends at `end` as too big: if it is the value of a "seed" member
 * and a u64, its value and where it starts. Whether that member is the top-level one is decided after
 * the reparse (get_seed finds the placeholder there, or the body is refused after all). */
static int find_big_seed(const char *body, size_t end, size_t *start, big_seed *big)
{
    size_t i = end;
    while (i > 0 && body[i - 1] >= '0' && body[i - 1] <= '9') i--;
    if (i == end || end - i > 64) return 0;
    *start = i;
    while (i > 0 && (body[i - 1] == ' ' || body[i - 1] == '\t' || body[i - 1] == '\n' || body[i - 1] == '\r')) i--;
    if (i == 0 || body[--i] != ':') return 0;
    while (i > 0 && (body[i - 1] == ' ' || body[i - 1] == '\t' || body[i - 1] == '\n' || body[i - 1] == '\r')) i--;
    if (i < 6 || memcmp(body + i - 6, "\"seed\"", 6) != 0) return 0;
    char digits[65];
    memcpy(digits, body + *start, end - *start);
    digits[end - *start] = '\0';
    errno = 0;
    unsigned long long v = strtoull(digits, NULL, 10);
    big->overflow = errno == ERANGE;
    big->value = v;
    return 1;
}

static json_t *parse(const char *body, size_t len, json_error_t *jerr)
{
    return json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, jerr);
}

/* A body whose seed literal exceeds jansson's integers, parsed again with the placeholder instead. */
static json_t *reparse_big_seed(const char *body, size_t len, const json_error_t *jerr, big_seed *big)
{
    size_t end = (size_t)jerr->position, start;
    if (!body || strncmp(jerr->text, "too big integer", 15) != 0 || end > len || !find_big_seed(body, end, &start, big))
        return NULL;
    bw_buf b;
    bw_buf_init(&b);
    bw_buf_add(&b, body, start);
    bw_buf_adds(&b, BIG_SEED_PLACEHOLDER);
    bw_buf_add(&b, body + end, len - end);
    json_error_t again;
    json_t *root = b.failed ? NULL : parse(b.p, b.len, &again);
    bw_buf_free(&b);
    big->present = root != NULL;
    return root;
}

/* The body as a JSON object, or NULL with the error object in *bad. */
static json_t *load_object(const char *body, size_t len, big_seed *big, json_t **bad)
{
    json_error_t jerr;
    memset(big, 0, sizeof(*big));
    json_t *root = parse(body, len, &jerr);
    if (!root) root = reparse_big_seed(body, len, &jerr, big);
    if (!root) {
        /* jansson quotes the offending input in its text, which may be invalid UTF-8 or a control
         * character: only printable ASCII of it goes into our (JSON) answer */
        char msg[256];
        snprintf(msg, sizeof(msg), "malformed JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        for (char *c = msg; *c; c++)
            if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e) *c = '?';
        *bad = bad_body("INVALID_JSON", msg);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        *bad = bad_body("INVALID_JSON", "the body must be a JSON object");
        return NULL;
    }
    return root;
}

/* Hands back the parse: NULL and *root_out on success, else the {"errors":[…]} object. */
static json_t *conclude(json_t *root, json_t *errs, json_t **root_out)
{
    if (!errs || json_array_size(errs)) {
        json_decref(root);
        return errs ? json_pack("{s:o}", "errors", errs) : bad_body("INTERNAL", "out of memory");
    }
    json_decref(errs);
    *root_out = root;
    return NULL;
}

json_t *bw_request_parse_infer(const char *body, size_t len, unsigned n_ctx, bw_job_params *p, json_t **root_out)
{
    *root_out = NULL;
    init_params(p);
    big_seed big;
    json_t *bad = NULL, *root = load_object(body, len, &big, &bad);
    if (!root) return bad;
    json_t *errs = json_array();
    json_t *op = json_object_get(root, "operation");
    if (op && !(json_is_string(op) && strcmp(json_string_value(op), "infer") == 0))
        add_err(errs, "operation", "enum", "operation must be \"infer\"", op);
    p->no_ids = op != NULL;

    get_prompt(root, errs, 0, p);
    long long v;
    if (!json_object_get(root, "max_tokens")) add_err(errs, "max_tokens", "required", "max_tokens is required", NULL);
    else if (get_int(root, errs, "max_tokens", 1, max_tokens_limit(n_ctx), 0, &v)) p->max_tokens = (int32_t)v;
    get_sampling(root, errs, 0, &big, p);
    return conclude(root, errs, root_out);
}

/* ---- OpenAI ---- */

/* Fields we accept at their neutral value only: anything else asks for a feature this worker lacks, and
 * a silent success would be a wrong answer. */
static void refuse_unsupported(json_t *root, json_t *errs)
{
    static const char *const off_if_true[] = {"echo", "logprobs"};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(root, off_if_true[i]);
        if (v && !json_is_null(v) && !json_is_false(v) && !(json_is_integer(v) && json_integer_value(v) == 0)) {
            char msg[96];
            snprintf(msg, sizeof(msg), "%s is not supported by this worker", off_if_true[i]);
            add_err(errs, off_if_true[i], "unsupported", msg, v);
        }
    }
    json_t *v = json_object_get(root, "best_of");
    if (v && !json_is_null(v) && !(json_is_integer(v) && json_integer_value(v) == 1))
        add_err(errs, "best_of", "unsupported", "best_of must be 1", v);
    v = json_object_get(root, "suffix");
    if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
        add_err(errs, "suffix", "unsupported", "suffix is not supported by this worker", NULL);
    static const char *const empty_only[] = {"tools", "functions", "logit_bias"};
    for (size_t i = 0; i < 3; i++) {
        v = json_object_get(root, empty_only[i]);
        if (v && !json_is_null(v) &&
            !((json_is_array(v) && !json_array_size(v)) || (json_is_object(v) && !json_object_size(v)))) {
            char msg[96];
            snprintf(msg, sizeof(msg), "%s is not supported by this worker", empty_only[i]);
            add_err(errs, empty_only[i], "unsupported", msg, NULL);
        }
    }
    v = json_object_get(root, "response_format");
    json_t *type = json_object_get(v, "type");
    if (v && !json_is_null(v) && !(json_is_string(type) && strcmp(json_string_value(type), "text") == 0))
        add_err(errs, "response_format", "unsupported", "only response_format {\"type\":\"text\"} is supported", NULL);
    /* accepted for compatibility and ignored: a single-model sampler has no presence/frequency penalty */
    get_number(root, errs, "presence_penalty", -2, 2, 1, NULL);
    get_number(root, errs, "frequency_penalty", -2, 2, 1, NULL);
}

static int role_of(const char *r)
{
    if (strcmp(r, "system") == 0 || strcmp(r, "developer") == 0) return BW_ROLE_SYSTEM;
    if (strcmp(r, "user") == 0) return BW_ROLE_USER;
    if (strcmp(r, "assistant") == 0) return BW_ROLE_ASSISTANT;
    return -1;
}

/* A message's content into text: a string, or an array of {"type":"text","text":…} parts (joined by
 * newlines); null only for an assistant turn. Returns -1 with why set. */
static int content_text(json_t *c, int role, bw_buf *text, const char **why)
{
    if (json_is_string(c)) {
        bw_buf_add(text, json_string_value(c), json_string_length(c));
        return 0;
    }
    if (json_is_null(c) && role == BW_ROLE_ASSISTANT) return 0;
    if (!json_is_array(c)) {
        *why = "content must be a string or an array of text parts";
        return -1;
    }
    size_t i;
    json_t *part;
    json_array_foreach(c, i, part)
    {
        json_t *type = json_object_get(part, "type"), *t = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0 || !json_is_string(t)) {
            *why = "content parts must be {\"type\":\"text\",\"text\":\"…\"} (images and audio are not supported)";
            return -1;
        }
        if (i) bw_buf_adds(text, "\n");
        bw_buf_add(text, json_string_value(t), json_string_length(t));
    }
    return 0;
}

/* messages → the packed conversation of BW_SUBMIT_MESSAGES in o->packed. */
static void get_messages(json_t *root, json_t *errs, bw_job_params *p, bw_openai_req *o)
{
    json_t *v = json_object_get(root, "messages");
    if (!v) {
        add_err(errs, "messages", "required", "messages is required", NULL);
        return;
    }
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > BW_PROTO_MAX_MESSAGES) {
        add_err(errs, "messages", json_is_array(v) ? "length" : "type",
                "messages must be an array of 1 to 1024 messages", NULL);
        return;
    }
    bw_buf packed, text;
    bw_buf_init(&packed);
    bw_buf_init(&text);
    size_t i, chars = 0;
    int failed = 0;
    json_t *m;
    json_array_foreach(v, i, m)
    {
        char field[48], msg[160];
        const char *why = NULL, *what = "content";
        json_t *r = json_object_get(m, "role");
        int role = json_is_string(r) ? role_of(json_string_value(r)) : -1;
        bw_buf_reset(&text);
        if (!json_is_object(m)) why = "each message must be an object", what = "";
        else if (role < 0) why = "role must be \"system\", \"user\" or \"assistant\"", what = "role";
        else if (content_text(json_object_get(m, "content"), role, &text, &why) == 0 && text.len &&
                 memchr(text.p, '\0', text.len))
            why = "content must not contain NUL characters";
        if (why) {
            if (failed++ < MAX_MESSAGE_ERRORS) {
                snprintf(field, sizeof(field), "messages[%zu]%s%s", i, *what ? "." : "", what);
                snprintf(msg, sizeof(msg), "%s: %s", field, why);
                add_err(errs, field, *what == 'r' ? "enum" : "type", msg, NULL);
            }
            continue;
        }
        const char *c = text.len ? text.p : "";
        chars += bw_utf8_chars(c, text.len);
        uint8_t *rec = malloc(bw_proto_chat_put(NULL, (uint8_t)role, c, (uint32_t)text.len));
        if (rec) bw_buf_add(&packed, rec, bw_proto_chat_put(rec, (uint8_t)role, c, (uint32_t)text.len));
        else packed.failed = 1;
        free(rec);
    }
    bw_buf_free(&text);
    if (failed > MAX_MESSAGE_ERRORS) {
        char msg[96];
        snprintf(msg, sizeof(msg), "%d more messages are invalid", failed - MAX_MESSAGE_ERRORS);
        add_err(errs, "messages", "type", msg, NULL);
    }
    if (!failed && (chars < 1 || chars > BW_PROTO_PROMPT_MAX_CHARS))
        add_err(errs, "messages", "length", "the messages' contents must total 1 to 32768 characters", NULL);
    if (failed || json_array_size(errs) || packed.failed) {
        if (packed.failed) add_err(errs, "messages", "memory", "out of memory packing the messages", NULL);
        bw_buf_free(&packed);
        return;
    }
    o->packed = bw_buf_take(&packed, &p->prompt_len);
    p->prompt = o->packed;
    p->submit_flags = BW_SUBMIT_CHAT | BW_SUBMIT_MESSAGES;
}

static void get_bool(json_t *errs, json_t *obj, const char *name, const char *field, int *out)
{
    json_t *v = json_object_get(obj, name);
    if (!v || json_is_null(v)) return;
    if (!json_is_boolean(v)) {
        char msg[96];
        snprintf(msg, sizeof(msg), "%s must be true or false", field);
        add_err(errs, field, "type", msg, v);
        return;
    }
    *out = json_is_true(v);
}

json_t *bw_request_parse_openai(const char *body, size_t len, unsigned n_ctx, bw_job_params *p, bw_openai_req *o,
                                json_t **root_out)
{
    *root_out = NULL;
    init_params(p);
    int chat = o->chat;
    memset(o, 0, sizeof(*o));
    o->chat = chat;
    big_seed big;
    json_t *bad = NULL, *root = load_object(body, len, &big, &bad);
    if (!root) return bad;
    json_t *errs = json_array();

    json_t *model = json_object_get(root, "model");
    if (json_is_string(model) && json_string_length(model) > MODEL_MAX_BYTES)
        add_err(errs, "model", "length", "model must be at most 256 bytes", NULL);
    else if (json_is_string(model)) o->model = json_string_value(model);
    else if (model && !json_is_null(model)) add_err(errs, "model", "type", "model must be a string", model);
    long long v, limit = max_tokens_limit(n_ctx);
    p->max_tokens = chat ? (int32_t)limit : COMPLETIONS_DEFAULT_MAX_TOKENS;
    const char *mt = chat && json_object_get(root, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    /* OpenAI answers 400 when the prompt and max_tokens exceed the context, but a chat request without
     * max_tokens generates to the end of the context */
    p->refuse_over_context = !chat;
    if (get_int(root, errs, mt, 1, limit, 1, &v)) {
        p->max_tokens = (int32_t)v;
        p->refuse_over_context = 1;
    }
    json_t *n = json_object_get(root, "n");
    if (n && !json_is_null(n) && !(json_is_integer(n) && json_integer_value(n) == 1))
        add_err(errs, "n", json_is_integer(n) ? "range" : "type", "n must be 1: this worker returns one choice", n);
    get_bool(errs, root, "stream", "stream", &o->stream);
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so) && !json_is_object(so))
        add_err(errs, "stream_options", "type", "stream_options must be an object", so);
    else get_bool(errs, so, "include_usage", "stream_options.include_usage", &o->include_usage);
    json_t *user = json_object_get(root, "user");
    if (user && !json_is_null(user) && !json_is_string(user))
        add_err(errs, "user", "type", "user must be a string", user);
    refuse_unsupported(root, errs);
    get_sampling(root, errs, 1, &big, p);
    if (chat) get_messages(root, errs, p, o);
    else get_prompt(root, errs, 1, p);
    json_t *res = conclude(root, errs, root_out);
    if (res) bw_request_openai_free(o);
    return res;
}

void bw_request_openai_free(bw_openai_req *o)
{
    free(o->packed);
    o->packed = NULL;
}
