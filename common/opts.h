/* Command-line values for both binaries (SPEC §3.6: "a bad flag is a one-line error and a non-zero
 * exit"): integers and numbers read whole and checked against a range, and the wording of every flag
 * error, "<prog>: --port wants an integer in 0..65535, got 'x'".
 *
 * Owns: parsing one flag's value and its error line on stderr. The flag tables, defaults, --help and the
 * checks that only one binary needs stay with that binary (frontend/opts.c, engine/main.c). Each
 * function returns 0 with *out set, or -1 after printing the error (leaving *out alone). */
#ifndef BW_COMMON_OPTS_H
#define BW_COMMON_OPTS_H

#include <stddef.h>
#include <stdint.h>

/* Ranges of the engine's flags that beeworker-front also takes, to forward them to an engine it spawns:
 * a bad value is refused by the front at start, not by each restarted engine. */
#define BW_OPT_DEVICE_MAX 64
#define BW_OPT_SLOTS_MAX 1024
#define BW_OPT_THREADS_MAX 256
#define BW_OPT_CTX_MIN 16
#define BW_OPT_CTX_MAX (1 << 20)
#define BW_OPT_SPEC_MAX 32 /* draft tokens per job and step; the scheduler sizes its buffers by it */

/* A decimal integer in lo..hi. */
int bw_opt_long(const char *prog, const char *flag, const char *arg, long lo, long hi, long *out);
int bw_opt_int(const char *prog, const char *flag, const char *arg, int lo, int hi, int *out);
int bw_opt_size(const char *prog, const char *flag, const char *arg, size_t lo, size_t hi, size_t *out);
/* Any unsigned 64-bit decimal (a seed). */
int bw_opt_u64(const char *prog, const char *flag, const char *arg, uint64_t *out);

/* A number (strtod syntax) in lo..hi; NaN is never in range. */
int bw_opt_double(const char *prog, const char *flag, const char *arg, double lo, double hi, double *out);
int bw_opt_float(const char *prog, const char *flag, const char *arg, double lo, double hi, float *out);

/* --backend: auto, cpu or cuda. Returns 0 or -1 after the error line. */
int bw_opt_backend(const char *prog, const char *arg);

/* The error lines of getopt_long's leftovers: an unknown flag or one missing its value (arg is the word
 * getopt_long stopped at, argv[optind - 1]), and an operand where none is taken. */
void bw_opt_bad_flag(const char *prog, const char *arg);
void bw_opt_unexpected(const char *prog, const char *arg);

#endif
