/* Writes one valid encoding of every message type into DIR (the seeds of corpus/proto). */
#include <stdio.h>
#include <string.h>

#include "proto/bw_proto.h"

static int put(const char *dir, const char *name, bw_proto_msg *m)
{
    uint8_t buf[4096];
    m->h.mono_ns = 123456789;
    m->h.real_ns = 1700000000000000000ull;
    long n = bw_proto_encode(m, buf, sizeof(buf));
    if (n < 0) {
        fprintf(stderr, "%s: %s\n", name, bw_proto_strerror((int)n));
        return 1;
    }
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, (size_t)n, f) != (size_t)n) return 1;
    return fclose(f) != 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: proto_seeds DIR\n");
        return 2;
    }
    const char *d = argv[1], *job = "job-0b7e2c1a-5f1e-4c2a-9d7b-3e8f6a1b2c3d";
    static const uint8_t toks[] = {1, 0, 0, 0, 0x39, 0x30, 0, 0, 0xff, 0xbf, 0, 0};
    int rc = 0;
    bw_proto_msg m;
    bw_proto_init(&m, BW_MSG_HELLO, 0x1122334455667788ull, NULL, 7);
    m.u.hello = (bw_proto_hello){.state = BW_ENGINE_READY,
                                 .progress = 1,
                                 .slots_total = 4,
                                 .slots_busy = 1,
                                 .queue_depth = 2,
                                 .n_ctx = 2048,
                                 .pid = 4242};
    strcpy(m.u.hello.model_id, "SmolLM2-135M-Instruct");
    strcpy(m.u.hello.backend, "cpu");
    strcpy(m.u.hello.arch, "llama");
    strcpy(m.u.hello.weight_types, "Q4_1,Q8_0,F32");
    rc |= put(d, "hello", &m);
    bw_proto_init(&m, BW_MSG_ACCEPTED, 1, job, 0);
    m.u.accepted = (bw_proto_accepted){.seed = 42, .n_prompt = 5, .first_index = 0};
    rc |= put(d, "accepted", &m);
    bw_proto_init(&m, BW_MSG_TOKEN, 1, job, 3);
    m.u.token = (bw_proto_token){.index = 2, .token_id = 1234, .text = " h\xc3\xa9llo", .text_len = 7};
    rc |= put(d, "token", &m);
    bw_proto_init(&m, BW_MSG_DONE, 1, job, 9);
    m.u.done = (bw_proto_done){.stop = BW_STOP_SEQUENCE,
                               .n_prompt = 5,
                               .n_generated = 7,
                               .prefill_ns = 1000,
                               .decode_ns = 99999,
                               .stop_matched = "END",
                               .stop_matched_len = 3,
                               .pred_drafted = 12,
                               .pred_accepted = 10,
                               .lookup_drafted = 4,
                               .lookup_accepted = 1};
    rc |= put(d, "done", &m);
    bw_proto_init(&m, BW_MSG_ERROR, 1, job, 4);
    m.u.error = (bw_proto_error){.code = BW_PERR_GENERATION, .message = "backend failed", .message_len = 14};
    rc |= put(d, "error", &m);
    bw_proto_init(&m, BW_MSG_BYE, 1, NULL, 99);
    rc |= put(d, "bye", &m);
    bw_proto_init(&m, BW_MSG_CANCEL, 0, job, 0);
    rc |= put(d, "cancel", &m);
    bw_proto_init(&m, BW_MSG_REPLAY, 1, job, 0);
    m.u.replay.from_seq = 5;
    rc |= put(d, "replay", &m);
    bw_proto_init(&m, BW_MSG_SUBMIT, 0, job, 0);
    bw_proto_submit *s = &m.u.submit;
    s->flags = BW_SUBMIT_TEXT | BW_SUBMIT_CHAT;
    s->temperature = 0.7f, s->top_p = 0.9f, s->min_p = 0.05f, s->repetition_penalty = 1.1f;
    s->top_k = 40, s->repeat_last_n = 64, s->seed = 7, s->max_tokens = 32;
    s->text = "Once upon a time", s->text_len = 16;
    s->n_stop = 2;
    s->stop[0].s = "\n\n", s->stop[0].len = 2;
    s->stop[1].s = "END", s->stop[1].len = 3;
    rc |= put(d, "submit_text", &m);
    s->flags |= BW_SUBMIT_PREDICTION, s->prediction = "Once upon a time there", s->prediction_len = 22;
    rc |= put(d, "submit_prediction", &m);
    s->flags &= ~BW_SUBMIT_PREDICTION, s->prediction = NULL, s->prediction_len = 0;
    s->flags = 0, s->text = NULL, s->text_len = 0, s->n_stop = 0;
    s->n_tokens = 3, s->tokens_le = toks;
    s->resume_index = 2, s->n_resume = 2, s->resume_le = toks;
    rc |= put(d, "submit_tokens_resume", &m);
    return rc;
}
