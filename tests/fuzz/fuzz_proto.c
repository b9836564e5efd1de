/* The engine ⇄ front decoder on hostile bytes (a peer on the ipc socket may be anything).
 *
 * Invariants: a refusal carries a reason; an accepted message points only into the input and re-encodes
 * to as many bytes; decoding and encoding are inverse on the encoder's output (the input itself may differ
 * in reserved bytes, which the decoder ignores). */
#include <string.h>

#include "fuzz.h"
#include "proto/bw_proto.h"

static const uint8_t *base;
static size_t base_len;

static void inside(const void *p, size_t n)
{
    if (n == 0) return;
    const uint8_t *b = p;
    FUZZ_CHECK(b >= base && n <= base_len && (size_t)(b - base) <= base_len - n, "field outside the input");
    volatile uint8_t x = b[0] ^ b[n - 1];
    (void)x;
}

static void check_fields(const bw_proto_msg *m)
{
    FUZZ_CHECK(memchr(m->h.job_id, 0, sizeof(m->h.job_id)) != NULL, "job id not terminated");
    FUZZ_CHECK(bw_proto_type_name(m->h.type) != NULL, "type without a name");
    switch (m->h.type) {
    case BW_MSG_HELLO:
        FUZZ_CHECK(memchr(m->u.hello.model_id, 0, sizeof(m->u.hello.model_id)) != NULL, "model id");
        FUZZ_CHECK(memchr(m->u.hello.backend, 0, sizeof(m->u.hello.backend)) != NULL, "backend");
        FUZZ_CHECK(m->u.hello.progress >= 0 && m->u.hello.progress <= 1, "progress");
        break;
    case BW_MSG_TOKEN:
        FUZZ_CHECK(m->u.token.text_len <= BW_PROTO_MAX_TEXT, "text limit");
        inside(m->u.token.text, m->u.token.text_len);
        break;
    case BW_MSG_DONE:
        FUZZ_CHECK(bw_stop_reason_name(m->u.done.stop) != NULL || m->u.done.stop == BW_STOP_NONE, "stop reason");
        inside(m->u.done.stop_matched, m->u.done.stop_matched_len);
        break;
    case BW_MSG_ERROR:
        FUZZ_CHECK(m->u.error.message_len <= BW_PROTO_MAX_ERRMSG, "message limit");
        inside(m->u.error.message, m->u.error.message_len);
        break;
    case BW_MSG_SUBMIT: {
        const bw_proto_submit *s = &m->u.submit;
        FUZZ_CHECK(!(s->flags & ~BW_SUBMIT_FLAGS_KNOWN), "unknown flags");
        FUZZ_CHECK(s->n_stop <= BW_PROTO_MAX_STOP, "stop count");
        inside(s->text, s->text_len);
        inside(s->tokens_le, (size_t)s->n_tokens * 4);
        inside(s->resume_le, (size_t)s->n_resume * 4);
        for (uint32_t i = 0; i < s->n_tokens; i++) (void)bw_proto_token_at(s->tokens_le, i);
        for (uint32_t i = 0; i < s->n_stop; i++) {
            FUZZ_CHECK(s->stop[i].len <= BW_PROTO_MAX_STOP_LEN, "stop length");
            inside(s->stop[i].s, s->stop[i].len);
        }
        break;
    }
    default: break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    base = data;
    base_len = size;
    bw_proto_msg m;
    char err[256] = "";
    int rc = bw_proto_decode(data, size, &m, err, sizeof(err));
    if (rc != BW_PROTO_OK) {
        FUZZ_CHECK(rc < 0 && bw_proto_strerror(rc) != NULL, "status %d", rc);
        FUZZ_CHECK(err[0] != '\0', "refused without a reason (%s)", bw_proto_strerror(rc));
        return 0;
    }
    check_fields(&m);
    size_t need = bw_proto_encoded_size(&m);
    FUZZ_CHECK(need == size, "a decoded message re-encodes to %zu bytes, not %zu", need, size);
    uint8_t *out = malloc(need ? need : 1), *again_out = malloc(need ? need : 1);
    long n = bw_proto_encode(&m, out, need);
    FUZZ_CHECK(n == (long)size, "re-encoding has %ld bytes, the input %zu", n, size);
    FUZZ_CHECK(bw_proto_encode(&m, out, need - 1) == BW_PROTO_ENOSPC || need == 0, "encode into a short buffer");
    n = bw_proto_encode(&m, out, need);
    /* reserved and padding bytes are ignored on input and written as zero, so the input may differ from
     * its re-encoding there; the re-encoding itself must be a fixed point */
    bw_proto_msg again;
    FUZZ_CHECK(bw_proto_decode(out, (size_t)n, &again, err, sizeof(err)) == BW_PROTO_OK, "re-decode: %s", err);
    FUZZ_CHECK(bw_proto_encode(&again, again_out, need) == n && memcmp(again_out, out, (size_t)n) == 0,
               "decode and encode are not inverse on an encoder's output");
    free(again_out);
    free(out);
    return 0;
}
