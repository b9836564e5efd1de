/* Encoding and validation of the engine ⇄ front messages; the layout is documented in bw_proto.h and
 * in the field order of put_body()/get_body() below, which must stay mirror images of each other. */
#include "proto/bw_proto.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- byte order helpers: explicit little-endian, no unaligned access ---- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
    int overflow;
} wbuf;

static void put_bytes(wbuf *w, const void *src, size_t n)
{
    if (w->overflow || n > w->cap - w->len) {
        w->overflow = 1;
        return;
    }
    if (n) memcpy(w->p + w->len, src, n);
    w->len += n;
}

static void put_u8(wbuf *w, uint8_t v) { put_bytes(w, &v, 1); }

static void put_u16(wbuf *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    put_bytes(w, b, 2);
}

static void put_u32(wbuf *w, uint32_t v)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
    put_bytes(w, b, 4);
}

static void put_u64(wbuf *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    put_bytes(w, b, 8);
}

static void put_f32(wbuf *w, float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    put_u32(w, v);
}

typedef struct {
    const uint8_t *p;
    size_t len, off;
    int status; /* first failure wins */
    char *err;
    size_t errlen;
} rbuf;

static void fail(rbuf *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(rbuf *r, int status, const char *fmt, ...)
{
    if (r->status != BW_PROTO_OK) return;
    r->status = status;
    if (r->err && r->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err, r->errlen, fmt, ap);
        va_end(ap);
    }
}

static const uint8_t *get_bytes(rbuf *r, size_t n, const char *what)
{
    if (r->status != BW_PROTO_OK) return NULL;
    if (n > r->len - r->off) {
        fail(r, BW_PROTO_ETRUNC, "truncated message: %s needs %zu bytes, %zu left", what, n, r->len - r->off);
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}

static uint8_t get_u8(rbuf *r, const char *what)
{
    const uint8_t *b = get_bytes(r, 1, what);
    return b ? b[0] : 0;
}

static uint16_t get_u16(rbuf *r, const char *what)
{
    const uint8_t *b = get_bytes(r, 2, what);
    return b ? (uint16_t)(b[0] | (b[1] << 8)) : 0;
}

static uint32_t le32(const uint8_t *b)
{
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}

static uint32_t get_u32(rbuf *r, const char *what)
{
    const uint8_t *b = get_bytes(r, 4, what);
    return b ? le32(b) : 0;
}

static uint64_t get_u64(rbuf *r, const char *what)
{
    const uint8_t *b = get_bytes(r, 8, what);
    if (!b) return 0;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | b[i];
    return v;
}

static int32_t get_i32(rbuf *r, const char *what) { return (int32_t)get_u32(r, what); }

static float get_f32(rbuf *r, const char *what)
{
    uint32_t v = get_u32(r, what);
    float f;
    memcpy(&f, &v, 4);
    if (r->status == BW_PROTO_OK && !isfinite(f)) fail(r, BW_PROTO_EINVAL, "%s is not a finite number", what);
    return f;
}

/* A length-prefixed byte string of at most `max` bytes. */
static const char *get_str(rbuf *r, uint32_t len, uint32_t max, const char *what)
{
    if (r->status != BW_PROTO_OK) return NULL;
    if (len > max) {
        fail(r, BW_PROTO_ELIMIT, "%s is %u bytes, limit %u", what, len, max);
        return NULL;
    }
    return (const char *)get_bytes(r, len, what);
}

/* A fixed NUL-terminated name copied out (model id, backend, architecture, weight types). */
static void get_name(rbuf *r, char *dst, size_t dstcap, const char *what)
{
    uint8_t n = get_u8(r, what);
    const char *s = get_str(r, n, (uint32_t)(dstcap - 1), what);
    dst[0] = '\0';
    if (!s) return;
    if (memchr(s, '\0', n)) {
        fail(r, BW_PROTO_EINVAL, "%s contains a NUL byte", what);
        return;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
}

static void check_range(rbuf *r, double v, double lo, double hi, const char *what)
{
    if (r->status == BW_PROTO_OK && !(v >= lo && v <= hi))
        fail(r, BW_PROTO_EINVAL, "%s = %g is outside [%g, %g]", what, v, lo, hi);
}

/* ---- names ---- */

const char *bw_proto_type_name(uint16_t type)
{
    switch (type) {
    case BW_MSG_HELLO: return "HELLO";
    case BW_MSG_ACCEPTED: return "ACCEPTED";
    case BW_MSG_TOKEN: return "TOKEN";
    case BW_MSG_DONE: return "DONE";
    case BW_MSG_ERROR: return "ERROR";
    case BW_MSG_BYE: return "BYE";
    case BW_MSG_SUBMIT: return "SUBMIT";
    case BW_MSG_CANCEL: return "CANCEL";
    case BW_MSG_REPLAY: return "REPLAY";
    default: return NULL;
    }
}

const char *bw_proto_state_name(uint8_t state)
{
    switch (state) {
    case BW_ENGINE_LOADING: return "loading";
    case BW_ENGINE_READY: return "ready";
    case BW_ENGINE_DRAINING: return "draining";
    default: return "unknown";
    }
}

const char *bw_stop_reason_name(int stop)
{
    switch (stop) {
    case BW_STOP_NONE: return "NONE";
    case BW_STOP_MAX_TOKENS: return "MAX_TOKENS";
    case BW_STOP_EOS: return "EOS";
    case BW_STOP_SEQUENCE: return "STOP_SEQUENCE";
    case BW_STOP_CANCELLED: return "CANCELLED";
    case BW_STOP_ERROR: return "ERROR";
    default: return NULL;
    }
}

const char *bw_proto_errcode_name(uint16_t code)
{
    switch (code) {
    case BW_PERR_GENERATION: return "GENERATION_ERROR";
    case BW_PERR_BAD_REQUEST: return "BAD_REQUEST";
    case BW_PERR_QUEUE_FULL: return "QUEUE_FULL";
    case BW_PERR_SHUTDOWN: return "ENGINE_SHUTDOWN";
    case BW_PERR_TOKENIZE: return "TOKENIZE_ERROR";
    case BW_PERR_REPLAY_GONE: return "REPLAY_UNAVAILABLE";
    case BW_PERR_NOT_TAKEN: return "NOT_TAKEN";
    default: return "ENGINE_ERROR";
    }
}

const char *bw_proto_strerror(int status)
{
    switch (status) {
    case BW_PROTO_OK: return "ok";
    case BW_PROTO_ETRUNC: return "truncated message";
    case BW_PROTO_EMAGIC: return "not a beeworker message";
    case BW_PROTO_EVERSION: return "unsupported protocol version";
    case BW_PROTO_ETYPE: return "unknown message type";
    case BW_PROTO_ELIMIT: return "length beyond limit";
    case BW_PROTO_EINVAL: return "invalid field value";
    case BW_PROTO_ENOSPC: return "buffer too small";
    default: return "unknown error";
    }
}

void bw_proto_init(bw_proto_msg *m, uint16_t type, uint64_t epoch, const char *job_id, uint64_t seq)
{
    memset(m, 0, sizeof(*m));
    m->h.version = BW_PROTO_VERSION;
    m->h.type = type;
    m->h.epoch = epoch;
    m->h.seq = seq;
    if (job_id) {
        size_t n = strnlen(job_id, BW_PROTO_JOB_ID_MAX);
        memcpy(m->h.job_id, job_id, n);
        m->h.job_id[n] = '\0';
    }
}

int32_t bw_proto_token_at(const uint8_t *le, uint32_t i) { return (int32_t)le32(le + 4 * (size_t)i); }

/* ---- encode ---- */

static int put_body(wbuf *w, const bw_proto_msg *m)
{
    switch (m->h.type) {
    case BW_MSG_HELLO: {
        const bw_proto_hello *x = &m->u.hello;
        size_t ml = strnlen(x->model_id, sizeof(x->model_id)), bl = strnlen(x->backend, sizeof(x->backend));
        size_t al = strnlen(x->arch, sizeof(x->arch)), wl = strnlen(x->weight_types, sizeof(x->weight_types));
        if (ml > BW_PROTO_MAX_NAME || bl > BW_PROTO_MAX_NAME || al > BW_PROTO_MAX_NAME || wl > BW_PROTO_MAX_NAME)
            return BW_PROTO_ELIMIT;
        put_u8(w, x->state);
        put_u8(w, 0), put_u8(w, 0), put_u8(w, 0);
        put_f32(w, x->progress);
        put_u32(w, x->slots_total);
        put_u32(w, x->slots_busy);
        put_u32(w, x->queue_depth);
        put_u32(w, x->n_ctx);
        put_u32(w, x->pid);
        put_u8(w, (uint8_t)ml);
        put_bytes(w, x->model_id, ml);
        put_u8(w, (uint8_t)bl);
        put_bytes(w, x->backend, bl);
        put_u8(w, (uint8_t)al);
        put_bytes(w, x->arch, al);
        put_u8(w, (uint8_t)wl);
        put_bytes(w, x->weight_types, wl);
        return 0;
    }
    case BW_MSG_ACCEPTED:
        put_u64(w, m->u.accepted.seed);
        put_u32(w, m->u.accepted.n_prompt);
        put_u32(w, (uint32_t)m->u.accepted.first_index);
        return 0;
    case BW_MSG_TOKEN:
        if (m->u.token.text_len > BW_PROTO_MAX_TEXT) return BW_PROTO_ELIMIT;
        put_u32(w, (uint32_t)m->u.token.index);
        put_u32(w, (uint32_t)m->u.token.token_id);
        put_u32(w, m->u.token.text_len);
        put_bytes(w, m->u.token.text, m->u.token.text_len);
        return 0;
    case BW_MSG_DONE: {
        const bw_proto_done *x = &m->u.done;
        if (x->stop_matched_len > BW_PROTO_MAX_STOP_LEN) return BW_PROTO_ELIMIT;
        put_u8(w, x->stop);
        put_u32(w, x->n_prompt);
        put_u32(w, x->n_generated);
        put_u64(w, x->prefill_ns);
        put_u64(w, x->decode_ns);
        put_u32(w, x->stop_matched_len);
        put_bytes(w, x->stop_matched, x->stop_matched_len);
        put_u32(w, x->pred_drafted);
        put_u32(w, x->pred_accepted);
        put_u32(w, x->lookup_drafted);
        put_u32(w, x->lookup_accepted);
        return 0;
    }
    case BW_MSG_ERROR:
        if (m->u.error.message_len > BW_PROTO_MAX_ERRMSG) return BW_PROTO_ELIMIT;
        put_u16(w, m->u.error.code);
        put_u32(w, m->u.error.message_len);
        put_bytes(w, m->u.error.message, m->u.error.message_len);
        return 0;
    case BW_MSG_BYE:
    case BW_MSG_CANCEL: return 0;
    case BW_MSG_REPLAY: put_u64(w, m->u.replay.from_seq); return 0;
    case BW_MSG_SUBMIT: {
        const bw_proto_submit *x = &m->u.submit;
        if (x->text_len > BW_PROTO_MAX_PROMPT_TEXT || x->n_tokens > BW_PROTO_MAX_PROMPT_TOKENS ||
            x->n_resume > BW_PROTO_MAX_PROMPT_TOKENS || x->n_stop > BW_PROTO_MAX_STOP ||
            x->prediction_len > BW_PROTO_MAX_PREDICTION_TEXT)
            return BW_PROTO_ELIMIT;
        put_u32(w, x->flags);
        put_f32(w, x->temperature);
        put_f32(w, x->top_p);
        put_f32(w, x->min_p);
        put_f32(w, x->repetition_penalty);
        put_u32(w, (uint32_t)x->top_k);
        put_u32(w, (uint32_t)x->repeat_last_n);
        put_u64(w, x->seed);
        put_u32(w, (uint32_t)x->max_tokens);
        put_u32(w, (uint32_t)x->resume_index);
        put_u32(w, x->n_resume);
        put_bytes(w, x->resume_le, 4 * (size_t)x->n_resume);
        put_u32(w, x->text_len);
        put_bytes(w, x->text, x->text_len);
        put_u32(w, x->n_tokens);
        put_bytes(w, x->tokens_le, 4 * (size_t)x->n_tokens);
        put_u8(w, (uint8_t)x->n_stop);
        for (uint32_t i = 0; i < x->n_stop; i++) {
            if (x->stop[i].len > BW_PROTO_MAX_STOP_LEN) return BW_PROTO_ELIMIT;
            put_u8(w, (uint8_t)x->stop[i].len);
            put_bytes(w, x->stop[i].s, x->stop[i].len);
        }
        if (x->flags & BW_SUBMIT_PREDICTION) {
            put_u32(w, x->prediction_len);
            put_bytes(w, x->prediction, x->prediction_len);
        }
        return 0;
    }
    default: return BW_PROTO_ETYPE;
    }
}

static void put_header(wbuf *w, const bw_proto_msg *m, uint32_t body_len)
{
    uint8_t id[BW_PROTO_JOB_ID_MAX + 1];
    memset(id, 0, sizeof(id));
    memcpy(id, m->h.job_id, strnlen(m->h.job_id, BW_PROTO_JOB_ID_MAX));
    put_u32(w, BW_PROTO_MAGIC);
    put_u16(w, m->h.version);
    put_u16(w, m->h.type);
    put_u32(w, body_len);
    put_u32(w, 0);
    put_u64(w, m->h.epoch);
    put_u64(w, m->h.seq);
    put_u64(w, m->h.mono_ns);
    put_u64(w, m->h.real_ns);
    put_bytes(w, id, sizeof(id));
}

size_t bw_proto_encoded_size(const bw_proto_msg *m)
{
    size_t n = BW_PROTO_HEADER_SIZE;
    switch (m->h.type) {
    case BW_MSG_HELLO:
        n += 1 + 3 + 4 + 5 * 4 + 1 + strnlen(m->u.hello.model_id, sizeof(m->u.hello.model_id)) + 1 +
             strnlen(m->u.hello.backend, sizeof(m->u.hello.backend)) + 1 +
             strnlen(m->u.hello.arch, sizeof(m->u.hello.arch)) + 1 +
             strnlen(m->u.hello.weight_types, sizeof(m->u.hello.weight_types));
        break;
    case BW_MSG_ACCEPTED: n += 16; break;
    case BW_MSG_TOKEN: n += 12 + (size_t)m->u.token.text_len; break;
    case BW_MSG_DONE: n += 1 + 4 + 4 + 8 + 8 + 4 + (size_t)m->u.done.stop_matched_len + 4 * 4; break;
    case BW_MSG_ERROR: n += 2 + 4 + (size_t)m->u.error.message_len; break;
    case BW_MSG_BYE:
    case BW_MSG_CANCEL: break;
    case BW_MSG_REPLAY: n += 8; break;
    case BW_MSG_SUBMIT: {
        const bw_proto_submit *x = &m->u.submit;
        if (x->n_stop > BW_PROTO_MAX_STOP) return 0;
        n += 4 + 4 * 4 + 4 + 4 + 8 + 4 + 4 + 4 + 4 * (size_t)x->n_resume + 4 + x->text_len + 4 +
             4 * (size_t)x->n_tokens + 1;
        for (uint32_t i = 0; i < x->n_stop; i++) n += 1 + (size_t)x->stop[i].len;
        if (x->flags & BW_SUBMIT_PREDICTION) n += 4 + (size_t)x->prediction_len;
        break;
    }
    default: return 0;
    }
    return n > BW_PROTO_MAX_MSG ? 0 : n;
}

long bw_proto_encode(const bw_proto_msg *m, uint8_t *buf, size_t cap)
{
    size_t need = bw_proto_encoded_size(m);
    if (need == 0) return bw_proto_type_name(m->h.type) ? BW_PROTO_ELIMIT : BW_PROTO_ETYPE;
    if (need > cap) return BW_PROTO_ENOSPC;
    wbuf w = {.p = buf, .len = 0, .cap = cap, .overflow = 0};
    put_header(&w, m, (uint32_t)(need - BW_PROTO_HEADER_SIZE));
    int rc = put_body(&w, m);
    if (rc < 0) return rc;
    if (w.overflow) return BW_PROTO_ENOSPC;
    /* encoded_size and put_body describe the same layout; a mismatch is a bug here, not bad input. */
    if (w.len != need) return BW_PROTO_EINVAL;
    return (long)w.len;
}

/* ---- decode ---- */

static void get_header(rbuf *r, bw_proto_header *h, uint32_t *body_len)
{
    if (r->len < BW_PROTO_HEADER_SIZE) {
        fail(r, BW_PROTO_ETRUNC, "truncated message: %zu bytes, header needs %u", r->len, BW_PROTO_HEADER_SIZE);
        return;
    }
    if (r->len > BW_PROTO_MAX_MSG) {
        fail(r, BW_PROTO_ELIMIT, "message of %zu bytes exceeds the %u-byte limit", r->len, BW_PROTO_MAX_MSG);
        return;
    }
    uint32_t magic = get_u32(r, "magic");
    if (magic != BW_PROTO_MAGIC) {
        fail(r, BW_PROTO_EMAGIC, "bad magic 0x%08x: not a beeworker message", magic);
        return;
    }
    h->version = get_u16(r, "version");
    if (h->version != BW_PROTO_VERSION) {
        fail(r, BW_PROTO_EVERSION, "protocol version %u, this build speaks %u: run matching front and engine",
             h->version, BW_PROTO_VERSION);
        return;
    }
    h->type = get_u16(r, "type");
    if (!bw_proto_type_name(h->type)) {
        fail(r, BW_PROTO_ETYPE, "unknown message type %u", h->type);
        return;
    }
    *body_len = get_u32(r, "body length");
    if (get_u32(r, "reserved") != 0) fail(r, BW_PROTO_EINVAL, "reserved header field is not zero");
    h->epoch = get_u64(r, "epoch");
    h->seq = get_u64(r, "seq");
    h->mono_ns = get_u64(r, "mono_ns");
    h->real_ns = get_u64(r, "real_ns");
    const uint8_t *id = get_bytes(r, BW_PROTO_JOB_ID_MAX + 1, "job id");
    if (!id) return;
    size_t n = strnlen((const char *)id, BW_PROTO_JOB_ID_MAX + 1);
    if (n > BW_PROTO_JOB_ID_MAX) {
        fail(r, BW_PROTO_EINVAL, "job id is not NUL-terminated");
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (id[i] <= 0x20 || id[i] >= 0x7f) {
            fail(r, BW_PROTO_EINVAL, "job id has a non-printable byte at %zu", i);
            return;
        }
    for (size_t i = n; i <= BW_PROTO_JOB_ID_MAX; i++)
        if (id[i]) {
            fail(r, BW_PROTO_EINVAL, "job id padding is not zero");
            return;
        }
    memcpy(h->job_id, id, n + 1);
    if (r->status == BW_PROTO_OK && *body_len != r->len - BW_PROTO_HEADER_SIZE)
        fail(r, *body_len > r->len - BW_PROTO_HEADER_SIZE ? BW_PROTO_ETRUNC : BW_PROTO_EINVAL,
             "body length %u does not match the %zu bytes received", *body_len, r->len - BW_PROTO_HEADER_SIZE);
}

static int needs_job(uint16_t type) { return type != BW_MSG_HELLO && type != BW_MSG_BYE; }

static void get_token_array(rbuf *r, uint32_t n, const uint8_t **out, const char *what)
{
    if (n > BW_PROTO_MAX_PROMPT_TOKENS) {
        fail(r, BW_PROTO_ELIMIT, "%s has %u tokens, limit %u", what, n, BW_PROTO_MAX_PROMPT_TOKENS);
        return;
    }
    *out = get_bytes(r, 4 * (size_t)n, what);
    for (uint32_t i = 0; *out && i < n; i++)
        if (bw_proto_token_at(*out, i) < 0) {
            fail(r, BW_PROTO_EINVAL, "%s[%u] is a negative token id", what, i);
            return;
        }
}

const char *bw_proto_role_name(uint8_t role)
{
    switch (role) {
    case BW_ROLE_SYSTEM: return "system";
    case BW_ROLE_USER: return "user";
    case BW_ROLE_ASSISTANT: return "assistant";
    default: return NULL;
    }
}

size_t bw_proto_chat_put(uint8_t *dst, uint8_t role, const char *content, uint32_t len)
{
    if (dst) {
        wbuf w = {.p = dst, .len = 0, .cap = 5 + (size_t)len, .overflow = 0};
        put_u8(&w, role);
        put_u32(&w, len);
        put_bytes(&w, content, len);
    }
    return 5 + (size_t)len;
}

int bw_proto_chat_next(const char *text, uint32_t text_len, uint32_t *off, uint8_t *role, const char **content,
                       uint32_t *len)
{
    if (*off == text_len) return 0;
    if (*off > text_len || text_len - *off < 5) return -1;
    const uint8_t *p = (const uint8_t *)text + *off;
    uint32_t n = le32(p + 1);
    if (n > text_len - *off - 5) return -1;
    *role = p[0];
    *content = (const char *)p + 5;
    *len = n;
    *off += 5 + n;
    return 1;
}

/* A packed conversation as the engine will read it: every record whole, roles known, no NUL in a
 * content (the chat renderer takes C strings). */
static void check_chat(rbuf *r, const char *text, uint32_t text_len)
{
    uint32_t off = 0, n = 0, len;
    uint8_t role;
    const char *s;
    int rc;
    while ((rc = bw_proto_chat_next(text, text_len, &off, &role, &s, &len)) == 1) {
        if (++n > BW_PROTO_MAX_MESSAGES) {
            fail(r, BW_PROTO_ELIMIT, "more than %u chat messages", BW_PROTO_MAX_MESSAGES);
            return;
        }
        if (!bw_proto_role_name(role)) {
            fail(r, BW_PROTO_EINVAL, "chat message %u has unknown role %u", n - 1, role);
            return;
        }
        if (memchr(s, '\0', len)) {
            fail(r, BW_PROTO_EINVAL, "chat message %u contains a NUL byte", n - 1);
            return;
        }
    }
    if (rc < 0) fail(r, BW_PROTO_EINVAL, "chat message %u is truncated", n);
}

static void get_submit(rbuf *r, bw_proto_submit *x)
{
    x->flags = get_u32(r, "flags");
    if (x->flags & ~BW_SUBMIT_FLAGS_KNOWN) fail(r, BW_PROTO_EINVAL, "unknown submit flags 0x%x", x->flags);
    x->temperature = get_f32(r, "temperature");
    x->top_p = get_f32(r, "top_p");
    x->min_p = get_f32(r, "min_p");
    x->repetition_penalty = get_f32(r, "repetition_penalty");
    x->top_k = get_i32(r, "top_k");
    x->repeat_last_n = get_i32(r, "repeat_last_n");
    x->seed = get_u64(r, "seed");
    x->max_tokens = get_i32(r, "max_tokens");
    check_range(r, x->temperature, 0, 2, "temperature");
    check_range(r, x->top_p, 0, 1, "top_p");
    check_range(r, x->min_p, 0, 1, "min_p");
    check_range(r, x->repetition_penalty, 0, 2, "repetition_penalty");
    check_range(r, x->top_k, 0, 1 << 24, "top_k");
    check_range(r, x->repeat_last_n, 0, BW_PROTO_MAX_PROMPT_TOKENS, "repeat_last_n");
    check_range(r, x->max_tokens, 1, BW_PROTO_MAX_PROMPT_TOKENS, "max_tokens");

    x->resume_index = get_i32(r, "resume_index");
    x->n_resume = get_u32(r, "resume count");
    if (r->status == BW_PROTO_OK && (x->resume_index < 0 || (uint32_t)x->resume_index != x->n_resume))
        fail(r, BW_PROTO_EINVAL, "resume index %d does not match %u resume tokens", x->resume_index, x->n_resume);
    get_token_array(r, x->n_resume, &x->resume_le, "resume tokens");

    x->text_len = get_u32(r, "prompt text length");
    x->text = get_str(r, x->text_len, BW_PROTO_MAX_PROMPT_TEXT, "prompt text");
    x->n_tokens = get_u32(r, "prompt token count");
    get_token_array(r, x->n_tokens, &x->tokens_le, "prompt tokens");
    if (r->status == BW_PROTO_OK) {
        int is_text = (x->flags & BW_SUBMIT_TEXT) != 0;
        if (is_text && (x->text_len == 0 || x->n_tokens != 0))
            fail(r, BW_PROTO_EINVAL, "text submit needs a non-empty text and no tokens");
        else if (!is_text && (x->n_tokens == 0 || x->text_len != 0))
            fail(r, BW_PROTO_EINVAL, "token submit needs tokens and no text");
        else if (!is_text && (x->flags & (BW_SUBMIT_CHAT | BW_SUBMIT_NO_BOS | BW_SUBMIT_MESSAGES)))
            fail(r, BW_PROTO_EINVAL, "chat/bos/messages flags apply to text prompts only");
        else if ((x->flags & BW_SUBMIT_MESSAGES) && !(x->flags & BW_SUBMIT_CHAT))
            fail(r, BW_PROTO_EINVAL, "a messages submit must also be a chat submit");
        else if (x->flags & BW_SUBMIT_MESSAGES) check_chat(r, x->text, x->text_len);
    }

    x->n_stop = get_u8(r, "stop count");
    if (r->status == BW_PROTO_OK && x->n_stop > BW_PROTO_MAX_STOP) {
        fail(r, BW_PROTO_ELIMIT, "%u stop strings, limit %u", x->n_stop, BW_PROTO_MAX_STOP);
        return;
    }
    for (uint32_t i = 0; i < x->n_stop && r->status == BW_PROTO_OK; i++) {
        x->stop[i].len = get_u8(r, "stop length");
        if (r->status == BW_PROTO_OK && x->stop[i].len == 0) fail(r, BW_PROTO_EINVAL, "empty stop string");
        x->stop[i].s = get_str(r, x->stop[i].len, BW_PROTO_MAX_STOP_LEN, "stop string");
    }
    if (r->status == BW_PROTO_OK && (x->flags & BW_SUBMIT_PREDICTION)) {
        x->prediction_len = get_u32(r, "prediction length");
        x->prediction = get_str(r, x->prediction_len, BW_PROTO_MAX_PREDICTION_TEXT, "prediction");
    }
}

static void get_body(rbuf *r, bw_proto_msg *m)
{
    switch (m->h.type) {
    case BW_MSG_HELLO: {
        bw_proto_hello *x = &m->u.hello;
        x->state = get_u8(r, "state");
        get_bytes(r, 3, "padding");
        x->progress = get_f32(r, "progress");
        x->slots_total = get_u32(r, "slots_total");
        x->slots_busy = get_u32(r, "slots_busy");
        x->queue_depth = get_u32(r, "queue_depth");
        x->n_ctx = get_u32(r, "n_ctx");
        x->pid = get_u32(r, "pid");
        get_name(r, x->model_id, sizeof(x->model_id), "model id");
        get_name(r, x->backend, sizeof(x->backend), "backend");
        get_name(r, x->arch, sizeof(x->arch), "architecture");
        get_name(r, x->weight_types, sizeof(x->weight_types), "weight types");
        if (r->status == BW_PROTO_OK && x->state > BW_ENGINE_DRAINING)
            fail(r, BW_PROTO_EINVAL, "engine state %u is unknown", x->state);
        check_range(r, x->progress, 0, 1, "progress");
        if (r->status == BW_PROTO_OK && x->slots_busy > x->slots_total)
            fail(r, BW_PROTO_EINVAL, "%u busy slots of %u", x->slots_busy, x->slots_total);
        break;
    }
    case BW_MSG_ACCEPTED:
        m->u.accepted.seed = get_u64(r, "seed");
        m->u.accepted.n_prompt = get_u32(r, "n_prompt");
        m->u.accepted.first_index = get_i32(r, "first_index");
        if (r->status == BW_PROTO_OK && m->u.accepted.first_index < 0) fail(r, BW_PROTO_EINVAL, "negative first_index");
        break;
    case BW_MSG_TOKEN:
        m->u.token.index = get_i32(r, "index");
        m->u.token.token_id = get_i32(r, "token id");
        m->u.token.text_len = get_u32(r, "text length");
        m->u.token.text = get_str(r, m->u.token.text_len, BW_PROTO_MAX_TEXT, "token text");
        if (r->status == BW_PROTO_OK && (m->u.token.index < 0 || m->u.token.token_id < 0))
            fail(r, BW_PROTO_EINVAL, "negative token index or id");
        break;
    case BW_MSG_DONE: {
        bw_proto_done *x = &m->u.done;
        x->stop = get_u8(r, "stop reason");
        x->n_prompt = get_u32(r, "n_prompt");
        x->n_generated = get_u32(r, "n_generated");
        x->prefill_ns = get_u64(r, "prefill_ns");
        x->decode_ns = get_u64(r, "decode_ns");
        x->stop_matched_len = get_u32(r, "stop match length");
        x->stop_matched = get_str(r, x->stop_matched_len, BW_PROTO_MAX_STOP_LEN, "stop match");
        x->pred_drafted = get_u32(r, "prediction drafted");
        x->pred_accepted = get_u32(r, "prediction accepted");
        x->lookup_drafted = get_u32(r, "lookup drafted");
        x->lookup_accepted = get_u32(r, "lookup accepted");
        if (r->status == BW_PROTO_OK && (x->pred_accepted > x->pred_drafted || x->lookup_accepted > x->lookup_drafted))
            fail(r, BW_PROTO_EINVAL, "more draft tokens accepted than drafted");
        if (r->status == BW_PROTO_OK && (x->stop == BW_STOP_NONE || !bw_stop_reason_name(x->stop)))
            fail(r, BW_PROTO_EINVAL, "stop reason %u is unknown", x->stop);
        break;
    }
    case BW_MSG_ERROR:
        m->u.error.code = get_u16(r, "error code");
        m->u.error.message_len = get_u32(r, "error message length");
        m->u.error.message = get_str(r, m->u.error.message_len, BW_PROTO_MAX_ERRMSG, "error message");
        break;
    case BW_MSG_BYE:
    case BW_MSG_CANCEL: break;
    case BW_MSG_REPLAY: m->u.replay.from_seq = get_u64(r, "from_seq"); break;
    case BW_MSG_SUBMIT: get_submit(r, &m->u.submit); break;
    default: fail(r, BW_PROTO_ETYPE, "unknown message type %u", m->h.type);
    }
}

int bw_proto_decode(const uint8_t *buf, size_t len, bw_proto_msg *m, char *err, size_t errlen)
{
    rbuf r = {.p = buf, .len = buf ? len : 0, .off = 0, .status = BW_PROTO_OK, .err = err, .errlen = errlen};
    if (err && errlen) err[0] = '\0';
    memset(m, 0, sizeof(*m));
    uint32_t body_len = 0;
    get_header(&r, &m->h, &body_len);
    if (r.status == BW_PROTO_OK && needs_job(m->h.type) && m->h.job_id[0] == '\0')
        fail(&r, BW_PROTO_EINVAL, "%s without a job id", bw_proto_type_name(m->h.type));
    if (r.status == BW_PROTO_OK) get_body(&r, m);
    if (r.status == BW_PROTO_OK && r.off != r.len)
        fail(&r, BW_PROTO_EINVAL, "%zu trailing bytes after a %s body", r.len - r.off, bw_proto_type_name(m->h.type));
    return r.status;
}
