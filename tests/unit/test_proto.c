/* Guards the wire contract: every message survives encode → decode unchanged, and no byte sequence
 * (truncations, bit flips, random bytes, hostile lengths) makes the decoder crash, read out of bounds or
 * accept a message it should refuse. Run under ASan/UBSan to make out-of-bounds reads fatal. */
#include "proto/bw_proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static uint8_t buf[BW_PROTO_MAX_MSG];

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static const uint8_t prompt_le[] = {1, 0, 0, 0, 0x10, 0x27, 0, 0, 0xff, 0xbf, 0, 0}; /* 1, 10000, 49151 */

/* A three-turn conversation packed as BW_SUBMIT_MESSAGES carries it; an empty assistant turn included. */
static uint8_t conversation[256];
static const struct {
    uint8_t role;
    const char *content;
} turns[] = {
    {BW_ROLE_SYSTEM, "Be brief."}, {BW_ROLE_USER, "Hi \xc3\xa9"}, {BW_ROLE_ASSISTANT, ""}, {BW_ROLE_USER, "Again"}};

static size_t pack_conversation(void)
{
    size_t off = 0;
    for (size_t i = 0; i < sizeof(turns) / sizeof(turns[0]); i++) {
        uint32_t len = (uint32_t)strlen(turns[i].content);
        CHECK(bw_proto_chat_put(NULL, turns[i].role, turns[i].content, len) == 5 + (size_t)len);
        off += bw_proto_chat_put(conversation + off, turns[i].role, turns[i].content, len);
    }
    return off;
}

static void sample_messages(bw_proto_msg *ms, int *n)
{
    int k = 0;
    bw_proto_init(&ms[k], BW_MSG_HELLO, 0x1122334455667788ull, NULL, 7);
    ms[k].u.hello = (bw_proto_hello){.state = BW_ENGINE_READY,
                                     .progress = 1.0f,
                                     .slots_total = 4,
                                     .slots_busy = 2,
                                     .queue_depth = 3,
                                     .n_ctx = 4096,
                                     .pid = 4242};
    strcpy(ms[k].u.hello.model_id, "SmolLM2-135M-Instruct");
    strcpy(ms[k].u.hello.backend, "cpu");
    strcpy(ms[k].u.hello.arch, "gemma3");
    strcpy(ms[k].u.hello.weight_types, "Q4_K,Q6_K,Q8_0,F32");
    k++;
    bw_proto_init(&ms[k], BW_MSG_ACCEPTED, 9, "job-0f8fad5b-d9cb-469f-a165-70867728950e", 0);
    ms[k].u.accepted = (bw_proto_accepted){.seed = 123456789012345ull, .n_prompt = 17, .first_index = 0};
    k++;
    bw_proto_init(&ms[k], BW_MSG_TOKEN, 9, "job-a", 5);
    ms[k].u.token = (bw_proto_token){.index = 4, .token_id = 28120, .text = " h\xc3\xa9llo", .text_len = 7};
    ms[k].h.mono_ns = 111, ms[k].h.real_ns = 1700000000123456789ull;
    k++;
    bw_proto_init(&ms[k], BW_MSG_TOKEN, 9, "job-a", 6);
    ms[k].u.token = (bw_proto_token){.index = 5, .token_id = 2, .text = "", .text_len = 0};
    k++;
    bw_proto_init(&ms[k], BW_MSG_DONE, 9, "job-a", 7);
    ms[k].u.done = (bw_proto_done){.stop = BW_STOP_SEQUENCE,
                                   .n_prompt = 17,
                                   .n_generated = 6,
                                   .prefill_ns = 5,
                                   .decode_ns = 99,
                                   .stop_matched = "\n\n",
                                   .stop_matched_len = 2,
                                   .pred_drafted = 40,
                                   .pred_accepted = 31,
                                   .lookup_drafted = 9,
                                   .lookup_accepted = 0};
    k++;
    bw_proto_init(&ms[k], BW_MSG_ERROR, 9, "job-b", 1);
    ms[k].u.error = (bw_proto_error){.code = BW_PERR_GENERATION, .message = "backend failed", .message_len = 14};
    k++;
    bw_proto_init(&ms[k], BW_MSG_BYE, 9, NULL, 99);
    k++;
    bw_proto_init(&ms[k], BW_MSG_CANCEL, 0, "job-c", 0);
    k++;
    bw_proto_init(&ms[k], BW_MSG_REPLAY, 9, "job-c", 0);
    ms[k].u.replay.from_seq = 42;
    k++;
    bw_proto_init(&ms[k], BW_MSG_SUBMIT, 0, "job-d", 0);
    bw_proto_submit *s = &ms[k].u.submit;
    s->flags = BW_SUBMIT_TEXT | BW_SUBMIT_CHAT | BW_SUBMIT_PREDICTION;
    s->prediction = "Once upon a time", s->prediction_len = 16;
    s->temperature = 0.7f, s->top_p = 0.9f, s->min_p = 0.05f, s->repetition_penalty = 1.1f;
    s->top_k = 40, s->repeat_last_n = 64, s->seed = ~0ull, s->max_tokens = 96;
    s->text = "Tell me a story", s->text_len = 15;
    s->n_stop = 2;
    s->stop[0].s = "\n\n", s->stop[0].len = 2;
    s->stop[1].s = "END", s->stop[1].len = 3;
    k++;
    bw_proto_init(&ms[k], BW_MSG_SUBMIT, 0, "job-e", 0);
    s = &ms[k].u.submit;
    s->temperature = 0, s->top_p = 1, s->repetition_penalty = 1, s->max_tokens = 1;
    s->tokens_le = prompt_le, s->n_tokens = 3;
    s->resume_index = 2, s->n_resume = 2, s->resume_le = prompt_le;
    k++;
    bw_proto_init(&ms[k], BW_MSG_SUBMIT, 0, "job-f", 0);
    s = &ms[k].u.submit;
    s->flags = BW_SUBMIT_TEXT | BW_SUBMIT_CHAT | BW_SUBMIT_MESSAGES;
    s->temperature = 0, s->top_p = 1, s->repetition_penalty = 1, s->max_tokens = 8;
    s->text = (const char *)conversation, s->text_len = (uint32_t)pack_conversation();
    k++;
    *n = k;
}

static int same_bytes(const void *a, uint32_t alen, const void *b, uint32_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static void check_equal(const bw_proto_msg *a, const bw_proto_msg *b)
{
    CHECK(a->h.version == b->h.version && a->h.type == b->h.type && a->h.epoch == b->h.epoch);
    CHECK(a->h.seq == b->h.seq && a->h.mono_ns == b->h.mono_ns && a->h.real_ns == b->h.real_ns);
    CHECK(strcmp(a->h.job_id, b->h.job_id) == 0);
    switch (a->h.type) {
    case BW_MSG_HELLO:
        CHECK(a->u.hello.state == b->u.hello.state && a->u.hello.progress == b->u.hello.progress);
        CHECK(a->u.hello.slots_total == b->u.hello.slots_total && a->u.hello.slots_busy == b->u.hello.slots_busy);
        CHECK(a->u.hello.queue_depth == b->u.hello.queue_depth && a->u.hello.n_ctx == b->u.hello.n_ctx);
        CHECK(a->u.hello.pid == b->u.hello.pid);
        CHECK(strcmp(a->u.hello.model_id, b->u.hello.model_id) == 0);
        CHECK(strcmp(a->u.hello.backend, b->u.hello.backend) == 0);
        CHECK(strcmp(a->u.hello.arch, b->u.hello.arch) == 0);
        CHECK(strcmp(a->u.hello.weight_types, b->u.hello.weight_types) == 0);
        break;
    case BW_MSG_ACCEPTED: CHECK(memcmp(&a->u.accepted, &b->u.accepted, sizeof(a->u.accepted)) == 0); break;
    case BW_MSG_TOKEN:
        CHECK(a->u.token.index == b->u.token.index && a->u.token.token_id == b->u.token.token_id);
        CHECK(same_bytes(a->u.token.text, a->u.token.text_len, b->u.token.text, b->u.token.text_len));
        break;
    case BW_MSG_DONE:
        CHECK(a->u.done.stop == b->u.done.stop && a->u.done.n_prompt == b->u.done.n_prompt);
        CHECK(a->u.done.n_generated == b->u.done.n_generated && a->u.done.prefill_ns == b->u.done.prefill_ns);
        CHECK(a->u.done.decode_ns == b->u.done.decode_ns);
        CHECK(a->u.done.pred_drafted == b->u.done.pred_drafted && a->u.done.pred_accepted == b->u.done.pred_accepted);
        CHECK(a->u.done.lookup_drafted == b->u.done.lookup_drafted &&
              a->u.done.lookup_accepted == b->u.done.lookup_accepted);
        CHECK(same_bytes(a->u.done.stop_matched, a->u.done.stop_matched_len, b->u.done.stop_matched,
                         b->u.done.stop_matched_len));
        break;
    case BW_MSG_ERROR:
        CHECK(a->u.error.code == b->u.error.code);
        CHECK(same_bytes(a->u.error.message, a->u.error.message_len, b->u.error.message, b->u.error.message_len));
        break;
    case BW_MSG_REPLAY: CHECK(a->u.replay.from_seq == b->u.replay.from_seq); break;
    case BW_MSG_SUBMIT: {
        const bw_proto_submit *x = &a->u.submit, *y = &b->u.submit;
        CHECK(x->flags == y->flags && x->temperature == y->temperature && x->top_p == y->top_p);
        CHECK(x->min_p == y->min_p && x->repetition_penalty == y->repetition_penalty);
        CHECK(x->top_k == y->top_k && x->repeat_last_n == y->repeat_last_n && x->seed == y->seed);
        CHECK(x->max_tokens == y->max_tokens && x->resume_index == y->resume_index);
        CHECK(same_bytes(x->text, x->text_len, y->text, y->text_len));
        CHECK(same_bytes(x->prediction, x->prediction_len, y->prediction, y->prediction_len));
        CHECK(x->n_tokens == y->n_tokens && x->n_resume == y->n_resume && x->n_stop == y->n_stop);
        for (uint32_t i = 0; i < x->n_tokens && i < y->n_tokens; i++)
            CHECK(bw_proto_token_at(x->tokens_le, i) == bw_proto_token_at(y->tokens_le, i));
        for (uint32_t i = 0; i < x->n_resume && i < y->n_resume; i++)
            CHECK(bw_proto_token_at(x->resume_le, i) == bw_proto_token_at(y->resume_le, i));
        for (uint32_t i = 0; i < x->n_stop && i < y->n_stop; i++)
            CHECK(same_bytes(x->stop[i].s, x->stop[i].len, y->stop[i].s, y->stop[i].len));
        break;
    }
    default: break;
    }
}

/* Decodes a copy in a buffer of exactly `len` bytes, so ASan flags any read past the end. The decoded
 * message points into that copy, which lives until the next call. */
static int decode_exact(const uint8_t *src, size_t len, bw_proto_msg *m, char *err, size_t errlen)
{
    static uint8_t *copy;
    free(copy);
    copy = malloc(len ? len : 1);
    if (len) memcpy(copy, src, len);
    return bw_proto_decode(copy, len, m, err, errlen);
}

static void test_round_trips(void)
{
    bw_proto_msg ms[16], out;
    int n;
    char err[256];
    sample_messages(ms, &n);
    for (int i = 0; i < n; i++) {
        long len = bw_proto_encode(&ms[i], buf, sizeof(buf));
        CHECK(len > 0 && (size_t)len == bw_proto_encoded_size(&ms[i]));
        int rc = bw_proto_decode(buf, (size_t)len, &out, err, sizeof(err));
        if (rc != BW_PROTO_OK) fprintf(stderr, "decode %s: %s\n", bw_proto_type_name(ms[i].h.type), err);
        CHECK(rc == BW_PROTO_OK);
        if (rc == BW_PROTO_OK) check_equal(&ms[i], &out);
        /* a buffer one byte short is refused by the encoder */
        CHECK(bw_proto_encode(&ms[i], buf, (size_t)len - 1) == BW_PROTO_ENOSPC);
    }
    printf("round trips: %d message kinds\n", n);
}

static void test_truncations_and_flips(void)
{
    bw_proto_msg ms[16], out;
    int n, checked = 0;
    char err[256];
    sample_messages(ms, &n);
    for (int i = 0; i < n; i++) {
        long len = bw_proto_encode(&ms[i], buf, sizeof(buf));
        uint8_t orig[4096];
        memcpy(orig, buf, (size_t)len);
        for (long cut = 0; cut < len; cut++) {
            int rc = decode_exact(orig, (size_t)cut, &out, err, sizeof(err));
            CHECK(rc != BW_PROTO_OK);
            CHECK(err[0] != '\0');
            checked++;
        }
        /* every single-bit flip: must not crash; if accepted, it must re-encode to the same bytes */
        for (long byte = 0; byte < len; byte++)
            for (int bit = 0; bit < 8; bit++) {
                uint8_t m2[4096];
                memcpy(m2, orig, (size_t)len);
                m2[byte] ^= (uint8_t)(1u << bit);
                if (decode_exact(m2, (size_t)len, &out, err, sizeof(err)) == BW_PROTO_OK) {
                    uint8_t again[4096];
                    long l2 = bw_proto_encode(&out, again, sizeof(again));
                    CHECK(l2 == len);
                }
                checked++;
            }
    }
    printf("truncations and bit flips: %d decodes\n", checked);
}

static void test_hostile_headers(void)
{
    bw_proto_msg m, out;
    char err[256];
    bw_proto_init(&m, BW_MSG_CANCEL, 0, "job-x", 0);
    long len = bw_proto_encode(&m, buf, sizeof(buf));
    CHECK(len == BW_PROTO_HEADER_SIZE);

    buf[4] = BW_PROTO_VERSION + 1; /* version */
    CHECK(bw_proto_decode(buf, (size_t)len, &out, err, sizeof(err)) == BW_PROTO_EVERSION);
    CHECK(strstr(err, "version") != NULL);
    buf[4] = BW_PROTO_VERSION;

    buf[6] = 99; /* type */
    CHECK(bw_proto_decode(buf, (size_t)len, &out, err, sizeof(err)) == BW_PROTO_ETYPE);
    buf[6] = BW_MSG_CANCEL;

    buf[0] ^= 0xff; /* magic */
    CHECK(bw_proto_decode(buf, (size_t)len, &out, err, sizeof(err)) == BW_PROTO_EMAGIC);
    buf[0] ^= 0xff;

    buf[8] = 0xff, buf[9] = 0xff, buf[10] = 0xff, buf[11] = 0x7f; /* body length far beyond the message */
    CHECK(bw_proto_decode(buf, (size_t)len, &out, err, sizeof(err)) == BW_PROTO_ETRUNC);
    memset(buf + 8, 0, 4);

    memset(buf + 48, 'A', BW_PROTO_JOB_ID_MAX + 1); /* job id without terminator */
    CHECK(bw_proto_decode(buf, (size_t)len, &out, err, sizeof(err)) == BW_PROTO_EINVAL);
    memset(buf + 48, 0, BW_PROTO_JOB_ID_MAX + 1); /* CANCEL without job id */
    CHECK(bw_proto_decode(buf, (size_t)len, &out, err, sizeof(err)) == BW_PROTO_EINVAL);

    CHECK(bw_proto_decode(NULL, 0, &out, err, sizeof(err)) == BW_PROTO_ETRUNC);
    CHECK(bw_proto_decode(buf, BW_PROTO_MAX_MSG + 1, &out, NULL, 0) != BW_PROTO_OK);
    printf("hostile headers: ok\n");
}

/* Sets a little-endian u32 at off. */
static void set32(uint8_t *p, size_t off, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[off + (size_t)i] = (uint8_t)(v >> (8 * i));
}

static void test_absurd_lengths(void)
{
    bw_proto_msg m, out;
    char err[256];
    /* a TOKEN whose text length claims 4 GiB */
    bw_proto_init(&m, BW_MSG_TOKEN, 1, "job-x", 1);
    m.u.token = (bw_proto_token){.index = 0, .token_id = 1, .text = "ab", .text_len = 2};
    long len = bw_proto_encode(&m, buf, sizeof(buf));
    set32(buf, BW_PROTO_HEADER_SIZE + 8, 0xffffffffu);
    CHECK(bw_proto_decode(buf, (size_t)len, &out, err, sizeof(err)) == BW_PROTO_ELIMIT);

    /* a SUBMIT claiming 2^31 prompt tokens */
    bw_proto_init(&m, BW_MSG_SUBMIT, 0, "job-y", 0);
    m.u.submit.temperature = 1, m.u.submit.top_p = 1, m.u.submit.repetition_penalty = 1, m.u.submit.max_tokens = 5;
    m.u.submit.tokens_le = prompt_le, m.u.submit.n_tokens = 3;
    len = bw_proto_encode(&m, buf, sizeof(buf));
    CHECK(len > 0);
    size_t ntok_off = BW_PROTO_HEADER_SIZE + 4 + 16 + 8 + 8 + 4 + 4 + 4 + 4; /* after resume, text_len */
    set32(buf, ntok_off, 0x80000000u);
    CHECK(bw_proto_decode(buf, (size_t)len, &out, err, sizeof(err)) == BW_PROTO_ELIMIT);

    /* encoder refuses what the decoder would refuse */
    m.u.submit.n_tokens = BW_PROTO_MAX_PROMPT_TOKENS + 1;
    CHECK(bw_proto_encode(&m, buf, sizeof(buf)) < 0);

    /* semantic checks: NaN temperature, out-of-range top_p, negative max_tokens */
    m.u.submit.n_tokens = 3;
    float bad[] = {__builtin_nanf(""), 3.0f, -1.0f};
    for (int i = 0; i < 3; i++) {
        m.u.submit.temperature = bad[i];
        len = bw_proto_encode(&m, buf, sizeof(buf));
        CHECK(len > 0 && bw_proto_decode(buf, (size_t)len, &out, err, sizeof(err)) == BW_PROTO_EINVAL);
    }
    m.u.submit.temperature = 1, m.u.submit.max_tokens = -1;
    len = bw_proto_encode(&m, buf, sizeof(buf));
    CHECK(bw_proto_decode(buf, (size_t)len, &out, err, sizeof(err)) == BW_PROTO_EINVAL);

    /* trailing garbage after a valid body */
    bw_proto_init(&m, BW_MSG_REPLAY, 1, "job-z", 0);
    len = bw_proto_encode(&m, buf, sizeof(buf));
    buf[len] = 0;
    set32(buf, 8, (uint32_t)(len + 1 - BW_PROTO_HEADER_SIZE));
    CHECK(bw_proto_decode(buf, (size_t)len + 1, &out, err, sizeof(err)) == BW_PROTO_EINVAL);
    printf("absurd lengths: ok\n");
}

/* Encodes a messages SUBMIT whose text is `text` and returns the decoder's verdict. */
static int decode_chat_submit(const uint8_t *text, uint32_t len, uint32_t flags)
{
    bw_proto_msg m, out;
    char err[256];
    bw_proto_init(&m, BW_MSG_SUBMIT, 0, "job-m", 0);
    m.u.submit.flags = flags;
    m.u.submit.temperature = 1, m.u.submit.top_p = 1, m.u.submit.repetition_penalty = 1, m.u.submit.max_tokens = 5;
    m.u.submit.text = (const char *)text, m.u.submit.text_len = len;
    long n = bw_proto_encode(&m, buf, sizeof(buf));
    CHECK(n > 0);
    return n > 0 ? decode_exact(buf, (size_t)n, &out, err, sizeof(err)) : BW_PROTO_EINVAL;
}

static void test_chat_messages(void)
{
    const uint32_t chat = BW_SUBMIT_TEXT | BW_SUBMIT_CHAT | BW_SUBMIT_MESSAGES;
    uint32_t len = (uint32_t)pack_conversation(), off = 0, len_i;
    uint8_t role;
    const char *content;
    size_t i = 0;
    int rc;
    while ((rc = bw_proto_chat_next((const char *)conversation, len, &off, &role, &content, &len_i)) == 1) {
        CHECK(i < sizeof(turns) / sizeof(turns[0]));
        if (i >= sizeof(turns) / sizeof(turns[0])) break;
        CHECK(role == turns[i].role &&
              same_bytes(content, len_i, turns[i].content, (uint32_t)strlen(turns[i].content)));
        i++;
    }
    CHECK(rc == 0 && i == sizeof(turns) / sizeof(turns[0]));
    CHECK(strcmp(bw_proto_role_name(BW_ROLE_ASSISTANT), "assistant") == 0 && bw_proto_role_name(3) == NULL);
    CHECK(decode_chat_submit(conversation, len, chat) == BW_PROTO_OK);

    /* every truncation of the packed records is refused, never read past */
    for (uint32_t cut = 1; cut < len; cut++) {
        off = 0;
        while ((rc = bw_proto_chat_next((const char *)conversation, cut, &off, &role, &content, &len_i)) == 1) {
        }
        if (rc < 0) CHECK(decode_chat_submit(conversation, cut, chat) == BW_PROTO_EINVAL);
        else CHECK(decode_chat_submit(conversation, cut, chat) == BW_PROTO_OK); /* ends on a record boundary */
    }

    uint8_t one[64];
    size_t n = bw_proto_chat_put(one, 7, "x", 1); /* unknown role */
    CHECK(decode_chat_submit(one, (uint32_t)n, chat) == BW_PROTO_EINVAL);
    n = bw_proto_chat_put(one, BW_ROLE_USER, "a\0b", 3); /* NUL inside a content */
    CHECK(decode_chat_submit(one, (uint32_t)n, chat) == BW_PROTO_EINVAL);
    n = bw_proto_chat_put(one, BW_ROLE_USER, "abc", 3);
    set32(one, 1, 0xfffffff0u); /* a record claiming 4 GiB */
    CHECK(decode_chat_submit(one, (uint32_t)n, chat) == BW_PROTO_EINVAL);
    n = bw_proto_chat_put(one, BW_ROLE_USER, "abc", 3);
    CHECK(decode_chat_submit(one, (uint32_t)n, BW_SUBMIT_TEXT | BW_SUBMIT_MESSAGES) == BW_PROTO_EINVAL);
    CHECK(decode_chat_submit(one, (uint32_t)n, chat) == BW_PROTO_OK);

    /* one message over the count limit */
    size_t cap = 5 * ((size_t)BW_PROTO_MAX_MESSAGES + 1);
    uint8_t *many = malloc(cap);
    size_t used = 0;
    for (uint32_t k = 0; many && k <= BW_PROTO_MAX_MESSAGES; k++)
        used += bw_proto_chat_put(many + used, BW_ROLE_USER, "", 0);
    if (many) {
        CHECK(decode_chat_submit(many, (uint32_t)used, chat) == BW_PROTO_ELIMIT);
        CHECK(decode_chat_submit(many, (uint32_t)(used - 5), chat) == BW_PROTO_OK);
    }
    free(many);
    printf("chat messages: ok\n");
}

static void test_random_bytes(void)
{
    bw_proto_msg out;
    char err[256];
    int accepted = 0;
    for (int iter = 0; iter < 200000; iter++) {
        size_t len = (size_t)(rnd() % 400);
        uint8_t *p = malloc(len ? len : 1);
        for (size_t i = 0; i < len; i++) p[i] = (uint8_t)rnd();
        if (len >= BW_PROTO_HEADER_SIZE && (iter & 1)) {
            /* a plausible header makes the body parsers run on random bytes */
            set32(p, 0, BW_PROTO_MAGIC);
            p[4] = 1, p[5] = 0;
            static const uint8_t types[] = {1, 2, 3, 4, 5, 6, 16, 17, 18};
            p[6] = types[rnd() % sizeof(types)], p[7] = 0;
            set32(p, 8, (uint32_t)(len - BW_PROTO_HEADER_SIZE));
            set32(p, 12, 0);
            memset(p + 48, 0, BW_PROTO_JOB_ID_MAX + 1);
            memcpy(p + 48, "job-r", 5);
        }
        if (bw_proto_decode(p, len, &out, err, sizeof(err)) == BW_PROTO_OK) accepted++;
        free(p);
    }
    printf("random bytes: 200000 inputs, %d happened to be valid\n", accepted);
}

/* The resume protocol: a NOT_TAKEN error names itself, and a SUBMIT that carries a resume point keeps it. */
static void test_resume_messages(void)
{
    bw_proto_msg m, out;
    char err[256];
    CHECK(strcmp(bw_proto_errcode_name(BW_PERR_NOT_TAKEN), "NOT_TAKEN") == 0);
    CHECK(strcmp(bw_proto_errcode_name(BW_PERR_REPLAY_GONE), "REPLAY_UNAVAILABLE") == 0);
    bw_proto_init(&m, BW_MSG_ERROR, 7, "job-r", 0);
    m.u.error = (bw_proto_error){.code = BW_PERR_NOT_TAKEN, .message = "draining", .message_len = 8};
    long len = bw_proto_encode(&m, buf, sizeof(buf));
    CHECK(len > 0 && bw_proto_decode(buf, (size_t)len, &out, err, sizeof(err)) == BW_PROTO_OK);
    CHECK(out.u.error.code == BW_PERR_NOT_TAKEN && out.h.epoch == 7);

    static const uint8_t resume_le[] = {5, 0, 0, 0, 6, 0, 0, 0};
    bw_proto_init(&m, BW_MSG_SUBMIT, 9, "job-r", 0);
    m.u.submit.flags = BW_SUBMIT_TEXT;
    m.u.submit.temperature = 0.8f, m.u.submit.top_p = 1, m.u.submit.repetition_penalty = 1;
    m.u.submit.max_tokens = 10, m.u.submit.seed = 42;
    m.u.submit.text = "hi", m.u.submit.text_len = 2;
    m.u.submit.resume_index = 2, m.u.submit.n_resume = 2, m.u.submit.resume_le = resume_le;
    len = bw_proto_encode(&m, buf, sizeof(buf));
    CHECK(len > 0 && bw_proto_decode(buf, (size_t)len, &out, err, sizeof(err)) == BW_PROTO_OK);
    CHECK(out.h.epoch == 9 && out.u.submit.resume_index == 2 && out.u.submit.n_resume == 2);
    CHECK(bw_proto_token_at(out.u.submit.resume_le, 1) == 6 && out.u.submit.seed == 42);
    m.u.submit.resume_index = 3; /* a resume index that disagrees with the tokens sent */
    len = bw_proto_encode(&m, buf, sizeof(buf));
    CHECK(len > 0 && bw_proto_decode(buf, (size_t)len, &out, err, sizeof(err)) == BW_PROTO_EINVAL);
    printf("resume messages: ok\n");
}

int main(void)
{
    test_round_trips();
    test_truncations_and_flips();
    test_hostile_headers();
    test_absurd_lengths();
    test_chat_messages();
    test_random_bytes();
    test_resume_messages();
    if (check_failed) {
        fprintf(stderr, "test_proto: %d failures\n", check_failed);
        return 1;
    }
    decode_exact(NULL, 0, &(bw_proto_msg){0}, NULL, 0); /* releases the last copy for LeakSanitizer */
    printf("test_proto: all passed\n");
    return 0;
}
