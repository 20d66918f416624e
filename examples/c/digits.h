/* digits.h -- load examples/c/data/digits.bin (scikit-learn's 8x8 digits,
 * exported with its fixed train/test split by tools/export_digits.py; the
 * byte layout is in examples/c/README.md). Header-only: include it in one
 * program.
 *
 *     digits_data d;
 *     char err[256];
 *     if (digits_load("examples/c/data/digits.bin", &d, err, sizeof err) != 0) {
 *         fprintf(stderr, "%s\n", err);
 *         return 1;
 *     }
 *     ... d.train.pixels[i * d.cols + j], d.train.labels[i] ...
 *     digits_free(&d);
 *
 * Every malformed file (wrong magic or version, sizes that disagree with the
 * file length, a pixel above 16, a label >= n_classes) is reported through
 * err and a non-zero return, never by aborting. */
#ifndef CGRAD_EXAMPLES_DIGITS_H
#define CGRAD_EXAMPLES_DIGITS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgrad.h"

#define DIGITS_MAGIC "CGDIGITS"
#define DIGITS_VERSION 1u
#define DIGITS_HEADER_BYTES 28
#define DIGITS_MAX_PIXEL 16

typedef struct digits_split {
    int64_t rows;
    uint8_t *pixels; /* (rows, cols), values 0..16, owned */
    uint8_t *labels; /* (rows), values 0..n_classes-1, owned */
} digits_split;

typedef struct digits_data {
    int64_t cols;      /* 64: an 8x8 image, row-major */
    int64_t n_classes; /* 10 */
    digits_split train, test;
} digits_data;

static uint32_t digits_u32le_(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Reads n bytes; 0 on success. */
static int digits_read_(FILE *f, void *dst, size_t n) {
    return fread(dst, 1, n, f) == n ? 0 : -1;
}

static int digits_read_split_(FILE *f, digits_split *s, int64_t rows, int64_t cols,
                              int64_t n_classes, const char *which, char *err, size_t errsize) {
    int64_t i;
    s->rows = rows;
    s->pixels = (uint8_t *)malloc((size_t)(rows * cols) + 1);
    s->labels = (uint8_t *)malloc((size_t)rows + 1);
    if (!s->pixels || !s->labels) {
        snprintf(err, errsize, "digits: out of memory for the %s split (%lld rows)", which,
                 (long long)rows);
        return -1;
    }
    if (digits_read_(f, s->pixels, (size_t)(rows * cols)) ||
        digits_read_(f, s->labels, (size_t)rows)) {
        snprintf(err, errsize, "digits: file ends inside the %s split", which);
        return -1;
    }
    for (i = 0; i < rows * cols; ++i)
        if (s->pixels[i] > DIGITS_MAX_PIXEL) {
            snprintf(err, errsize, "digits: %s pixel %lld is %u, above %d", which, (long long)i,
                     (unsigned)s->pixels[i], DIGITS_MAX_PIXEL);
            return -1;
        }
    for (i = 0; i < rows; ++i)
        if (s->labels[i] >= n_classes) {
            snprintf(err, errsize, "digits: %s label %lld is %u, not below n_classes=%lld", which,
                     (long long)i, (unsigned)s->labels[i], (long long)n_classes);
            return -1;
        }
    return 0;
}

/* Frees what digits_load allocated and zeroes d (NULL or zeroed d is fine). */
static void digits_free(digits_data *d) {
    if (!d) return;
    free(d->train.pixels);
    free(d->train.labels);
    free(d->test.pixels);
    free(d->test.labels);
    memset(d, 0, sizeof *d);
}

/* 0 on success (d owns its arrays; release with digits_free); -1 with a
 * message in err (d left zeroed) otherwise. err may be NULL when errsize is 0. */
static int digits_load(const char *path, digits_data *d, char *err, size_t errsize) {
    unsigned char hdr[DIGITS_HEADER_BYTES];
    uint32_t version, n_train, n_test, cols, n_classes;
    long size, want;
    FILE *f;
    char dummy[1];
    if (!err || errsize == 0) {
        err = dummy;
        errsize = sizeof dummy;
    }
    if (!d || !path) {
        snprintf(err, errsize, "digits: NULL %s", d ? "path" : "output");
        return -1;
    }
    memset(d, 0, sizeof *d);
    f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errsize, "digits: cannot open '%s'", path);
        return -1;
    }
    if (digits_read_(f, hdr, sizeof hdr)) {
        snprintf(err, errsize, "digits: '%s' is shorter than the %d-byte header", path,
                 DIGITS_HEADER_BYTES);
        goto fail;
    }
    if (memcmp(hdr, DIGITS_MAGIC, 8) != 0) {
        snprintf(err, errsize, "digits: '%s' does not start with the magic '%s'", path,
                 DIGITS_MAGIC);
        goto fail;
    }
    version = digits_u32le_(hdr + 8);
    n_train = digits_u32le_(hdr + 12);
    n_test = digits_u32le_(hdr + 16);
    cols = digits_u32le_(hdr + 20);
    n_classes = digits_u32le_(hdr + 24);
    if (version != DIGITS_VERSION) {
        snprintf(err, errsize, "digits: '%s' has format version %u, this loader reads %u", path,
                 (unsigned)version, DIGITS_VERSION);
        goto fail;
    }
    /* Bounds keep every size product below 2^31 (no overflow below). */
    if (n_train == 0 || n_test == 0 || n_train > 1000000u || n_test > 1000000u || cols == 0 ||
        cols > 1024u || n_classes < 2 || n_classes > 256u) {
        snprintf(err, errsize,
                 "digits: '%s' header out of range: n_train=%u n_test=%u cols=%u n_classes=%u",
                 path, (unsigned)n_train, (unsigned)n_test, (unsigned)cols, (unsigned)n_classes);
        goto fail;
    }
    want = DIGITS_HEADER_BYTES + ((long)n_train + (long)n_test) * ((long)cols + 1);
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 ||
        fseek(f, DIGITS_HEADER_BYTES, SEEK_SET) != 0) {
        snprintf(err, errsize, "digits: cannot seek in '%s'", path);
        goto fail;
    }
    if (size != want) {
        snprintf(err, errsize, "digits: '%s' has %ld bytes, its header says %ld", path, size, want);
        goto fail;
    }
    d->cols = cols;
    d->n_classes = n_classes;
    if (digits_read_split_(f, &d->train, n_train, cols, n_classes, "train", err, errsize) ||
        digits_read_split_(f, &d->test, n_test, cols, n_classes, "test", err, errsize))
        goto fail;
    fclose(f);
    return 0;
fail:
    fclose(f);
    digits_free(d);
    return -1;
}

/* The split as tensors: x float32 (rows, cols) = pixels / 16, y int64 (rows).
 * Both new references; on failure neither is set. */
static cg_status digits_tensors(const digits_data *d, const digits_split *s, cg_tensor **x,
                                cg_tensor **y) {
    int64_t xshape[2], i;
    float *xf;
    int64_t *yl;
    cg_status st;
    if (!d || !s || !x || !y) return cg_set_error(CG_ERR_NULL, "digits_tensors: NULL argument");
    *x = NULL;
    *y = NULL;
    xshape[0] = s->rows;
    xshape[1] = d->cols;
    st = cg_empty(CG_FLOAT32, 2, xshape, x);
    if (st == CG_OK) st = cg_empty(CG_INT64, 1, xshape, y);
    if (st != CG_OK) {
        cg_tensor_free(*x);
        *x = NULL;
        return st;
    }
    xf = (float *)cg_tensor_data(*x);
    yl = (int64_t *)cg_tensor_data(*y);
    for (i = 0; i < s->rows * d->cols; ++i) xf[i] = (float)s->pixels[i] / (float)DIGITS_MAX_PIXEL;
    for (i = 0; i < s->rows; ++i) yl[i] = s->labels[i];
    return CG_OK;
}

#endif /* CGRAD_EXAMPLES_DIGITS_H */
