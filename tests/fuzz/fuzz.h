/* Shared by the fuzz targets: the libFuzzer entry points and the invariant check.
 *
 * A target is one LLVMFuzzerTestOneInput (plus an optional LLVMFuzzerInitialize). With -Dfuzz=true it
 * links libFuzzer; otherwise runner.c replays its corpus, so every build checks the committed inputs. */
#ifndef BW_TESTS_FUZZ_H
#define BW_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A broken invariant is a finding like a crash: abort so libFuzzer saves the input. */
#define FUZZ_CHECK(cond, ...)                                                                                          \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "invariant failed at %s:%d: %s: ", __FILE__, __LINE__, #cond);                             \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fputc('\n', stderr);                                                                                       \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

/* Exit status a target's initializer uses when what it needs (the model) is absent: meson and the unit
 * test wrapper report it as skipped. */
#define FUZZ_SKIP 77

#endif
