/* replay.c -- runs the fuzz harness on files, without libFuzzer: every
 * regular file of each directory argument (or each file argument) is one
 * input to LLVMFuzzerTestOneInput. Part of `make test-c`, plain and under
 * ASan + UBSan, over tests/fuzz/corpus/. A contract violation aborts. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 0 on success, -1 if the file cannot be read. */
static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long n;
    if (!f) return -1;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return -1;
    }
    buf = (uint8_t *)malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    free(buf);
    return 0;
}

int main(int argc, char **argv) {
    int i, runs = 0;
    for (i = 1; i < argc; ++i) {
        struct stat sb;
        if (stat(argv[i], &sb) != 0) {
            fprintf(stderr, "replay: cannot stat '%s'\n", argv[i]);
            return 2;
        }
        if (S_ISDIR(sb.st_mode)) {
            DIR *dir = opendir(argv[i]);
            struct dirent *e;
            if (!dir) {
                fprintf(stderr, "replay: cannot open directory '%s'\n", argv[i]);
                return 2;
            }
            while ((e = readdir(dir)) != NULL) {
                char path[4096];
                struct stat fb;
                if (e->d_name[0] == '.') continue;
                snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
                if (stat(path, &fb) != 0 || !S_ISREG(fb.st_mode)) continue;
                if (run_file(path) != 0) {
                    fprintf(stderr, "replay: cannot read '%s'\n", path);
                    closedir(dir);
                    return 2;
                }
                ++runs;
            }
            closedir(dir);
        } else {
            if (run_file(argv[i]) != 0) {
                fprintf(stderr, "replay: cannot read '%s'\n", argv[i]);
                return 2;
            }
            ++runs;
        }
    }
    if (runs == 0) {
        fprintf(stderr, "replay: no inputs\n");
        return 2;
    }
    printf("fuzz replay: %d inputs, no contract violation\n", runs);
    return 0;
}
