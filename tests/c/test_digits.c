/* test_digits.c -- examples/c/digits.h reads examples/c/data/digits.bin:
 * the split sizes, class counts, first labels and pixel sums match what
 * tools/export_digits.py wrote from scikit-learn (tests/python/
 * test_export_digits.py checks the same numbers on the Python side), the
 * tensors it builds hold pixels / 16, and every kind of malformed file is
 * an error message, not a crash. Run from the repository root. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <unistd.h>

#include "cgtest.h"
#include "digits.h"

#define DIGITS_PATH "examples/c/data/digits.bin"

static const int64_t train_counts[10] = {133, 136, 133, 137, 136, 136, 136, 134, 131, 135};
static const int64_t test_counts[10] = {45, 46, 44, 46, 45, 46, 45, 45, 43, 45};
static const int first_train_labels[10] = {7, 3, 6, 6, 7, 6, 7, 9, 2, 9};
static const int first_test_labels[10] = {2, 0, 4, 9, 4, 1, 2, 4, 6, 7};

static int64_t pixel_sum(const digits_split *s, int64_t cols) {
    int64_t i, total = 0;
    for (i = 0; i < s->rows * cols; ++i) total += s->pixels[i];
    return total;
}

static void test_load(void) {
    digits_data d;
    char err[256] = "";
    int64_t counts[2][10] = {{0}}, i;
    int k;
    CHECK(digits_load(DIGITS_PATH, &d, err, sizeof err) == 0);
    if (err[0]) fprintf(stderr, "%s\n", err);
    CHECK(d.train.rows == 1347 && d.test.rows == 450);
    CHECK(d.cols == 64 && d.n_classes == 10);
    for (i = 0; i < d.train.rows; ++i) ++counts[0][d.train.labels[i]];
    for (i = 0; i < d.test.rows; ++i) ++counts[1][d.test.labels[i]];
    for (k = 0; k < 10; ++k) {
        CHECK(counts[0][k] == train_counts[k]);
        CHECK(counts[1][k] == test_counts[k]);
        CHECK(d.train.labels[k] == first_train_labels[k]);
        CHECK(d.test.labels[k] == first_test_labels[k]);
    }
    CHECK(pixel_sum(&d.train, d.cols) == 421005);
    CHECK(pixel_sum(&d.test, d.cols) == 140713);
    /* First training image, top row: 0 0 0 10 12 15 16 13. */
    CHECK(d.train.pixels[3] == 10 && d.train.pixels[6] == 16 && d.train.pixels[7] == 13);

    {
        cg_tensor *x = NULL, *y = NULL, *mx = NULL;
        CHECK_OK(digits_tensors(&d, &d.test, &x, &y));
        CHECK(cg_tensor_dtype(x) == CG_FLOAT32 && cg_tensor_ndim(x) == 2);
        CHECK(cg_tensor_shape(x)[0] == 450 && cg_tensor_shape(x)[1] == 64);
        CHECK(cg_tensor_dtype(y) == CG_INT64 && cg_tensor_numel(y) == 450);
        CHECK_CLOSE(cgt_at(x, 0), d.test.pixels[0] / 16.0, 1e-7);
        CHECK_CLOSE(cgt_at(x, 64 * 449 + 63), d.test.pixels[64 * 449 + 63] / 16.0, 1e-7);
        CHECK(cgt_at(y, 3) == 9.0);
        CHECK_OK(cg_max(x, NULL, 0, 0, &mx));
        CHECK_CLOSE(cgt_at(mx, 0), 1.0, 0);
        cg_tensor_free(mx);
        cg_tensor_free(y);
        cg_tensor_free(x);
        CHECK_STATUS(digits_tensors(&d, NULL, &x, &y), CG_ERR_NULL);
    }
    digits_free(&d);
    CHECK(d.train.pixels == NULL && d.cols == 0);
    digits_free(&d); /* twice is fine */
    digits_free(NULL);
}

/* A copy of the real file with `len` bytes, byte `at` replaced by `value`
 * (at < 0: unchanged), loaded; returns the loader's result and its message. */
static int load_corrupted(long len, long at, int value, char *err, size_t errsize) {
    static unsigned char buf[200000];
    char path[] = "/tmp/cgrad_digitsXXXXXX";
    FILE *f = fopen(DIGITS_PATH, "rb");
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    digits_data d;
    int fd, rc;
    if (f) fclose(f);
    if (len > (long)n) len = (long)n;
    if (at >= 0 && at < len) buf[at] = (unsigned char)value;
    fd = mkstemp(path);
    if (fd < 0) return 99;
    f = fdopen(fd, "wb");
    if (!f) return 99;
    fwrite(buf, 1, (size_t)len, f);
    fclose(f);
    rc = digits_load(path, &d, err, errsize);
    remove(path);
    if (rc == 0) digits_free(&d);
    return rc;
}

static void test_bad_files(void) {
    digits_data d;
    char err[256];
    const long full = 28 + (1347 + 450) * 65;
    const long train_labels_at = 28 + 1347 * 64;

    CHECK(digits_load("/nonexistent/digits.bin", &d, err, sizeof err) != 0);
    CHECK(strstr(err, "cannot open") != NULL);
    CHECK(d.train.pixels == NULL);
    CHECK(digits_load(NULL, &d, err, sizeof err) != 0);
    CHECK(digits_load(DIGITS_PATH, NULL, err, sizeof err) != 0);
    CHECK(digits_load("/nonexistent", &d, NULL, 0) != 0); /* no message buffer */

    CHECK(load_corrupted(full, -1, 0, err, sizeof err) == 0); /* the copy itself is fine */
    CHECK(load_corrupted(10, -1, 0, err, sizeof err) != 0);
    CHECK(strstr(err, "header") != NULL);
    CHECK(load_corrupted(full, 0, 'X', err, sizeof err) != 0);
    CHECK(strstr(err, "magic") != NULL);
    CHECK(load_corrupted(full, 8, 2, err, sizeof err) != 0);
    CHECK(strstr(err, "version 2") != NULL);
    CHECK(load_corrupted(full, 20, 0, err, sizeof err) != 0); /* cols = 0 */
    CHECK(strstr(err, "cols=0") != NULL);
    CHECK(load_corrupted(full - 1, -1, 0, err, sizeof err) != 0);
    CHECK(strstr(err, "bytes") != NULL);
    CHECK(load_corrupted(full, 28 + 5, 17, err, sizeof err) != 0);
    CHECK(strstr(err, "train pixel 5 is 17") != NULL);
    CHECK(load_corrupted(full, train_labels_at + 2, 10, err, sizeof err) != 0);
    CHECK(strstr(err, "train label 2 is 10") != NULL);
    CHECK(load_corrupted(full, full - 1, 200, err, sizeof err) != 0);
    CHECK(strstr(err, "test label 449") != NULL);
}

int main(void) {
    test_load();
    test_bad_files();
    return cgt_report("test_digits");
}
