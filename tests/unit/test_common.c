/* What both processes share in common/: the strict UTF-8 rules (common/utf8.h) against an independent
 * reference on every sequence of one to three bytes and every lead and second byte of four, and the
 * flag-value parsers (common/opts.h): what they accept, what they refuse, and the one error line. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/opts.h"
#include "common/utf8.h"

#include "check.h"

/* ---- UTF-8 ---- */

/* The reference: decode by the bit pattern, then refuse by the code point (overlong, surrogate, past
 * U+10FFFF). The code under test decides by byte ranges instead; both must agree everywhere. */
static size_t ref_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

static void utf8_matches_the_reference(void)
{
    uint8_t b[4];
    long bad = 0;
    for (uint32_t x = 0; x < 1u << 24; x++) { /* every 3-byte string covers every 1-, 2- and 3-byte sequence */
        b[0] = (uint8_t)(x >> 16), b[1] = (uint8_t)(x >> 8), b[2] = (uint8_t)x;
        for (size_t n = 1; n <= 3; n++)
            if (bw_utf8_seq((const char *)b, n) != ref_seq(b, n)) bad++;
    }
    CHECK(bad == 0, "%ld strings of 1 to 3 bytes judged unlike the reference", bad);
    bad = 0;
    const uint8_t tails[] = {0x00, 0x7F, 0x80, 0x8F, 0x90, 0xBF, 0xC0, 0xFF};
    for (uint32_t lead = 0xF0; lead <= 0xFF; lead++)
        for (uint32_t second = 0; second < 256; second++)
            for (size_t t = 0; t < sizeof tails; t++)
                for (size_t u = 0; u < sizeof tails; u++) {
                    b[0] = (uint8_t)lead, b[1] = (uint8_t)second, b[2] = tails[t], b[3] = tails[u];
                    for (size_t n = 1; n <= 4; n++)
                        if (bw_utf8_seq((const char *)b, n) != ref_seq(b, n)) bad++;
                }
    CHECK(bad == 0, "%ld 4-byte strings judged unlike the reference", bad);
}

static void utf8_encodes_every_code_point(void)
{
    long bad = 0;
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        char out[4];
        const size_t n = bw_utf8_put(cp, out);
        const size_t want = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
        if (n != want || bw_utf8_seq(out, n) != n || bw_utf8_len((uint8_t)out[0]) != (int)n ||
            bw_utf8_chars(out, n) != 1)
            bad++;
    }
    CHECK(bad == 0, "%ld code points encode to something that is not one valid sequence of the right length", bad);
    const char *s = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x90\x9d"; /* a, e-acute, euro, bee */
    CHECK(bw_utf8_chars(s, strlen(s)) == 4, "'%s' counts %zu characters", s, bw_utf8_chars(s, strlen(s)));
    CHECK(strcmp(BW_UTF8_REPLACEMENT, "\xef\xbf\xbd") == 0);
}

/* ---- flag values ---- */

static char errline[512];

/* Runs the parser call with stderr going to a file; errline gets what it printed. */
#define CAPTURE(call)                                                                                                  \
    ({                                                                                                                 \
        fflush(stderr);                                                                                                \
        FILE *tmp_ = tmpfile();                                                                                        \
        int saved_ = dup(2);                                                                                           \
        dup2(fileno(tmp_), 2);                                                                                         \
        int rc_ = (call);                                                                                              \
        fflush(stderr);                                                                                                \
        dup2(saved_, 2);                                                                                               \
        close(saved_);                                                                                                 \
        rewind(tmp_);                                                                                                  \
        size_t got_ = fread(errline, 1, sizeof errline - 1, tmp_);                                                     \
        errline[got_] = '\0';                                                                                          \
        fclose(tmp_);                                                                                                  \
        rc_;                                                                                                           \
    })

static void opts_accept_and_refuse(void)
{
    int i = -7;
    CHECK(CAPTURE(bw_opt_int("prog", "--n", "12", 1, 20, &i)) == 0 && i == 12 && errline[0] == '\0');
    const char *bad_ints[] = {"", "12x", " 12x", "21", "0", "-3", "1.5", "99999999999999999999", "0x10"};
    for (size_t k = 0; k < sizeof bad_ints / sizeof *bad_ints; k++) {
        i = -7;
        CHECK(CAPTURE(bw_opt_int("prog", "--n", bad_ints[k], 1, 20, &i)) == -1 && i == -7, "'%s' taken as %d",
              bad_ints[k], i);
        char want[128];
        snprintf(want, sizeof want, "prog: --n wants an integer in 1..20, got '%s'\n", bad_ints[k]);
        CHECK(strcmp(errline, want) == 0, "error line '%s'", errline);
    }
    long l = -7;
    CHECK(CAPTURE(bw_opt_long("prog", "--n", "25", 1, 20, &l)) == -1 && l == -7, "a refused value was stored: %ld", l);
    size_t z = 0;
    CHECK(bw_opt_size("prog", "--max-body", "1073741824", 1024, (size_t)1 << 30, &z) == 0 && z == (size_t)1 << 30);

    double d = -1;
    CHECK(CAPTURE(bw_opt_double("prog", "--wait", "0.5", 0, 2, &d)) == 0 && d == 0.5);
    const char *bad_nums[] = {"nan", "inf", "2.01", "-0.1", "1e400", "", "1,5"};
    for (size_t k = 0; k < sizeof bad_nums / sizeof *bad_nums; k++) {
        d = -1;
        CHECK(CAPTURE(bw_opt_double("prog", "--wait", bad_nums[k], 0, 2, &d)) == -1 && d == -1, "'%s' taken as %g",
              bad_nums[k], d);
        char want[128];
        snprintf(want, sizeof want, "prog: --wait wants a number in 0..2, got '%s'\n", bad_nums[k]);
        CHECK(strcmp(errline, want) == 0, "error line '%s'", errline);
    }
    float f = 0;
    CHECK(bw_opt_float("prog", "--t", "1.25", 0, 2, &f) == 0 && f == 1.25f);

    uint64_t u = 0;
    CHECK(bw_opt_u64("prog", "--seed", "18446744073709551615", &u) == 0 && u == UINT64_MAX);
    CHECK(CAPTURE(bw_opt_u64("prog", "--seed", "-1", &u)) == -1 && u == UINT64_MAX, "a negative seed wrapped");
    CHECK(strcmp(errline, "prog: --seed wants an unsigned 64-bit integer, got '-1'\n") == 0, "'%s'", errline);
    CHECK(CAPTURE(bw_opt_u64("prog", "--seed", "18446744073709551616", &u)) == -1, "a seed past 64 bits taken");

    CHECK(bw_opt_backend("prog", "cuda") == 0 && bw_opt_backend("prog", "cpu") == 0 &&
          bw_opt_backend("prog", "auto") == 0);
    CHECK(CAPTURE(bw_opt_backend("prog", "gpu")) == -1 &&
              strcmp(errline, "prog: --backend is auto, cpu or cuda, got 'gpu'\n") == 0,
          "'%s'", errline);
    CHECK(CAPTURE((bw_opt_bad_flag("prog", "--nope"), 0)) == 0 &&
              strcmp(errline, "prog: unknown or incomplete option '--nope' (see --help)\n") == 0,
          "'%s'", errline);
    CHECK(CAPTURE((bw_opt_unexpected("prog", "extra"), 0)) == 0 &&
              strcmp(errline, "prog: unexpected argument 'extra' (see --help)\n") == 0,
          "'%s'", errline);
}

int main(void)
{
    utf8_matches_the_reference();
    utf8_encodes_every_code_point();
    opts_accept_and_refuse();
    printf("common: %d checks, %d failed (strict UTF-8 against a reference, flag values and their errors)\n",
           check_count, check_failed);
    return check_failed ? 1 : 0;
}
