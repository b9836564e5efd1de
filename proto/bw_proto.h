/* The wire contract between beeworker-front and beeworker-engine (SPEC §2): every message, its binary
 * layout and its validation. Both processes use this header and nothing else encodes these messages.
 *
 * Layout: a fixed 96-byte little-endian header followed by a type-specific body. Every integer is read
 * and written byte by byte, so the format does not depend on the host's endianness or alignment. Decoded
 * variable-length fields (texts, token arrays) point into the caller's buffer and are valid as long as it
 * is; token arrays stay in wire order and are read with bw_proto_token_at().
 *
 * Owns: the byte format and the limits a decoder enforces. It does not know about sockets (nng), jobs or
 * HTTP; callers move the bytes. */
#ifndef BW_PROTO_H
#define BW_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define BW_PROTO_VERSION 2u        /* 2: HELLO carries the model's architecture and weight types */
#define BW_PROTO_MAGIC 0x31505742u /* "BWP1" read as little-endian */
#define BW_PROTO_HEADER_SIZE 96u

/* A job id is "job-<uuid>" (40 bytes); the field leaves room for ids chosen by other clients. */
#define BW_PROTO_JOB_ID_MAX 47u

/* Decoder limits: anything larger is rejected as hostile or corrupt before it is used. */
#define BW_PROTO_MAX_MSG (2u * 1024u * 1024u)
#define BW_PROTO_MAX_PROMPT_TEXT (256u * 1024u) /* 32768 characters of up to 4 UTF-8 bytes, and slack */
#define BW_PROTO_MAX_PROMPT_TOKENS 65536u
#define BW_PROTO_MAX_PREDICTION_TEXT (256u * 1024u)
#define BW_PROTO_MAX_TEXT 4096u /* one token's text delta (held-back stop-string text included) */
#define BW_PROTO_MAX_ERRMSG 1024u
#define BW_PROTO_MAX_NAME 127u /* model id, backend name */

/* A job's limits and defaults (SPEC §3.2), defined here once: the front validates requests against them,
 * the engine's command line takes the same ranges, and the decoder enforces the stop-string limits. */
#define BW_PROTO_MAX_STOP 4u            /* stop strings per job */
#define BW_PROTO_MAX_STOP_LEN 100u      /* bytes of one stop string */
#define BW_PROTO_PROMPT_MAX_CHARS 32768 /* characters (code points) of a prompt text */
#define BW_PROTO_MAX_TOKENS 2048        /* max_tokens of one job (the context may allow fewer) */
#define BW_PROTO_TEMPERATURE_MAX 2.0
#define BW_PROTO_REPETITION_PENALTY_MAX 2.0
#define BW_PROTO_TOP_K_MAX (1 << 20)
#define BW_PROTO_REPEAT_LAST_N 64 /* recent tokens the repetition penalty looks at */

enum bw_proto_type {
    /* engine → front (PUB/SUB) */
    BW_MSG_HELLO = 1,
    BW_MSG_ACCEPTED = 2,
    BW_MSG_TOKEN = 3,
    BW_MSG_DONE = 4,
    BW_MSG_ERROR = 5,
    BW_MSG_BYE = 6,
    /* front → engine (PUSH/PULL) */
    BW_MSG_SUBMIT = 16,
    BW_MSG_CANCEL = 17,
    BW_MSG_REPLAY = 18,
};
const char *bw_proto_type_name(uint16_t type);

enum bw_proto_engine_state { BW_ENGINE_LOADING = 0, BW_ENGINE_READY = 1, BW_ENGINE_DRAINING = 2 };
const char *bw_proto_state_name(uint8_t state); /* "loading", "ready", "draining" */

/* Why a job ended: decided by the engine (engine/generate.c), carried by DONE, named by the front in the
 * SSE `end` event. This is the only definition; both processes and the wire use these values. */
enum bw_stop_reason {
    BW_STOP_NONE = 0, /* the job goes on (never in a DONE) */
    BW_STOP_MAX_TOKENS = 1,
    BW_STOP_EOS = 2,
    BW_STOP_SEQUENCE = 3,
    BW_STOP_CANCELLED = 4,
    BW_STOP_ERROR = 5,
};
/* "MAX_TOKENS", "EOS", "STOP_SEQUENCE", "CANCELLED", "ERROR"; "NONE" for BW_STOP_NONE; NULL for a value
 * that is no stop reason (a decoder's check). */
const char *bw_stop_reason_name(int stop);

/* Error codes of ERROR messages; bw_proto_errcode_name gives the string the SSE `error` event carries. */
enum bw_proto_errcode {
    BW_PERR_GENERATION = 1,  /* GENERATION_ERROR: the backend or sampler failed */
    BW_PERR_BAD_REQUEST = 2, /* BAD_REQUEST: the submit could not be run (prompt too long, ...) */
    BW_PERR_QUEUE_FULL = 3,  /* QUEUE_FULL: the engine's queue is full */
    BW_PERR_SHUTDOWN = 4,    /* ENGINE_SHUTDOWN: the engine is exiting (SIGTERM) */
    BW_PERR_TOKENIZE = 5,    /* TOKENIZE_ERROR: the prompt text could not be tokenized/templated */
    BW_PERR_REPLAY_GONE = 6, /* REPLAY_UNAVAILABLE: the history asked for is no longer kept */
    /* NOT_TAKEN: a SUBMIT this engine will not run (it is draining, or the SUBMIT was addressed to another
     * epoch): the job never started here and the front submits it again elsewhere. Carries the engine's
     * epoch and seq 0; no history is kept for it. */
    BW_PERR_NOT_TAKEN = 7,
};
const char *bw_proto_errcode_name(uint16_t code);

/* Fields of the header. `seq` counts the messages of one job (ACCEPTED is 0, then TOKENs, then DONE or
 * ERROR); messages without a job (HELLO, BYE) count on the engine's own sequence. */
typedef struct {
    uint16_t version;
    uint16_t type;
    uint64_t epoch; /* engine epoch; 0 in front → engine messages that are not bound to one */
    uint64_t seq;
    uint64_t mono_ns;                     /* sender's CLOCK_MONOTONIC at encode */
    uint64_t real_ns;                     /* sender's CLOCK_REALTIME at encode (SSE ts_ns) */
    char job_id[BW_PROTO_JOB_ID_MAX + 1]; /* NUL-terminated, empty for HELLO/BYE */
} bw_proto_header;

typedef struct {
    uint8_t state;  /* enum bw_proto_engine_state */
    float progress; /* load progress in [0,1] */
    uint32_t slots_total;
    uint32_t slots_busy;
    uint32_t queue_depth;
    uint32_t n_ctx;
    uint32_t pid;
    char model_id[BW_PROTO_MAX_NAME + 1];
    char backend[BW_PROTO_MAX_NAME + 1];
    char arch[BW_PROTO_MAX_NAME + 1];         /* general.architecture: "llama", "qwen2", "gemma3", ... */
    char weight_types[BW_PROTO_MAX_NAME + 1]; /* the file's tensor types, most bytes first: "Q4_1,Q8_0,F32" */
} bw_proto_hello;

typedef struct {
    uint64_t seed;
    uint32_t n_prompt;   /* prompt tokens after tokenization */
    int32_t first_index; /* index of the first token this run produces (>0 on resume) */
} bw_proto_accepted;

typedef struct {
    int32_t index;
    int32_t token_id;
    const char *text; /* UTF-8, never ends inside a sequence; not NUL-terminated */
    uint32_t text_len;
} bw_proto_token;

typedef struct {
    uint8_t stop; /* enum bw_stop_reason */
    uint32_t n_prompt;
    uint32_t n_generated; /* tokens produced by this job, resumed ones included */
    uint64_t prefill_ns;
    uint64_t decode_ns;
    const char *stop_matched; /* for BW_STOP_SEQUENCE; not NUL-terminated */
    uint32_t stop_matched_len;
    /* speculative decoding in this run (resumed output not counted): draft tokens verified and accepted,
     * from the client's prediction and from prompt lookup */
    uint32_t pred_drafted, pred_accepted, lookup_drafted, lookup_accepted;
} bw_proto_done;

typedef struct {
    uint16_t code; /* enum bw_proto_errcode */
    const char *message;
    uint32_t message_len;
} bw_proto_error;

#define BW_SUBMIT_TEXT 0x1u        /* prompt is text (tokenized by the engine), else token ids */
#define BW_SUBMIT_CHAT 0x2u        /* text is a user message: apply the model's chat template */
#define BW_SUBMIT_NO_BOS 0x4u      /* text: do not add BOS even where the model wants it */
#define BW_SUBMIT_MESSAGES 0x8u    /* with CHAT: text is a conversation packed by bw_proto_chat_put */
#define BW_SUBMIT_PREDICTION 0x10u /* a predicted output text follows the stop strings (draft tokens) */
#define BW_SUBMIT_FLAGS_KNOWN 0x1fu

/* A conversation (BW_SUBMIT_MESSAGES) travels in the submit's text field as records
 * [u8 role][u32 length][length bytes], so a front that predates it sends the same bytes as before.
 * The decoder checks every record: known role, content without NUL, at most BW_PROTO_MAX_MESSAGES. */
#define BW_PROTO_MAX_MESSAGES 1024u
enum bw_proto_role { BW_ROLE_SYSTEM = 0, BW_ROLE_USER = 1, BW_ROLE_ASSISTANT = 2 };
const char *bw_proto_role_name(uint8_t role); /* "system", "user", "assistant"; NULL when unknown */
/* Writes one record at dst (NULL: only measures it) and returns its size. */
size_t bw_proto_chat_put(uint8_t *dst, uint8_t role, const char *content, uint32_t len);
/* Reads the record at *off of a packed conversation and advances *off past it. Returns 1 with a record,
 * 0 at the end, -1 when the bytes are not a well-formed record. */
int bw_proto_chat_next(const char *text, uint32_t text_len, uint32_t *off, uint8_t *role, const char **content,
                       uint32_t *len);

typedef struct {
    uint32_t flags;
    /* sampling (engine/sampler.h bw_sampler_params) */
    float temperature, top_p, min_p, repetition_penalty;
    int32_t top_k, repeat_last_n; /* repeat_last_n 0: the engine's default, BW_PROTO_REPEAT_LAST_N */
    uint64_t seed;
    int32_t max_tokens;
    /* resume: the job continues at output index resume_index; resume tokens are the ids it already
     * produced (n_resume == resume_index). 0/0 for a fresh job. */
    int32_t resume_index;
    uint32_t n_resume;
    const uint8_t *resume_le;
    /* prompt: text or token ids, per flags */
    const char *text;
    uint32_t text_len;
    uint32_t n_tokens;
    const uint8_t *tokens_le;
    uint32_t n_stop;
    struct {
        const char *s;
        uint32_t len;
    } stop[BW_PROTO_MAX_STOP];
    /* BW_SUBMIT_PREDICTION: the text the client expects the output to be (OpenAI "prediction"); it
     * only makes the job faster, never changes its tokens */
    const char *prediction;
    uint32_t prediction_len;
} bw_proto_submit;

typedef struct {
    uint64_t from_seq;
} bw_proto_replay;

typedef struct {
    bw_proto_header h;
    union {
        bw_proto_hello hello;
        bw_proto_accepted accepted;
        bw_proto_token token;
        bw_proto_done done;
        bw_proto_error error;
        bw_proto_submit submit;
        bw_proto_replay replay;
    } u;
} bw_proto_msg;

/* Error codes of the decoder (negative returns). */
enum bw_proto_status {
    BW_PROTO_OK = 0,
    BW_PROTO_ETRUNC = -1,   /* shorter than its header or its declared fields */
    BW_PROTO_EMAGIC = -2,   /* not a beeworker message */
    BW_PROTO_EVERSION = -3, /* another protocol version */
    BW_PROTO_ETYPE = -4,    /* unknown message type */
    BW_PROTO_ELIMIT = -5,   /* a length or count beyond the limits above */
    BW_PROTO_EINVAL = -6,   /* a field value that cannot be (bad state, NaN, trailing bytes, ...) */
    BW_PROTO_ENOSPC = -7,   /* encode: buffer too small */
};
const char *bw_proto_strerror(int status);

/* Zeroes m, sets version, type, epoch and seq, and copies job_id (NULL = none; truncated to the limit). */
void bw_proto_init(bw_proto_msg *m, uint16_t type, uint64_t epoch, const char *job_id, uint64_t seq);

/* The bytes bw_proto_encode will write for m, or 0 when m is not encodable (a field beyond a limit). */
size_t bw_proto_encoded_size(const bw_proto_msg *m);

/* Writes m into buf; returns the length, or a negative bw_proto_status. mono_ns/real_ns are written as
 * they are in m->h (the caller stamps them, so a replayed message keeps its original times). */
long bw_proto_encode(const bw_proto_msg *m, uint8_t *buf, size_t cap);

/* Parses len bytes. Returns BW_PROTO_OK or a negative status, with a one-line reason in err (may be NULL).
 * Pointers in *m refer into buf. */
int bw_proto_decode(const uint8_t *buf, size_t len, bw_proto_msg *m, char *err, size_t errlen);

/* Reads element i of a token array in wire order (tokens_le / resume_le). */
int32_t bw_proto_token_at(const uint8_t *le, uint32_t i);

#endif
