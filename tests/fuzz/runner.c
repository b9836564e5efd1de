/* Corpus replay without libFuzzer: feeds every file named on the command line, and every file inside a
 * directory named there, to the target once, in name order. Built when the fuzz option is off, so the
 * normal suite (gcc, and the ASan build) runs each committed corpus and crash reproducer. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static long n_inputs;

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return -1;
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (!buf) return -1;
    /* an exact-size copy, so ASan sees a read one past the input as the overflow it is */
    uint8_t *exact = malloc(n ? n : 1);
    memcpy(exact, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    n_inputs++;
    return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }

static int run_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "cannot stat %s\n", path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) return run_file(path);
    struct dirent **ents;
    int n = scandir(path, &ents, NULL, by_name), rc = n < 0 ? -1 : 0;
    for (int i = 0; i < n; i++) {
        char child[4096];
        if (ents[i]->d_name[0] != '.') {
            snprintf(child, sizeof(child), "%s/%s", path, ents[i]->d_name);
            if (run_path(child) != 0) rc = -1;
        }
        free(ents[i]);
    }
    free(n >= 0 ? ents : NULL);
    return rc;
}

int main(int argc, char **argv)
{
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    int rc = 0;
    for (int i = 1; i < argc; i++)
        if (run_path(argv[i]) != 0) rc = 1;
    printf("%s: %ld inputs replayed without a finding\n", argv[0], n_inputs);
    return rc;
}
