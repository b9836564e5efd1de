/* beeworker-engine: command-line entry point.
 *
 * Modes: --generate (prints each token the moment it is sampled), --tokenize / --detokenize, --bench,
 * and the daemon (--rundir: serves the front over nng). This file parses flags and drives the modes;
 * the work happens in the modules it calls. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <math.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/opts.h"
#include "engine/chat.h"
#include "engine/detok.h"
#include "engine/generate.h"
#include "engine/loader.h"
#include "engine/prompt.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "engine/tokenizer.h"

#if __has_include("engine/daemon.h")
#include "engine/daemon.h"
#define BW_HAVE_DAEMON 1
#endif

enum mode { MODE_NONE, MODE_GENERATE, MODE_TOKENIZE, MODE_DETOKENIZE, MODE_BENCH };

typedef struct {
    bw_engine_opts eng;
    enum mode mode;
    const char *prompt;
    const char *prompt_file;
    const char *system;
    int chat, json, special, add_bos; /* add_bos: -1 = model default */
    int top_logits;
    const char *dump_logits;
    bw_gen_params gen;
    int seed_set;
    int bench_p, bench_n, bench_reps, bench_d;
    float drain_s;
} cli;

#define SPEC_MAX_DEFAULT 15 /* a job and 15 drafts fill the CPU kernels' 16-token tile */
#define PROG "beeworker-engine"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: beeworker-engine --model PATH [options] MODE\n"
            "\n"
            "Modes:\n"
            "  --rundir DIR          serve the front over ipc sockets in DIR (the daemon; default mode)\n"
            "  --drain SECONDS       daemon: on SIGTERM finish running jobs for up to SECONDS while new jobs\n"
            "                        wait in the front for the next engine (default 0: stop at once)\n"
            "  --prefill-step-ms MS  daemon: while other jobs decode, feed a new prompt in chunks of about MS\n"
            "                        of work per step, so their tokens keep flowing (default 50; 0: whole\n"
            "                        --batch chunks)\n"
            "  --spec-max N          speculative decoding: verify up to N draft tokens per job and step\n"
            "                        (prompt lookup and the job's predicted output; the tokens are exactly\n"
            "                        those of plain decoding); 0..%d, 0 = off (default %d). Each job sends\n"
            "                        the part of its draft that pays, from its measured acceptance and the\n"
            "                        measured cost of a step's tokens\n"
            "  --spec-fixed          send every draft whole, up to --spec-max (tests, measurements)\n"
            "  --generate            generate from --prompt and print each token as it is sampled\n"
            "  --generate --prompt-file FILE\n"
            "                        run every job of FILE (JSON lines: prompt, chat, max_tokens, temperature,\n"
            "                        top_p, top_k, min_p, seed, stop, prediction) through the daemon's\n"
            "                        scheduler, --slots at a time; one JSON line per job, in file order\n"
            "  --tokenize            read text on stdin, print a JSON array of token ids\n"
            "  --detokenize          read a JSON array of token ids on stdin, print the text\n"
            "  --bench               prefill and decode tokens/s (like llama-bench pp/tg)\n"
            "\n"
            "Engine:\n"
            "  --model PATH          GGUF model file (llama family)\n"
            "  --backend auto|cpu|cuda  compute backend (default auto: cuda if built in and a GPU is visible)\n"
            "  --device N            GPU ordinal (default 0)\n"
            "  --threads N, -t N     CPU threads (default: all online CPUs)\n"
            "  --slots N             concurrent sequences (default 4 on the CPU, 64 on a GPU)\n"
            "  --ctx N               context per sequence (default: the model's, at most 4096)\n"
            "  --batch N             prefill chunk in tokens (default 512)\n"
            "\n"
            "Generation (--generate):\n"
            "  --prompt TEXT         the prompt\n"
            "  --chat                wrap the prompt in the model's chat template (user message)\n"
            "  --system TEXT         system message for --chat\n"
            "  --special             parse special-token text in the prompt (implied by --chat)\n"
            "  --max-tokens N        1..2048 (default 128)\n"
            "  --temperature T       0..2, 0 = greedy (default 1.0)\n"
            "  --top-p P --top-k K --min-p P --repeat-penalty R --seed S\n"
            "  --stop STR            stop string (up to 4)\n"
            "  --json                one JSON line per token, then a summary line\n"
            "  --top-logits K        with --json: the K best logits of every step\n"
            "  --dump-logits FILE    write the first step's logits (float32) to FILE\n"
            "\n"
            "Tokenizer (--tokenize):\n"
            "  --no-special          treat special-token text as plain text (default: parsed)\n"
            "  --bos / --no-bos      override the model's add-BOS default\n"
            "\n"
            "Benchmark (--bench):\n"
            "  -p N                  prompt tokens (default 512)\n"
            "  -n N                  generated tokens (default 128)\n"
            "  -r N                  repetitions (default 3)\n"
            "  -d N                  measure both after a context of N tokens (default 0; like llama-bench -d)\n"
            "\n"
            "  --help, --version\n",
            BW_SCHED_SPEC_MAX, SPEC_MAX_DEFAULT);
}

static int parse_args(int argc, char **argv, cli *c)
{
    enum {
        O_MODEL = 256,
        O_BACKEND,
        O_DEVICE,
        O_SLOTS,
        O_CTX,
        O_BATCH,
        O_RUNDIR,
        O_GENERATE,
        O_TOKENIZE,
        O_DETOKENIZE,
        O_BENCH,
        O_PROMPT,
        O_SYSTEM,
        O_CHAT,
        O_SPECIAL,
        O_NOSPECIAL,
        O_BOS,
        O_NOBOS,
        O_MAXTOK,
        O_TEMP,
        O_TOPP,
        O_TOPK,
        O_MINP,
        O_REPPEN,
        O_SEED,
        O_STOP,
        O_JSON,
        O_TOPLOG,
        O_DUMP,
        O_HELP,
        O_VERSION,
        O_DRAIN,
        O_PREFILL_MS,
        O_SPEC_MAX,
        O_PROMPT_FILE,
        O_SPEC_FIXED,
    };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},
        {"backend", required_argument, 0, O_BACKEND},
        {"device", required_argument, 0, O_DEVICE},
        {"threads", required_argument, 0, 't'},
        {"slots", required_argument, 0, O_SLOTS},
        {"ctx", required_argument, 0, O_CTX},
        {"batch", required_argument, 0, O_BATCH},
        {"rundir", required_argument, 0, O_RUNDIR},
        {"generate", no_argument, 0, O_GENERATE},
        {"tokenize", no_argument, 0, O_TOKENIZE},
        {"detokenize", no_argument, 0, O_DETOKENIZE},
        {"bench", no_argument, 0, O_BENCH},
        {"prompt", required_argument, 0, O_PROMPT},
        {"system", required_argument, 0, O_SYSTEM},
        {"chat", no_argument, 0, O_CHAT},
        {"special", no_argument, 0, O_SPECIAL},
        {"no-special", no_argument, 0, O_NOSPECIAL},
        {"bos", no_argument, 0, O_BOS},
        {"no-bos", no_argument, 0, O_NOBOS},
        {"max-tokens", required_argument, 0, O_MAXTOK},
        {"temperature", required_argument, 0, O_TEMP},
        {"top-p", required_argument, 0, O_TOPP},
        {"top-k", required_argument, 0, O_TOPK},
        {"min-p", required_argument, 0, O_MINP},
        {"repeat-penalty", required_argument, 0, O_REPPEN},
        {"seed", required_argument, 0, O_SEED},
        {"stop", required_argument, 0, O_STOP},
        {"json", no_argument, 0, O_JSON},
        {"top-logits", required_argument, 0, O_TOPLOG},
        {"dump-logits", required_argument, 0, O_DUMP},
        {"help", no_argument, 0, O_HELP},
        {"version", no_argument, 0, O_VERSION},
        {"drain", required_argument, 0, O_DRAIN},
        {"prefill-step-ms", required_argument, 0, O_PREFILL_MS},
        {"spec-max", required_argument, 0, O_SPEC_MAX},
        {"prompt-file", required_argument, 0, O_PROMPT_FILE},
        {"spec-fixed", no_argument, 0, O_SPEC_FIXED},
        {0, 0, 0, 0},
    };
    int o;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "t:p:n:r:d:", opts, NULL)) != -1) {
        switch (o) {
        case O_MODEL: c->eng.model_path = optarg; break;
        case O_BACKEND:
            if (bw_opt_backend(PROG, optarg)) return -1;
            c->eng.backend = optarg;
            break;
        case O_DEVICE:
            if (bw_opt_int(PROG, "--device", optarg, 0, BW_OPT_DEVICE_MAX, &c->eng.device)) return -1;
            break;
        case 't':
            if (bw_opt_int(PROG, "--threads", optarg, 1, BW_OPT_THREADS_MAX, &c->eng.n_threads)) return -1;
            break;
        case O_SLOTS:
            if (bw_opt_int(PROG, "--slots", optarg, 1, BW_OPT_SLOTS_MAX, &c->eng.n_slots)) return -1;
            break;
        case O_CTX:
            if (bw_opt_int(PROG, "--ctx", optarg, BW_OPT_CTX_MIN, BW_OPT_CTX_MAX, &c->eng.n_ctx)) return -1;
            break;
        case O_BATCH:
            if (bw_opt_int(PROG, "--batch", optarg, 1, 8192, &c->eng.max_batch)) return -1;
            break;
        case O_RUNDIR: c->eng.rundir = optarg; break;
        case O_DRAIN:
            if (bw_opt_float(PROG, "--drain", optarg, 0, 86400, &c->drain_s)) return -1;
            break;
        case O_PREFILL_MS: {
            float ms;
            if (bw_opt_float(PROG, "--prefill-step-ms", optarg, 0, 60000, &ms)) return -1;
            c->eng.prefill_step_ms = ms;
            break;
        }
        case O_SPEC_MAX:
            if (bw_opt_int(PROG, "--spec-max", optarg, 0, BW_OPT_SPEC_MAX, &c->eng.spec_max)) return -1;
            break;
        case O_PROMPT_FILE: c->prompt_file = optarg; break;
        case O_SPEC_FIXED: c->eng.spec_fixed = 1; break;
        case O_GENERATE: c->mode = MODE_GENERATE; break;
        case O_TOKENIZE: c->mode = MODE_TOKENIZE; break;
        case O_DETOKENIZE: c->mode = MODE_DETOKENIZE; break;
        case O_BENCH: c->mode = MODE_BENCH; break;
        case O_PROMPT: c->prompt = optarg; break;
        case O_SYSTEM: c->system = optarg; break;
        case O_CHAT: c->chat = 1; break;
        case O_SPECIAL: c->special = 1; break;
        case O_NOSPECIAL: c->special = 0; break;
        case O_BOS: c->add_bos = 1; break;
        case O_NOBOS: c->add_bos = 0; break;
        case O_MAXTOK:
            if (bw_opt_int(PROG, "--max-tokens", optarg, 1, BW_PROTO_MAX_TOKENS, &c->gen.max_tokens)) return -1;
            break;
        case O_TEMP:
            if (bw_opt_float(PROG, "--temperature", optarg, 0, BW_PROTO_TEMPERATURE_MAX, &c->gen.sampling.temperature))
                return -1;
            break;
        case O_TOPP:
            if (bw_opt_float(PROG, "--top-p", optarg, 0, 1, &c->gen.sampling.top_p)) return -1;
            break;
        case O_TOPK:
            if (bw_opt_int(PROG, "--top-k", optarg, 0, BW_PROTO_TOP_K_MAX, &c->gen.sampling.top_k)) return -1;
            break;
        case O_MINP:
            if (bw_opt_float(PROG, "--min-p", optarg, 0, 1, &c->gen.sampling.min_p)) return -1;
            break;
        case O_REPPEN:
            if (bw_opt_float(PROG, "--repeat-penalty", optarg, 0, BW_PROTO_REPETITION_PENALTY_MAX,
                             &c->gen.sampling.repetition_penalty))
                return -1;
            break;
        case O_SEED:
            if (bw_opt_u64(PROG, "--seed", optarg, &c->gen.sampling.seed)) return -1;
            c->seed_set = 1;
            break;
        case O_STOP:
            if (c->gen.n_stop >= (int)BW_PROTO_MAX_STOP || !optarg[0] || strlen(optarg) > BW_PROTO_MAX_STOP_LEN) {
                fprintf(stderr, "beeworker-engine: --stop takes up to %u strings of 1..%u bytes\n", BW_PROTO_MAX_STOP,
                        BW_PROTO_MAX_STOP_LEN);
                return -1;
            }
            strcpy(c->gen.stop[c->gen.n_stop++], optarg);
            break;
        case O_JSON: c->json = 1; break;
        case O_TOPLOG:
            if (bw_opt_int(PROG, "--top-logits", optarg, 0, 100, &c->top_logits)) return -1;
            break;
        case O_DUMP: c->dump_logits = optarg; break;
        case 'p':
            if (bw_opt_int(PROG, "-p", optarg, 1, 1 << 16, &c->bench_p)) return -1;
            break;
        case 'n':
            if (bw_opt_int(PROG, "-n", optarg, 1, 1 << 16, &c->bench_n)) return -1;
            break;
        case 'r':
            if (bw_opt_int(PROG, "-r", optarg, 1, 1000, &c->bench_reps)) return -1;
            break;
        case 'd':
            if (bw_opt_int(PROG, "-d", optarg, 0, 1 << 20, &c->bench_d)) return -1;
            break;
        case O_HELP: usage(stdout); exit(0);
        case O_VERSION: printf("beeworker-engine %s\n", BW_VERSION); exit(0);
        default: bw_opt_bad_flag(PROG, argv[optind - 1]); return -1;
        }
    }
    if (optind < argc) {
        bw_opt_unexpected(PROG, argv[optind]);
        return -1;
    }
    if (!c->eng.model_path) {
        fprintf(stderr, "beeworker-engine: --model PATH is required (see --help)\n");
        return -1;
    }
    if (c->mode == MODE_GENERATE && !c->prompt == !c->prompt_file) {
        fprintf(stderr, "beeworker-engine: --generate needs --prompt TEXT or --prompt-file FILE\n");
        return -1;
    }
    if (c->mode == MODE_NONE && !c->eng.rundir) {
        fprintf(stderr,
                "beeworker-engine: choose a mode: --rundir DIR, --generate, --tokenize, --detokenize or --bench\n");
        return -1;
    }
    return 0;
}

/* ---- --tokenize / --detokenize ---- */

static char *read_stdin(size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) return NULL;
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, stdin)) > 0) {
        n += r;
        if (n == cap) {
            if (cap >= (size_t)64 << 20) break; /* 64 MiB is far past any prompt */
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int run_tokenize(const bw_tok *tok, const cli *c)
{
    size_t len;
    char *text = read_stdin(&len);
    if (!text) return 1;
    bw_prompt_ctx pc = {tok, BW_CHAT_UNKNOWN, NULL, 0};
    bw_prompt_req req = {.text = text, .text_len = len, .add_bos = c->add_bos, .parse_special = c->special};
    char err[256];
    size_t n = 0;
    int32_t *ids = len ? bw_prompt_encode(&pc, &req, 0, &n, err, sizeof err) : malloc(sizeof *ids);
    free(text);
    if (!ids) {
        fprintf(stderr, "beeworker-engine: %s\n", err);
        return 1;
    }
    if (!len && (c->add_bos >= 0 ? c->add_bos : bw_tok_add_bos(tok))) ids[n++] = bw_tok_bos(tok);
    putchar('[');
    for (size_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
    puts("]");
    free(ids);
    return 0;
}

static int run_detokenize(const bw_tok *tok)
{
    size_t len;
    char *text = read_stdin(&len);
    if (!text) return 1;
    json_error_t jerr;
    json_t *arr = json_loadb(text, len, 0, &jerr);
    free(text);
    if (!json_is_array(arr)) {
        fprintf(stderr, "beeworker-engine: --detokenize wants a JSON array of token ids on stdin\n");
        json_decref(arr);
        return 1;
    }
    bw_detok d;
    bw_detok_init(&d);
    char buf[512];
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        json_int_t id = json_integer_value(v);
        if (!json_is_integer(v) || id < 0 || id >= bw_tok_n_vocab(tok)) {
            fprintf(stderr, "beeworker-engine: element %zu is not a token id in 0..%d\n", i, bw_tok_n_vocab(tok) - 1);
            json_decref(arr);
            return 1;
        }
        int n = bw_detok_push(&d, tok, (int32_t)id, buf, sizeof buf);
        if (n > 0) fwrite(buf, 1, (size_t)n, stdout);
    }
    int n = bw_detok_flush(&d, buf, sizeof buf);
    if (n > 0) fwrite(buf, 1, (size_t)n, stdout);
    json_decref(arr);
    return 0;
}

/* ---- --generate ---- */

static void print_top_logits(const float *logits, int n_vocab, int k)
{
    int best[100];
    for (int j = 0; j < k; j++) best[j] = -1;
    for (int i = 0; i < n_vocab; i++) {
        for (int j = 0; j < k; j++) {
            if (best[j] < 0 || logits[i] > logits[best[j]]) {
                memmove(&best[j + 1], &best[j], (size_t)(k - j - 1) * sizeof *best);
                best[j] = i;
                break;
            }
        }
    }
    fputs(",\"top\":[", stdout);
    for (int j = 0; j < k; j++) printf(j ? ",[%d,%.6g]" : "[%d,%.6g]", best[j], (double)logits[best[j]]);
    putchar(']');
}

static void print_json_text(const char *s, size_t n)
{
    json_t *str = json_stringn(s, n);
    char *enc = str ? json_dumps(str, JSON_ENCODE_ANY) : NULL;
    fputs(enc ? enc : "\"\"", stdout);
    free(enc);
    json_decref(str);
}

static int32_t *build_prompt(const bw_engine *e, const cli *c, int32_t *n, char *err, size_t errlen)
{
    bw_gguf_str tmpl = {0, NULL};
    bw_gguf_get_str(e->gguf, "tokenizer.chat_template", &tmpl);
    bw_prompt_ctx pc = {e->tok, bw_prompt_chat_kind(e->tok, tmpl.str, tmpl.len), tmpl.str, tmpl.len};
    bw_chat_msg msgs[2];
    size_t nm = 0;
    if (c->system) msgs[nm++] = (bw_chat_msg){"system", c->system};
    msgs[nm++] = (bw_chat_msg){"user", c->prompt};
    bw_prompt_req req = {
        .text = c->prompt,
        .text_len = strlen(c->prompt),
        .msgs = c->chat ? msgs : NULL,
        .n_msgs = nm,
        .add_bos = c->add_bos,
        .parse_special = c->special,
    };
    size_t count = 0;
    int32_t *ids = bw_prompt_encode(&pc, &req, 0, &count, err, errlen);
    *n = (int32_t)count;
    return ids;
}

static int dump_logits(const char *path, const float *logits, int n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(logits, sizeof *logits, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "beeworker-engine: cannot write %s: %s\n", path, strerror(errno));
        if (f) fclose(f);
        return -1;
    }
    return fclose(f);
}

static int run_generate(bw_engine *e, cli *c)
{
    char err[256];
    int32_t n_prompt;
    int32_t *prompt = build_prompt(e, c, &n_prompt, err, sizeof err);
    if (!prompt) {
        fprintf(stderr, "beeworker-engine: %s\n", err);
        return 1;
    }
    if (n_prompt + c->gen.max_tokens > e->n_ctx) {
        fprintf(stderr, "beeworker-engine: prompt (%d tokens) + --max-tokens %d exceed the context of %d\n", n_prompt,
                c->gen.max_tokens, e->n_ctx);
        free(prompt);
        return 1;
    }
    if (!c->seed_set) c->gen.sampling.seed = bw_clock_real_ns() ^ ((uint64_t)getpid() << 32);
    const int nv = e->model.cfg.n_vocab;
    float *logits = malloc((size_t)nv * sizeof *logits);
    int32_t *pos = malloc((size_t)n_prompt * sizeof *pos), *slot = calloc((size_t)n_prompt, sizeof *slot);
    uint8_t *want = calloc((size_t)n_prompt, 1);
    bw_sampler *s = bw_sampler_create(nv);
    bw_gen *g = bw_gen_create(e->tok, &c->gen, prompt, (size_t)n_prompt, 0);
    int rc = 1;
    if (!logits || !pos || !slot || !want || !s || !g) {
        fprintf(stderr, "beeworker-engine: out of memory\n");
        goto out;
    }
    for (int32_t i = 0; i < n_prompt; i++) pos[i] = i;
    want[n_prompt - 1] = 1;

    uint64_t t0 = bw_clock_mono_ns();
    bw_batch b = {n_prompt, prompt, pos, slot, want};
    if (bw_backend_forward(e->backend, &b, logits)) {
        fprintf(stderr, "beeworker-engine: forward pass failed\n");
        goto out;
    }
    uint64_t t1 = bw_clock_mono_ns();
    if (c->dump_logits && dump_logits(c->dump_logits, logits, nv)) goto out;

    bw_gen_token tk;
    int32_t cur_pos = n_prompt, n_out = 0;
    for (;;) {
        if (c->json && c->top_logits > 0) {
            /* the top logits are those the sampler sees, before any penalty changes them */
            printf("{\"i\":%d", n_out);
            print_top_logits(logits, nv, c->top_logits);
        }
        if (bw_gen_next(g, s, logits, &tk)) {
            fprintf(stderr, "beeworker-engine: out of memory\n");
            goto out;
        }
        n_out++;
        if (c->json) {
            if (c->top_logits <= 0) printf("{\"i\":%d", tk.index);
            printf(",\"id\":%d,\"t\":", tk.id);
            print_json_text(tk.text, tk.text_len);
            printf(",\"ts_ns\":%llu}\n", (unsigned long long)bw_clock_real_ns());
        } else {
            fwrite(tk.text, 1, tk.text_len, stdout);
        }
        fflush(stdout);
        if (tk.stop != BW_STOP_NONE) break;
        int32_t one_pos = cur_pos++, one_slot = 0;
        uint8_t one_want = 1;
        bw_batch d = {1, &tk.id, &one_pos, &one_slot, &one_want};
        if (bw_backend_forward(e->backend, &d, logits)) {
            fprintf(stderr, "beeworker-engine: forward pass failed\n");
            goto out;
        }
    }
    uint64_t t2 = bw_clock_mono_ns();
    double prefill_ms = (double)(t1 - t0) / 1e6, decode_ms = (double)(t2 - t1) / 1e6;
    /* n_out tokens were sampled, n_out - 1 of them needed a decode step */
    double tps = n_out > 1 ? (n_out - 1) / ((double)(t2 - t1) / 1e9) : 0.0;
    if (c->json) {
        printf("{\"done\":true,\"stop_reason\":\"%s\",", bw_stop_reason_name(tk.stop));
        if (tk.stop == BW_STOP_SEQUENCE) {
            fputs("\"stop_sequence_matched\":", stdout);
            print_json_text(tk.stop_matched, strlen(tk.stop_matched));
            putchar(',');
        }
        fputs("\"prompt_ids\":[", stdout);
        for (int32_t i = 0; i < n_prompt; i++) printf(i ? ",%d" : "%d", prompt[i]);
        fputs("],", stdout);
        printf("\"prompt_tokens\":%d,\"tokens_out\":%d,\"seed\":%llu,\"prefill_ms\":%.3f,\"decode_ms\":%.3f,"
               "\"decode_tps\":%.2f}\n",
               n_prompt, n_out, (unsigned long long)c->gen.sampling.seed, prefill_ms, decode_ms, tps);
    } else {
        putchar('\n');
        fprintf(stderr, "\n[%s] prompt %d tokens in %.1f ms, %d tokens out, %.1f tokens/s\n",
                bw_stop_reason_name(tk.stop), n_prompt, prefill_ms, n_out, tps);
    }
    rc = 0;
out:
    bw_gen_free(g);
    bw_sampler_free(s);
    free(logits);
    free(pos);
    free(slot);
    free(want);
    free(prompt);
    return rc;
}

/* ---- --generate --prompt-file: many jobs through the scheduler ---- */

typedef struct {
    json_t *line; /* the job's request */
    json_t *ids;  /* token ids received */
    char *out;    /* text received */
    size_t n_out;
    json_t *done; /* the DONE or ERROR, as JSON */
} file_job;

typedef struct {
    file_job *jobs;
    size_t n;
    size_t n_done;
} file_run;

static void file_publish(void *ctx, const uint8_t *buf, size_t len)
{
    file_run *r = ctx;
    bw_proto_msg m;
    if (bw_proto_decode(buf, len, &m, NULL, 0) != BW_PROTO_OK) return;
    char *end;
    unsigned long i = strtoul(m.h.job_id + 1, &end, 10);
    if (m.h.job_id[0] != 'p' || *end || i >= r->n) return;
    file_job *j = &r->jobs[i];
    if (m.h.type == BW_MSG_TOKEN) {
        json_array_append_new(j->ids, json_integer(m.u.token.token_id));
        char *o = realloc(j->out, j->n_out + m.u.token.text_len + 1);
        if (!o) return;
        memcpy(o + j->n_out, m.u.token.text, m.u.token.text_len);
        j->out = o;
        j->n_out += m.u.token.text_len;
    } else if (m.h.type == BW_MSG_DONE) {
        const bw_proto_done *x = &m.u.done;
        j->done =
            json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i}", "stop_reason", bw_stop_reason_name(x->stop), "tokens_out",
                      (json_int_t)x->n_generated, "prompt_tokens", (json_int_t)x->n_prompt, "pred_drafted",
                      (json_int_t)x->pred_drafted, "pred_accepted", (json_int_t)x->pred_accepted, "lookup_drafted",
                      (json_int_t)x->lookup_drafted, "lookup_accepted", (json_int_t)x->lookup_accepted);
        if (j->done && x->stop_matched_len)
            json_object_set_new(j->done, "stop_sequence_matched", json_stringn(x->stop_matched, x->stop_matched_len));
        r->n_done++;
    } else if (m.h.type == BW_MSG_ERROR) {
        j->done = json_pack("{s:s, s:s%}", "stop_reason", "ERROR", "message", m.u.error.message,
                            (size_t)m.u.error.message_len);
        r->n_done++;
    }
}

/* The SUBMIT for one line of the prompt file; strings point into the line. Returns a reason on error. */
static const char *file_submit(json_t *line, const cli *c, bw_proto_msg *m, const char *id)
{
    bw_proto_init(m, BW_MSG_SUBMIT, 0, id, 0);
    bw_proto_submit *x = &m->u.submit;
    json_t *prompt = json_object_get(line, "prompt"), *v;
    if (!json_is_string(prompt) || json_string_length(prompt) == 0) return "prompt must be a non-empty string";
    x->flags = BW_SUBMIT_TEXT | (json_is_true(json_object_get(line, "chat")) ? BW_SUBMIT_CHAT : 0);
    x->text = json_string_value(prompt);
    x->text_len = (uint32_t)json_string_length(prompt);
    const bw_sampler_params *d = &c->gen.sampling;
    x->temperature = d->temperature;
    x->top_p = d->top_p;
    x->top_k = d->top_k;
    x->min_p = d->min_p;
    x->repetition_penalty = d->repetition_penalty;
    x->repeat_last_n = d->repeat_last_n;
    x->seed = d->seed;
    x->max_tokens = c->gen.max_tokens;
    if ((v = json_object_get(line, "temperature"))) x->temperature = (float)json_number_value(v);
    if ((v = json_object_get(line, "top_p"))) x->top_p = (float)json_number_value(v);
    if ((v = json_object_get(line, "min_p"))) x->min_p = (float)json_number_value(v);
    if ((v = json_object_get(line, "repetition_penalty"))) x->repetition_penalty = (float)json_number_value(v);
    if ((v = json_object_get(line, "top_k"))) x->top_k = (int32_t)json_integer_value(v);
    if ((v = json_object_get(line, "seed"))) x->seed = (uint64_t)json_integer_value(v);
    if ((v = json_object_get(line, "max_tokens"))) x->max_tokens = (int32_t)json_integer_value(v);
    if (!(x->temperature >= 0 && x->temperature <= BW_PROTO_TEMPERATURE_MAX) || !(x->top_p >= 0 && x->top_p <= 1) ||
        !(x->min_p >= 0 && x->min_p <= 1) ||
        !(x->repetition_penalty >= 0 && x->repetition_penalty <= BW_PROTO_REPETITION_PENALTY_MAX) || x->top_k < 0 ||
        x->max_tokens < 1 || x->max_tokens > BW_PROTO_MAX_TOKENS)
        return "a sampling value is out of range";
    json_t *stop = json_object_get(line, "stop");
    size_t k;
    json_array_foreach(stop, k, v)
    {
        if (k >= BW_PROTO_MAX_STOP || !json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) > BW_PROTO_MAX_STOP_LEN)
            return "stop must be up to 4 strings of 1..100 bytes";
        x->stop[k].s = json_string_value(v);
        x->stop[k].len = (uint32_t)json_string_length(v);
        x->n_stop = (uint32_t)k + 1;
    }
    json_t *pred = json_object_get(line, "prediction");
    if (pred) {
        if (!json_is_string(pred)) return "prediction must be a string";
        x->flags |= BW_SUBMIT_PREDICTION;
        x->prediction = json_string_value(pred);
        x->prediction_len = (uint32_t)json_string_length(pred);
    }
    return NULL;
}

static int run_prompt_file(bw_engine *e, cli *c)
{
    FILE *f = fopen(c->prompt_file, "r");
    if (!f) {
        fprintf(stderr, "beeworker-engine: cannot open %s: %s\n", c->prompt_file, strerror(errno));
        return 1;
    }
    file_run r = {0};
    int rc = 1;
    char *buf = NULL;
    size_t cap = 0;
    bw_sched *sched = NULL;
    for (ssize_t got; (got = getline(&buf, &cap, f)) > 0;) {
        if (got <= 1) continue;
        json_error_t jerr;
        json_t *line = json_loadb(buf, (size_t)got, 0, &jerr);
        file_job *nj = realloc(r.jobs, (r.n + 1) * sizeof(*nj));
        if (!json_is_object(line) || !nj) {
            fprintf(stderr, "beeworker-engine: %s: line %zu is not a JSON object\n", c->prompt_file, r.n + 1);
            json_decref(line);
            if (nj) r.jobs = nj;
            goto out;
        }
        r.jobs = nj;
        r.jobs[r.n++] = (file_job){line, json_array(), NULL, 0, NULL};
    }
    char err[256];
    sched = bw_sched_create(e, 1, file_publish, &r, err, sizeof(err));
    if (!sched || bw_sched_set_spec_max(sched, c->eng.spec_max) != 0) {
        fprintf(stderr, "beeworker-engine: %s\n", sched ? "out of memory" : err);
        goto out;
    }
    bw_sched_set_spec_fixed(sched, c->eng.spec_fixed);
    if (c->eng.prefill_step_ms >= 0) bw_sched_set_prefill_step_ms(sched, c->eng.prefill_step_ms);
    for (size_t i = 0; i < r.n; i++) {
        char id[24];
        snprintf(id, sizeof(id), "p%zu", i);
        bw_proto_msg m;
        const char *why = file_submit(r.jobs[i].line, c, &m, id);
        if (why) {
            fprintf(stderr, "beeworker-engine: %s: line %zu: %s\n", c->prompt_file, i + 1, why);
            goto out;
        }
        bw_sched_submit(sched, &m);
    }
    const uint64_t t0 = bw_clock_mono_ns();
    while (r.n_done < r.n) {
        int active = bw_sched_step(sched);
        if (active < 0) break;
        if (active == 0 && r.n_done < r.n) break; /* a job that never ends here is a bug: report it below */
    }
    const double secs = (double)(bw_clock_mono_ns() - t0) / 1e9;
    size_t total = 0;
    for (size_t i = 0; i < r.n; i++) {
        file_job *j = &r.jobs[i];
        json_t *o = j->done ? json_deep_copy(j->done) : json_pack("{s:s}", "stop_reason", "UNFINISHED");
        json_object_set_new(o, "i", json_integer((json_int_t)i));
        json_object_set(o, "ids", j->ids);
        json_object_set_new(o, "text", json_stringn(j->out ? j->out : "", j->n_out));
        char *enc = json_dumps(o, JSON_COMPACT);
        if (enc) puts(enc);
        free(enc);
        json_decref(o);
        total += json_array_size(j->ids);
    }
    bw_sched_spec sp;
    bw_sched_spec_stats(sched, &sp);
    printf("{\"done\":true,\"jobs\":%zu,\"finished\":%zu,\"tokens\":%zu,\"seconds\":%.3f,\"tps\":%.2f,"
           "\"pred_drafted\":%llu,\"pred_accepted\":%llu,\"lookup_drafted\":%llu,\"lookup_accepted\":%llu}\n",
           r.n, r.n_done, total, secs, secs > 0 ? (double)total / secs : 0.0, (unsigned long long)sp.pred_drafted,
           (unsigned long long)sp.pred_accepted, (unsigned long long)sp.lookup_drafted,
           (unsigned long long)sp.lookup_accepted);
    rc = r.n_done == r.n ? 0 : 1;
out:
    bw_sched_free(sched);
    for (size_t i = 0; i < r.n; i++) {
        json_decref(r.jobs[i].line);
        json_decref(r.jobs[i].ids);
        json_decref(r.jobs[i].done);
        free(r.jobs[i].out);
    }
    free(r.jobs);
    free(buf);
    fclose(f);
    return rc;
}

/* ---- --bench ---- */

typedef struct {
    double mean, sd;
} stat;

static stat stats(const double *v, int n)
{
    stat s = {0, 0};
    for (int i = 0; i < n; i++) s.mean += v[i];
    s.mean /= n;
    for (int i = 0; i < n; i++) s.sd += (v[i] - s.mean) * (v[i] - s.mean);
    s.sd = n > 1 ? sqrt(s.sd / (n - 1)) : 0;
    return s;
}

static int run_bench(bw_engine *e, const cli *c)
{
    const int P = c->bench_p ? c->bench_p : 512, N = c->bench_n ? c->bench_n : 128, D = c->bench_d;
    const int reps = c->bench_reps ? c->bench_reps : 3;
    const int L = P > N ? P : N;
    if ((int64_t)D + L > e->n_ctx) {
        fprintf(stderr, "beeworker-engine: -d plus the larger of -p and -n (%lld) exceeds the context of %d (--ctx)\n",
                (long long)D + L, e->n_ctx);
        return 1;
    }
    const int nv = e->model.cfg.n_vocab, T = D + L; /* token and position arrays cover the depth and both tests */
    int32_t *tok = malloc((size_t)T * sizeof *tok), *pos = malloc((size_t)T * sizeof *pos);
    int32_t *slot = calloc((size_t)T, sizeof *slot);
    uint8_t *want = calloc((size_t)T, 1);
    float *logits = malloc((size_t)nv * sizeof *logits);
    double pp[1000], tg[1000];
    int rc = 1;
    if (!tok || !pos || !slot || !want || !logits) goto out;
    for (int i = 0; i < T; i++) /* fixed, arbitrary ids */
        tok[i] = (int32_t)((1103515245u * (unsigned)i + 12345u) % (unsigned)nv);
    for (int i = 0; i < T; i++) pos[i] = i;
    want[D + P - 1] = 1;
    if (D > 0) { /* the context both tests run after; prefilled once, never timed */
        bw_batch ctx = {D, tok, pos, slot, want};
        if (bw_backend_forward(e->backend, &ctx, NULL)) goto out;
    }
    /* one untimed warm-up of each kind: page in the weights, wake the threads */
    for (int r = -1; r < reps; r++) {
        bw_batch b = {P, tok + D, pos + D, slot, want + D};
        uint64_t t0 = bw_clock_mono_ns();
        if (bw_backend_forward(e->backend, &b, logits)) goto out;
        uint64_t t1 = bw_clock_mono_ns();
        for (int i = 0; i < N; i++) {
            uint8_t w = 1;
            bw_batch d = {1, &tok[D + i % P], &pos[D + i], slot, &w};
            if (bw_backend_forward(e->backend, &d, logits)) goto out;
        }
        uint64_t t2 = bw_clock_mono_ns();
        if (r >= 0) {
            pp[r] = P / ((double)(t1 - t0) / 1e9);
            tg[r] = N / ((double)(t2 - t1) / 1e9);
        }
    }
    stat sp = stats(pp, reps), sg = stats(tg, reps);
    printf("| model | backend | threads | test | t/s |\n|---|---|---|---|---|\n");
    char at[32] = "";
    if (D > 0) snprintf(at, sizeof at, " @ d%d", D);
    printf("| %s | %s | %d | pp%d%s | %.2f ± %.2f |\n", e->model.id, e->backend->ops->name,
           e->backend->params.n_threads, P, at, sp.mean, sp.sd);
    printf("| %s | %s | %d | tg%d%s | %.2f ± %.2f |\n", e->model.id, e->backend->ops->name,
           e->backend->params.n_threads, N, at, sg.mean, sg.sd);
    printf("{\"pp\":%d,\"tg\":%d,\"depth\":%d,\"pp_tps\":%.3f,\"pp_sd\":%.3f,\"tg_tps\":%.3f,\"tg_sd\":%.3f,"
           "\"threads\":%d,\"backend\":\"%s\"}\n",
           P, N, D, sp.mean, sp.sd, sg.mean, sg.sd, e->backend->params.n_threads, e->backend->ops->name);
    rc = 0;
out:
    if (rc) fprintf(stderr, "beeworker-engine: benchmark failed\n");
    free(tok);
    free(pos);
    free(slot);
    free(want);
    free(logits);
    return rc;
}

int main(int argc, char **argv)
{
    bw_log_init("engine");
    cli c;
    memset(&c, 0, sizeof c);
    c.eng.backend = "auto";
    c.eng.prefill_step_ms = -1;
    c.eng.spec_max = SPEC_MAX_DEFAULT;
    c.add_bos = -1;
    c.special = -1;
    bw_gen_params_defaults(&c.gen);
    if (parse_args(argc, argv, &c)) return 2;
    if (c.special < 0) c.special = c.mode == MODE_TOKENIZE; /* --tokenize parses special tokens by default */

    if (c.mode == MODE_NONE) {
#ifdef BW_HAVE_DAEMON
        bw_daemon_set_drain(c.drain_s);
        return bw_daemon_main(&c.eng);
#else
        fprintf(stderr, "beeworker-engine: daemon mode is not built into this binary\n");
        return 2;
#endif
    }
    c.eng.tokenizer_only = c.mode == MODE_TOKENIZE || c.mode == MODE_DETOKENIZE;
    if ((c.mode == MODE_GENERATE && !c.prompt_file) || c.mode == MODE_BENCH) c.eng.n_slots = 1;
    bw_engine e;
    char err[512];
    if (bw_engine_load(&e, &c.eng, NULL, NULL, err, sizeof err)) {
        fprintf(stderr, "beeworker-engine: %s\n", err);
        return 1;
    }
    int rc;
    switch (c.mode) {
    case MODE_TOKENIZE: rc = run_tokenize(e.tok, &c); break;
    case MODE_DETOKENIZE: rc = run_detokenize(e.tok); break;
    case MODE_GENERATE: rc = c.prompt_file ? run_prompt_file(&e, &c) : run_generate(&e, &c); break;
    default: rc = run_bench(&e, &c); break;
    }
    bw_engine_unload(&e);
    return rc;
}
