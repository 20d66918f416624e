/*
 * gemm.c -- the built-in row-major GEMM and the pluggable GEMM hook.
 *
 *   C = alpha * op(A) @ op(B) + beta * C      (A: m x k, B: k x n after op)
 *
 * Goto/BLIS-style blocking: a KC x NC block of op(B) is packed into
 * NR-column panels (stays in L2/L3), an MC x KC block of op(A) into MR-row
 * panels (stays in L2), and a register-tile micro-kernel multiplies one A
 * panel by one B panel. Packing makes the kernel's loads unit-stride no
 * matter how A and B are laid out (transposed or not), and zero-pads edge
 * panels so the kernel always runs on full tiles; only the write-back of an
 * edge tile is partial.
 *
 * Kernels: a portable one (GCC/Clang generic vectors, so SSE2 / NEON
 * without flags; plain loops for other compilers) and, on x86 with GCC/Clang,
 * AVX2+FMA (6x16 float, 6x8 double) and AVX-512 (12x32, 12x16) ones chosen
 * at run time from the CPU flags, so the library is built without -march and
 * still runs anywhere. Single-threaded 512^3 on one Sapphire Rapids core:
 * about 130 GFLOP/s float / 65 double (AVX-512), 70 / 32 (AVX2), 25 / 12
 * (portable, SSE2).
 *
 * Threads: a product of at least GEMM_THREAD_MNK multiply-adds is split
 * into column (or row) slabs of whole micro-tiles, one per thread, each
 * running the blocked algorithm above on its slab with its own packing
 * buffers (the operand that is not split is packed by every thread: cheap
 * next to the multiply for the shapes that get here). The threads are a
 * small persistent pool created on the first such product; between products
 * they spin for GEMM_SPIN_NS and then sleep on a condition variable. One
 * product uses the pool at a time: a concurrent caller (another application
 * thread) runs single-threaded instead of waiting. A fork() child starts
 * with no pool and creates its own on demand. cg_set_num_threads sets the
 * count (default: online CPUs, at most 8).
 *
 * beta == 0 means C is write-only (NaN/garbage in C is ignored), as in BLAS.
 * alpha == 0 or k == 0 only scales C by beta.
 */
/* The direct (small / matrix-vector) loops have run-time trip counts, which
 * GCC's -O2 cost model ("very-cheap") leaves scalar: ask for the dynamic
 * model here (before the includes, so inlines get the same options). */
/* pthreads, sysconf and sigset_t need POSIX declarations under -std=c99. */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif
#include "cg_internal.h"

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__)) && \
    !defined(CG_NO_SIMD)
#define CG_GEMM_X86 1
#include <immintrin.h>
#endif
#ifndef CG_GEMM_NO_AVX512 /* build with -DCG_GEMM_NO_AVX512=1 to stop at AVX2 */
#define CG_GEMM_NO_AVX512 0
#endif

/* Cache blocking (elements). KC*NR*sizeof(T) of B and KC*MR of A are streamed
 * by the kernel from L1; MC*KC of A sits in L2; KC*NC of B in L2/L3. */
#ifndef GEMM_KC
#define GEMM_KC 256
#endif
#ifndef GEMM_MC
#define GEMM_MC 120
#endif
#define GEMM_NC 3072
/* Below this many multiply-adds (and for matrix-vector shapes, which are
 * memory-bound), packing and the allocation cost more than they save: use
 * the direct loop. Measured crossover: about 6x6x6. */
#define GEMM_SMALL_MNK 256

typedef void (*skern_fn)(int64_t kc, const float *ap, const float *bp, float alpha, float beta,
                         float *c, int64_t ldc, int64_t mr, int64_t nr);
typedef void (*dkern_fn)(int64_t kc, const double *ap, const double *bp, double alpha,
                         double beta, double *c, int64_t ldc, int64_t mr, int64_t nr);

typedef struct {
    int mr, nr;
    skern_fn kern;
} skernel;
typedef struct {
    int mr, nr;
    dkern_fn kern;
} dkernel;

/* ------------------------------------------------------ write-back helper */
/* C tile (mr x nr valid of an MR x NR accumulator acc, row stride NR). */
#define GEMM_WRITEBACK(T, acc, NR, alpha, beta, c, ldc, mr, nr)                \
    do {                                                                       \
        for (int64_t i_ = 0; i_ < (mr); ++i_) {                                \
            T *crow_ = (c) + i_ * (ldc);                                       \
            const T *arow_ = (acc) + i_ * (NR);                                \
            if ((beta) == 0)                                                   \
                for (int64_t j_ = 0; j_ < (nr); ++j_) crow_[j_] = (alpha) * arow_[j_]; \
            else                                                               \
                for (int64_t j_ = 0; j_ < (nr); ++j_)                          \
                    crow_[j_] = (alpha) * arow_[j_] + (beta) * crow_[j_];      \
        }                                                                      \
    } while (0)

/* --------------------------------------------------- portable C kernels */
/* With GCC/Clang, generic vector types keep the accumulator tile in SIMD
 * registers on any target (SSE2, NEON...); elsewhere plain loops. */
#if defined(__GNUC__) || defined(__clang__)
#define GENERIC_MR 4
#define GENERIC_NR_S 8
#define GENERIC_NR_D 4
typedef float gv4f __attribute__((vector_size(16)));
typedef double gv2d __attribute__((vector_size(16)));

static void skern_generic(int64_t kc, const float *ap, const float *bp, float alpha, float beta,
                          float *c, int64_t ldc, int64_t mr, int64_t nr) {
    gv4f c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0};
    for (int64_t p = 0; p < kc; ++p) {
        gv4f b0, b1;
        memcpy(&b0, bp, sizeof b0);
        memcpy(&b1, bp + 4, sizeof b1);
        c00 += ap[0] * b0; c01 += ap[0] * b1;
        c10 += ap[1] * b0; c11 += ap[1] * b1;
        c20 += ap[2] * b0; c21 += ap[2] * b1;
        c30 += ap[3] * b0; c31 += ap[3] * b1;
        ap += 4;
        bp += 8;
    }
    gv4f acc[8] = {c00, c01, c10, c11, c20, c21, c30, c31};
    float tmp[4 * 8];
    memcpy(tmp, acc, sizeof tmp);
    GEMM_WRITEBACK(float, tmp, 8, alpha, beta, c, ldc, mr, nr);
}

static void dkern_generic(int64_t kc, const double *ap, const double *bp, double alpha,
                          double beta, double *c, int64_t ldc, int64_t mr, int64_t nr) {
    gv2d c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0};
    for (int64_t p = 0; p < kc; ++p) {
        gv2d b0, b1;
        memcpy(&b0, bp, sizeof b0);
        memcpy(&b1, bp + 2, sizeof b1);
        c00 += ap[0] * b0; c01 += ap[0] * b1;
        c10 += ap[1] * b0; c11 += ap[1] * b1;
        c20 += ap[2] * b0; c21 += ap[2] * b1;
        c30 += ap[3] * b0; c31 += ap[3] * b1;
        ap += 4;
        bp += 4;
    }
    gv2d acc[8] = {c00, c01, c10, c11, c20, c21, c30, c31};
    double tmp[4 * 4];
    memcpy(tmp, acc, sizeof tmp);
    GEMM_WRITEBACK(double, tmp, 4, alpha, beta, c, ldc, mr, nr);
}
#else
#define GENERIC_MR 4
#define GENERIC_NR_S 8
#define GENERIC_NR_D 4

static void skern_generic(int64_t kc, const float *ap, const float *bp, float alpha, float beta,
                          float *c, int64_t ldc, int64_t mr, int64_t nr) {
    float acc[GENERIC_MR * GENERIC_NR_S] = {0};
    for (int64_t p = 0; p < kc; ++p) {
        for (int i = 0; i < GENERIC_MR; ++i)
            for (int j = 0; j < GENERIC_NR_S; ++j) acc[i * GENERIC_NR_S + j] += ap[i] * bp[j];
        ap += GENERIC_MR;
        bp += GENERIC_NR_S;
    }
    GEMM_WRITEBACK(float, acc, GENERIC_NR_S, alpha, beta, c, ldc, mr, nr);
}

static void dkern_generic(int64_t kc, const double *ap, const double *bp, double alpha,
                          double beta, double *c, int64_t ldc, int64_t mr, int64_t nr) {
    double acc[GENERIC_MR * GENERIC_NR_D] = {0};
    for (int64_t p = 0; p < kc; ++p) {
        for (int i = 0; i < GENERIC_MR; ++i)
            for (int j = 0; j < GENERIC_NR_D; ++j) acc[i * GENERIC_NR_D + j] += ap[i] * bp[j];
        ap += GENERIC_MR;
        bp += GENERIC_NR_D;
    }
    GEMM_WRITEBACK(double, acc, GENERIC_NR_D, alpha, beta, c, ldc, mr, nr);
}
#endif

/* ------------------------------------------------------- x86 SIMD kernels */
#ifdef CG_GEMM_X86
/* AVX2 + FMA: float 6x16 (12 ymm accumulators), double 6x8. */
#define AVX2_TARGET __attribute__((target("avx2,fma")))

AVX2_TARGET static void skern_avx2_6x16(int64_t kc, const float *ap, const float *bp, float alpha,
                                        float beta, float *c, int64_t ldc, int64_t mr,
                                        int64_t nr) {
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (int64_t p = 0; p < kc; ++p) {
        __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
        __m256 a;
        a = _mm256_broadcast_ss(ap + 0);
        c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(ap + 1);
        c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(ap + 2);
        c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(ap + 3);
        c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
        a = _mm256_broadcast_ss(ap + 4);
        c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
        a = _mm256_broadcast_ss(ap + 5);
        c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
        ap += 6;
        bp += 16;
    }
    __m256 acc[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
    if (mr == 6 && nr == 16) {
        __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
        for (int i = 0; i < 6; ++i) {
            float *cr = c + i * ldc;
            __m256 r0 = _mm256_mul_ps(va, acc[2 * i]), r1 = _mm256_mul_ps(va, acc[2 * i + 1]);
            if (beta != 0.0f) {
                r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr), r0);
                r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr + 8), r1);
            }
            _mm256_storeu_ps(cr, r0);
            _mm256_storeu_ps(cr + 8, r1);
        }
    } else {
        float tmp[6 * 16];
        for (int i = 0; i < 12; ++i) _mm256_storeu_ps(tmp + 8 * i, acc[i]);
        GEMM_WRITEBACK(float, tmp, 16, alpha, beta, c, ldc, mr, nr);
    }
}

AVX2_TARGET static void dkern_avx2_6x8(int64_t kc, const double *ap, const double *bp,
                                       double alpha, double beta, double *c, int64_t ldc,
                                       int64_t mr, int64_t nr) {
    __m256d c00 = _mm256_setzero_pd(), c01 = _mm256_setzero_pd();
    __m256d c10 = _mm256_setzero_pd(), c11 = _mm256_setzero_pd();
    __m256d c20 = _mm256_setzero_pd(), c21 = _mm256_setzero_pd();
    __m256d c30 = _mm256_setzero_pd(), c31 = _mm256_setzero_pd();
    __m256d c40 = _mm256_setzero_pd(), c41 = _mm256_setzero_pd();
    __m256d c50 = _mm256_setzero_pd(), c51 = _mm256_setzero_pd();
    for (int64_t p = 0; p < kc; ++p) {
        __m256d b0 = _mm256_loadu_pd(bp), b1 = _mm256_loadu_pd(bp + 4);
        __m256d a;
        a = _mm256_broadcast_sd(ap + 0);
        c00 = _mm256_fmadd_pd(a, b0, c00); c01 = _mm256_fmadd_pd(a, b1, c01);
        a = _mm256_broadcast_sd(ap + 1);
        c10 = _mm256_fmadd_pd(a, b0, c10); c11 = _mm256_fmadd_pd(a, b1, c11);
        a = _mm256_broadcast_sd(ap + 2);
        c20 = _mm256_fmadd_pd(a, b0, c20); c21 = _mm256_fmadd_pd(a, b1, c21);
        a = _mm256_broadcast_sd(ap + 3);
        c30 = _mm256_fmadd_pd(a, b0, c30); c31 = _mm256_fmadd_pd(a, b1, c31);
        a = _mm256_broadcast_sd(ap + 4);
        c40 = _mm256_fmadd_pd(a, b0, c40); c41 = _mm256_fmadd_pd(a, b1, c41);
        a = _mm256_broadcast_sd(ap + 5);
        c50 = _mm256_fmadd_pd(a, b0, c50); c51 = _mm256_fmadd_pd(a, b1, c51);
        ap += 6;
        bp += 8;
    }
    __m256d acc[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
    if (mr == 6 && nr == 8) {
        __m256d va = _mm256_set1_pd(alpha), vb = _mm256_set1_pd(beta);
        for (int i = 0; i < 6; ++i) {
            double *cr = c + i * ldc;
            __m256d r0 = _mm256_mul_pd(va, acc[2 * i]), r1 = _mm256_mul_pd(va, acc[2 * i + 1]);
            if (beta != 0.0) {
                r0 = _mm256_fmadd_pd(vb, _mm256_loadu_pd(cr), r0);
                r1 = _mm256_fmadd_pd(vb, _mm256_loadu_pd(cr + 4), r1);
            }
            _mm256_storeu_pd(cr, r0);
            _mm256_storeu_pd(cr + 4, r1);
        }
    } else {
        double tmp[6 * 8];
        for (int i = 0; i < 12; ++i) _mm256_storeu_pd(tmp + 4 * i, acc[i]);
        GEMM_WRITEBACK(double, tmp, 8, alpha, beta, c, ldc, mr, nr);
    }
}

/* AVX-512: float 12x32 and double 12x16 (24 zmm accumulators of 32). The
 * tile is spelled out with macros: compilers do not reliably fully unroll
 * loops over an array of vector accumulators at -O2, and a spilled
 * accumulator halves the speed. */
#define AVX512_TARGET __attribute__((target("avx512f")))
#define AVX512_MR 12
#define ROWS12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

#define Z_DECL(i, ZERO) acc##i##_0 = ZERO, acc##i##_1 = ZERO
#define ZS_DECL(i) __m512 Z_DECL(i, _mm512_setzero_ps());
#define ZS_STEP(i)                                                             \
    {                                                                          \
        __m512 a_ = _mm512_set1_ps(ap[i]);                                     \
        acc##i##_0 = _mm512_fmadd_ps(a_, b0, acc##i##_0);                      \
        acc##i##_1 = _mm512_fmadd_ps(a_, b1, acc##i##_1);                      \
    }
#define ZS_SAVE(i)                                                             \
    _mm512_storeu_ps(tmp + 32 * (i), acc##i##_0);                              \
    _mm512_storeu_ps(tmp + 32 * (i) + 16, acc##i##_1);
#define ZD_DECL(i) __m512d Z_DECL(i, _mm512_setzero_pd());
#define ZD_STEP(i)                                                             \
    {                                                                          \
        __m512d a_ = _mm512_set1_pd(ap[i]);                                    \
        acc##i##_0 = _mm512_fmadd_pd(a_, b0, acc##i##_0);                      \
        acc##i##_1 = _mm512_fmadd_pd(a_, b1, acc##i##_1);                      \
    }
#define ZD_SAVE(i)                                                             \
    _mm512_storeu_pd(tmp + 16 * (i), acc##i##_0);                              \
    _mm512_storeu_pd(tmp + 16 * (i) + 8, acc##i##_1);

AVX512_TARGET static void skern_avx512_12x32(int64_t kc, const float *ap, const float *bp,
                                             float alpha, float beta, float *c, int64_t ldc,
                                             int64_t mr, int64_t nr) {
    ROWS12(ZS_DECL)
    for (int64_t p = 0; p < kc; ++p) {
        __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16);
        ROWS12(ZS_STEP)
        ap += AVX512_MR;
        bp += 32;
    }
    float tmp[AVX512_MR * 32]; /* the tile, row stride 32 */
    ROWS12(ZS_SAVE)
    if (mr == AVX512_MR && nr == 32) {
        __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
        for (int i = 0; i < AVX512_MR; ++i) {
            float *cr = c + i * ldc;
            __m512 r0 = _mm512_mul_ps(va, _mm512_loadu_ps(tmp + 32 * i));
            __m512 r1 = _mm512_mul_ps(va, _mm512_loadu_ps(tmp + 32 * i + 16));
            if (beta != 0.0f) {
                r0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cr), r0);
                r1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cr + 16), r1);
            }
            _mm512_storeu_ps(cr, r0);
            _mm512_storeu_ps(cr + 16, r1);
        }
    } else {
        GEMM_WRITEBACK(float, tmp, 32, alpha, beta, c, ldc, mr, nr);
    }
}

AVX512_TARGET static void dkern_avx512_12x16(int64_t kc, const double *ap, const double *bp,
                                             double alpha, double beta, double *c, int64_t ldc,
                                             int64_t mr, int64_t nr) {
    ROWS12(ZD_DECL)
    for (int64_t p = 0; p < kc; ++p) {
        __m512d b0 = _mm512_loadu_pd(bp), b1 = _mm512_loadu_pd(bp + 8);
        ROWS12(ZD_STEP)
        ap += AVX512_MR;
        bp += 16;
    }
    double tmp[AVX512_MR * 16]; /* the tile, row stride 16 */
    ROWS12(ZD_SAVE)
    if (mr == AVX512_MR && nr == 16) {
        __m512d va = _mm512_set1_pd(alpha), vb = _mm512_set1_pd(beta);
        for (int i = 0; i < AVX512_MR; ++i) {
            double *cr = c + i * ldc;
            __m512d r0 = _mm512_mul_pd(va, _mm512_loadu_pd(tmp + 16 * i));
            __m512d r1 = _mm512_mul_pd(va, _mm512_loadu_pd(tmp + 16 * i + 8));
            if (beta != 0.0) {
                r0 = _mm512_fmadd_pd(vb, _mm512_loadu_pd(cr), r0);
                r1 = _mm512_fmadd_pd(vb, _mm512_loadu_pd(cr + 8), r1);
            }
            _mm512_storeu_pd(cr, r0);
            _mm512_storeu_pd(cr + 8, r1);
        }
    } else {
        GEMM_WRITEBACK(double, tmp, 16, alpha, beta, c, ldc, mr, nr);
    }
}
#endif /* CG_GEMM_X86 */

/* -------------------------------------------------------- kernel choice */
/* Chosen on every blocked call (a few flag tests, nothing cached), so there
 * is no shared state for threads to race on. */
static skernel pick_skernel(void) {
    skernel sk = {GENERIC_MR, GENERIC_NR_S, skern_generic};
#ifdef CG_GEMM_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && !CG_GEMM_NO_AVX512) {
        sk.mr = AVX512_MR; sk.nr = 32; sk.kern = skern_avx512_12x32;
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        sk.mr = 6; sk.nr = 16; sk.kern = skern_avx2_6x16;
    }
#endif
    return sk;
}

static dkernel pick_dkernel(void) {
    dkernel dk = {GENERIC_MR, GENERIC_NR_D, dkern_generic};
#ifdef CG_GEMM_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && !CG_GEMM_NO_AVX512) {
        dk.mr = AVX512_MR; dk.nr = 16; dk.kern = dkern_avx512_12x16;
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        dk.mr = 6; dk.nr = 8; dk.kern = dkern_avx2_6x8;
    }
#endif
    return dk;
}

/* ---------------------------------------------------------- thread pool */
/* Below this many multiply-adds a product stays on the calling thread. */
#ifndef GEMM_THREAD_MNK
#define GEMM_THREAD_MNK (1 << 20)
#endif
#define GEMM_MAX_THREADS 64
#define GEMM_DEFAULT_MAX_THREADS 8
/* How long an idle worker (and a caller waiting for the workers) spins before
 * sleeping: back-to-back products then skip the futex wake-up. */
#ifndef GEMM_SPIN_NS
#define GEMM_SPIN_NS 100000
#endif

#if (defined(__unix__) || defined(__APPLE__)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(CG_NO_THREADS)
#define CG_GEMM_THREADS 1
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#endif

static int gemm_threads_set; /* cg_set_num_threads; 0: default */

#ifdef CG_GEMM_THREADS
#define LOAD_I(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define STORE_I(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)

static int gemm_default_threads(void) {
    static int cached; /* 0: not yet known */
    int n = LOAD_I(cached);
    if (n > 0) return n;
    n = 1;
#ifdef _SC_NPROCESSORS_ONLN
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    if (c > 1) n = c < GEMM_DEFAULT_MAX_THREADS ? (int)c : GEMM_DEFAULT_MAX_THREADS;
#endif
    STORE_I(cached, n);
    return n;
}

typedef void (*pool_fn)(void *arg, int part, int nparts);

static pthread_mutex_t pool_submit = PTHREAD_MUTEX_INITIALIZER; /* one product at a time */
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;     /* the job fields below */
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER;     /* workers: new job */
static pthread_cond_t pool_done = PTHREAD_COND_INITIALIZER;     /* caller: pending == 0 */
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static pthread_t pool_tid[GEMM_MAX_THREADS];
static unsigned pool_seen0[GEMM_MAX_THREADS]; /* generation at a worker's creation */
static int pool_nworkers;                     /* under pool_submit */
static unsigned pool_gen;                     /* bumped per job, under pool_mu */
static int pool_pending;                      /* workers still on the job, under pool_mu */
static pool_fn pool_job_fn;
static void *pool_job_arg;
static int pool_job_nparts;

static void cpu_relax(void) {
#ifdef CG_GEMM_X86
    _mm_pause();
#endif
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spin until *x != v or GEMM_SPIN_NS passed. */
static void spin_while_eq(unsigned *x, unsigned v) {
    if (LOAD_I(*x) != v) return;
    int64_t end = now_ns() + GEMM_SPIN_NS;
    for (;;) {
        for (int i = 0; i < 64; ++i) {
            cpu_relax();
            if (LOAD_I(*x) != v) return;
        }
        if (now_ns() > end) return;
    }
}

/* Spin until *x == 0 or GEMM_SPIN_NS passed. */
static void spin_until_zero(int *x) {
    if (LOAD_I(*x) == 0) return;
    int64_t end = now_ns() + GEMM_SPIN_NS;
    for (;;) {
        for (int i = 0; i < 64; ++i) {
            cpu_relax();
            if (LOAD_I(*x) == 0) return;
        }
        if (now_ns() > end) return;
    }
}

static void *pool_worker(void *p) {
    int idx = (int)(intptr_t)p;
    unsigned seen = pool_seen0[idx];
    for (;;) {
        spin_while_eq(&pool_gen, seen);
        pthread_mutex_lock(&pool_mu);
        while (pool_gen == seen) pthread_cond_wait(&pool_wake, &pool_mu);
        seen = pool_gen;
        pool_fn fn = pool_job_fn;
        void *arg = pool_job_arg;
        int np = pool_job_nparts;
        pthread_mutex_unlock(&pool_mu);
        if (idx < np) {
            fn(arg, idx, np);
            pthread_mutex_lock(&pool_mu);
            int left = pool_pending - 1;
            STORE_I(pool_pending, left);
            if (left == 0) pthread_cond_signal(&pool_done);
            pthread_mutex_unlock(&pool_mu);
        }
    }
    return NULL;
}

/* fork(): the child has none of the workers. Hold the locks across the
 * fork so the child gets them in a known state, then start over there. */
static void pool_prefork(void) {
    pthread_mutex_lock(&pool_submit);
    pthread_mutex_lock(&pool_mu);
}
static void pool_postfork_parent(void) {
    pthread_mutex_unlock(&pool_mu);
    pthread_mutex_unlock(&pool_submit);
}
static void pool_postfork_child(void) {
    pthread_mutex_unlock(&pool_mu);
    pthread_mutex_unlock(&pool_submit);
    /* The condition variables may record waiters that do not exist here. */
    pthread_cond_init(&pool_wake, NULL);
    pthread_cond_init(&pool_done, NULL);
    pool_nworkers = 0;
    pool_pending = 0;
}
static void pool_init_once(void) {
    pthread_atfork(pool_prefork, pool_postfork_parent, pool_postfork_child);
}

/* Runs fn(arg, part, np) for part 0..np-1 on np threads (the caller is part
 * 0), np <= nparts. Returns 0 without running anything when the pool is busy
 * or no worker could be started: the caller then does the work itself. */
static int pool_run(pool_fn fn, void *arg, int nparts) {
    if (nparts < 2 || pthread_mutex_trylock(&pool_submit) != 0) return 0;
    if (pool_nworkers < nparts - 1) {
        pthread_once(&pool_once, pool_init_once);
        sigset_t all, old; /* workers take no signals */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        while (pool_nworkers < nparts - 1) {
            int idx = pool_nworkers + 1;
            pool_seen0[idx] = pool_gen;
            if (pthread_create(&pool_tid[idx], NULL, pool_worker, (void *)(intptr_t)idx) != 0)
                break;
            pthread_detach(pool_tid[idx]);
            pool_nworkers = idx;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    int np = nparts < pool_nworkers + 1 ? nparts : pool_nworkers + 1;
    if (np < 2) {
        pthread_mutex_unlock(&pool_submit);
        return 0;
    }
    pthread_mutex_lock(&pool_mu);
    pool_job_fn = fn;
    pool_job_arg = arg;
    pool_job_nparts = np;
    STORE_I(pool_pending, np - 1);
    STORE_I(pool_gen, pool_gen + 1);
    pthread_cond_broadcast(&pool_wake);
    pthread_mutex_unlock(&pool_mu);
    fn(arg, 0, np);
    spin_until_zero(&pool_pending);
    pthread_mutex_lock(&pool_mu);
    while (pool_pending != 0) pthread_cond_wait(&pool_done, &pool_mu);
    pthread_mutex_unlock(&pool_mu);
    pthread_mutex_unlock(&pool_submit);
    return 1;
}

void cg_set_num_threads(int n) {
    if (n > GEMM_MAX_THREADS) n = GEMM_MAX_THREADS;
    STORE_I(gemm_threads_set, n > 0 ? n : 0);
}

int cg_get_num_threads(void) {
    int n = LOAD_I(gemm_threads_set);
    return n > 0 ? n : gemm_default_threads();
}
#else  /* no threads: the setting is kept but every product is serial */
typedef void (*pool_fn)(void *arg, int part, int nparts);
static int pool_run(pool_fn fn, void *arg, int nparts) { return 0; }
void cg_set_num_threads(int n) { gemm_threads_set = n > 0 ? n : 0; }
int cg_get_num_threads(void) { return 1; }
#endif

/* ------------------------------------------------------- blocked driver */
/* Generated for float and double. op(A)(i, p) = ta ? a[p*lda + i] : a[i*lda + p];
 * op(B)(p, j) = tb ? b[j*ldb + p] : b[p*ldb + j]. */
#define GEMM_DEFINE(T, PFX, KERNEL_T, PICK_KERNEL)                                          \
    /* Scale C (m x n) by beta; beta == 0 overwrites with zeros. */                         \
    static void PFX##_scale_c(int64_t m, int64_t n, T beta, T *c, int64_t ldc) {            \
        if (beta == (T)1) return;                                                           \
        for (int64_t i = 0; i < m; ++i) {                                                   \
            T *cr = c + i * ldc;                                                            \
            if (beta == (T)0)                                                               \
                for (int64_t j = 0; j < n; ++j) cr[j] = (T)0;                               \
            else                                                                            \
                for (int64_t j = 0; j < n; ++j) cr[j] *= beta;                              \
        }                                                                                   \
    }                                                                                       \
    /* Contiguous dot product with 8 independent partial sums: the single-sum */         \
    /* loop is bound by the add latency and cannot be vectorised (no reassociation). */    \
    static T PFX##_dot(const T *x, const T *y, int64_t k) {                                 \
        T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                \
        int64_t p = 0;                                                                      \
        for (; p + 8 <= k; p += 8)                                                          \
            for (int j = 0; j < 8; ++j) acc[j] += x[p + j] * y[p + j];                      \
        T s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])); \
        for (; p < k; ++p) s += x[p] * y[p];                                                \
        return s;                                                                           \
    }                                                                                       \
    /* Direct loop for tiny products and matrix-vector shapes: no packing, */              \
    /* no allocation. */                                                                    \
    static void PFX##_small(int ta, int tb, int64_t m, int64_t n, int64_t k, T alpha,       \
                            const T *a, int64_t lda, const T *b, int64_t ldb, T beta, T *c, \
                            int64_t ldc) {                                                  \
        int64_t sai = ta ? 1 : lda, sap = ta ? lda : 1;                                     \
        PFX##_scale_c(m, n, beta, c, ldc);                                                  \
        for (int64_t i = 0; i < m; ++i) {                                                   \
            T *cr = c + i * ldc;                                                            \
            if (!tb && n > 1) { /* rows of B are contiguous: axpy into the C row, */        \
                int64_t p = 0;     /* four rows of B per pass over it */                   \
                for (; p + 4 <= k; p += 4) {                                                \
                    const T *ai = a + i * sai + p * sap;                                    \
                    T a0 = alpha * ai[0], a1 = alpha * ai[sap];                             \
                    T a2 = alpha * ai[2 * sap], a3 = alpha * ai[3 * sap];                   \
                    const T *b0 = b + p * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb; \
                    for (int64_t j = 0; j < n; ++j)                                         \
                        cr[j] += (a0 * b0[j] + a1 * b1[j]) + (a2 * b2[j] + a3 * b3[j]);     \
                }                                                                           \
                for (; p < k; ++p) {                                                        \
                    T av = alpha * a[i * sai + p * sap];                                    \
                    const T *br = b + p * ldb;                                              \
                    for (int64_t j = 0; j < n; ++j) cr[j] += av * br[j];                    \
                }                                                                           \
            } else { /* dot products along k */                                             \
                int64_t sbp = tb ? 1 : ldb, sbj = tb ? ldb : 1;                             \
                for (int64_t j = 0; j < n; ++j) {                                           \
                    const T *bc = b + j * sbj, *ar = a + i * sai;                           \
                    T s;                                                                    \
                    if (sap == 1 && sbp == 1) {                                             \
                        s = PFX##_dot(ar, bc, k);                                           \
                    } else {                                                                \
                        s = 0;                                                              \
                        for (int64_t p = 0; p < k; ++p) s += ar[p * sap] * bc[p * sbp];     \
                    }                                                                       \
                    cr[j] += alpha * s;                                                     \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
    /* op(A)[ic:ic+mc, pc:pc+kc] -> panels of MR rows, each kc x MR (p-major). */           \
    static void PFX##_pack_a(int ta, const T *a, int64_t lda, int64_t ic, int64_t pc,       \
                             int64_t mc, int64_t kc, int MR, T *ap) {                       \
        for (int64_t ir = 0; ir < mc; ir += MR) {                                           \
            int64_t mr = mc - ir < MR ? mc - ir : MR;                                       \
            if (!ta) { /* a transpose: contiguous stores, mr read streams */               \
                const T *blk = a + (ic + ir) * lda + pc;                                    \
                for (int64_t p = 0; p < kc; ++p)                                            \
                    for (int64_t i = 0; i < mr; ++i) ap[p * MR + i] = blk[i * lda + p];     \
            } else {                                                                        \
                for (int64_t p = 0; p < kc; ++p) {                                          \
                    const T *row = a + (pc + p) * lda + ic + ir;                            \
                    for (int64_t i = 0; i < mr; ++i) ap[p * MR + i] = row[i];               \
                }                                                                           \
            }                                                                               \
            for (int64_t i = mr; i < MR; ++i)                                               \
                for (int64_t p = 0; p < kc; ++p) ap[p * MR + i] = (T)0;                     \
            ap += (int64_t)MR * kc;                                                         \
        }                                                                                   \
    }                                                                                       \
    /* op(B)[pc:pc+kc, jc:jc+nc] -> panels of NR columns, each kc x NR (p-major). */        \
    static void PFX##_pack_b(int tb, const T *b, int64_t ldb, int64_t pc, int64_t jc,       \
                             int64_t kc, int64_t nc, int NR, T *bp) {                       \
        for (int64_t jr = 0; jr < nc; jr += NR) {                                           \
            int64_t nr = nc - jr < NR ? nc - jr : NR;                                       \
            if (!tb) {                                                                      \
                for (int64_t p = 0; p < kc; ++p) {                                          \
                    const T *row = b + (pc + p) * ldb + jc + jr;                            \
                    T *dst = bp + p * NR;                                                   \
                    memcpy(dst, row, (size_t)nr * sizeof(T));                               \
                    for (int64_t j = nr; j < NR; ++j) dst[j] = (T)0;                        \
                }                                                                           \
            } else {                                                                        \
                /* a transpose: contiguous stores, nr read streams */                      \
                const T *blk = b + (jc + jr) * ldb + pc;                                    \
                for (int64_t p = 0; p < kc; ++p) {                                          \
                    T *dst = bp + p * NR;                                                   \
                    for (int64_t j = 0; j < nr; ++j) dst[j] = blk[j * ldb + p];             \
                    for (int64_t j = nr; j < NR; ++j) dst[j] = (T)0;                        \
                }                                                                           \
            }                                                                               \
            bp += (int64_t)NR * kc;                                                         \
        }                                                                                   \
    }                                                                                       \
    static void PFX##_blocked(int ta, int tb, int64_t m, int64_t n, int64_t k, T alpha,     \
                              const T *a, int64_t lda, const T *b, int64_t ldb, T beta,     \
                              T *c, int64_t ldc) {                                          \
        const KERNEL_T kd = PICK_KERNEL();                                                  \
        const int MR = kd.mr, NR = kd.nr;                                                   \
        /* k blocks of equal depth: no short last block (k = 784 -> 4 x 196). */           \
        int64_t kcmax = (k + (k + GEMM_KC - 1) / GEMM_KC - 1) / ((k + GEMM_KC - 1) / GEMM_KC); \
        int64_t mcmax = m < GEMM_MC ? m : GEMM_MC;                                          \
        int64_t ncmax = n < GEMM_NC ? n : GEMM_NC;                                          \
        int64_t mcpad = (mcmax + MR - 1) / MR * MR, ncpad = (ncmax + NR - 1) / NR * NR;     \
        /* One block: packed A (mcpad x kcmax) then packed B (kcmax x ncpad), */           \
        /* 64-byte aligned for the kernels' loads. */                                       \
        size_t a_elems = (size_t)(mcpad * kcmax), b_elems = (size_t)(ncpad * kcmax);        \
        a_elems = (a_elems * sizeof(T) + 63) / 64 * 64 / sizeof(T);                         \
        char *raw = (char *)malloc((a_elems + b_elems) * sizeof(T) + 64);                   \
        if (!raw) { /* cannot fail loudly here: fall back to the loop */                   \
            PFX##_small(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);              \
            return;                                                                         \
        }                                                                                   \
        T *apack = (T *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);                           \
        T *bpack = apack + a_elems;                                                         \
        for (int64_t jc = 0; jc < n; jc += GEMM_NC) {                                       \
            int64_t nc = n - jc < GEMM_NC ? n - jc : GEMM_NC;                               \
            for (int64_t pc = 0; pc < k; pc += kcmax) {                                     \
                int64_t kc = k - pc < kcmax ? k - pc : kcmax;                               \
                T bet = pc == 0 ? beta : (T)1; /* later k blocks accumulate */              \
                PFX##_pack_b(tb, b, ldb, pc, jc, kc, nc, NR, bpack);                        \
                for (int64_t ic = 0; ic < m; ic += GEMM_MC) {                               \
                    int64_t mc = m - ic < GEMM_MC ? m - ic : GEMM_MC;                       \
                    PFX##_pack_a(ta, a, lda, ic, pc, mc, kc, MR, apack);                    \
                    for (int64_t jr = 0; jr < nc; jr += NR) {                               \
                        int64_t nr = nc - jr < NR ? nc - jr : NR;                           \
                        const T *bpanel = bpack + (jr / NR) * NR * kc;                      \
                        for (int64_t ir = 0; ir < mc; ir += MR) {                           \
                            int64_t mr = mc - ir < MR ? mc - ir : MR;                       \
                            kd.kern(kc, apack + (ir / MR) * MR * kc, bpanel, alpha, bet,    \
                                    c + (ic + ir) * ldc + jc + jr, ldc, mr, nr);            \
                        }                                                                   \
                    }                                                                       \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
        free(raw);                                                                          \
    }                                                                                       \
    /* A threaded product: part p of np takes a slab of whole tiles of C. */                \
    typedef struct {                                                                        \
        int ta, tb, split_n;                                                                \
        int64_t m, n, k, lda, ldb, ldc, unit, tiles;                                        \
        T alpha, beta;                                                                      \
        const T *a, *b;                                                                     \
        T *c;                                                                               \
    } PFX##_job;                                                                            \
    static void PFX##_part(void *arg, int part, int np) {                                   \
        const PFX##_job *j = (const PFX##_job *)arg;                                        \
        int64_t dim = j->split_n ? j->n : j->m;                                             \
        int64_t lo = j->tiles * part / np * j->unit;                                        \
        int64_t hi = j->tiles * (part + 1) / np * j->unit;                                  \
        if (hi > dim) hi = dim;                                                             \
        if (hi <= lo) return;                                                               \
        if (j->split_n)                                                                     \
            PFX##_blocked(j->ta, j->tb, j->m, hi - lo, j->k, j->alpha, j->a, j->lda,        \
                          j->tb ? j->b + lo * j->ldb : j->b + lo, j->ldb, j->beta,          \
                          j->c + lo, j->ldc);                                               \
        else                                                                                \
            PFX##_blocked(j->ta, j->tb, hi - lo, j->n, j->k, j->alpha,                      \
                          j->ta ? j->a + lo : j->a + lo * j->lda, j->lda, j->b, j->ldb,     \
                          j->beta, j->c + lo * j->ldc, j->ldc);                             \
    }                                                                                       \
    /* Split over threads when big enough; 0 when the caller must do it all. */             \
    static int PFX##_threaded(int ta, int tb, int64_t m, int64_t n, int64_t k, T alpha,     \
                              const T *a, int64_t lda, const T *b, int64_t ldb, T beta,     \
                              T *c, int64_t ldc) {                                          \
        if ((double)m * (double)n * (double)k < (double)GEMM_THREAD_MNK) return 0;          \
        int nt = cg_get_num_threads();                                                      \
        if (nt < 2) return 0;                                                               \
        const KERNEL_T kd = PICK_KERNEL();                                                  \
        int64_t mt = (m + kd.mr - 1) / kd.mr, nt_ = (n + kd.nr - 1) / kd.nr;                \
        /* Splitting n repacks all of A in every thread, splitting m all of B. */          \
        int split_n = m <= n ? nt_ >= 2 : mt < 2;                                           \
        PFX##_job j;                                                                        \
        j.ta = ta; j.tb = tb; j.split_n = split_n;                                          \
        j.m = m; j.n = n; j.k = k; j.lda = lda; j.ldb = ldb; j.ldc = ldc;                   \
        j.unit = split_n ? kd.nr : kd.mr;                                                   \
        j.tiles = split_n ? nt_ : mt;                                                       \
        j.alpha = alpha; j.beta = beta; j.a = a; j.b = b; j.c = c;                          \
        if (j.tiles < 2) return 0;                                                          \
        if (nt > j.tiles) nt = (int)j.tiles;                                                \
        return pool_run(PFX##_part, &j, nt);                                                \
    }                                                                                       \
    /* n much narrower than a micro-tile (a 10-class output layer): the kernel */          \
    /* would mostly multiply padding. Compute C^T = op(B)^T op(A)^T into a */                 \
    /* scratch n x m instead, where n fills the MR rows, then add it into C. */              \
    static int PFX##_narrow(int ta, int tb, int64_t m, int64_t n, int64_t k, T alpha,       \
                            const T *a, int64_t lda, const T *b, int64_t ldb, T beta, T *c, \
                            int64_t ldc) {                                                  \
        const KERNEL_T kd = PICK_KERNEL();                                                  \
        if (n * 2 > kd.nr || n < 2 || m < 2 * kd.nr) return 0;                              \
        T *t = (T *)malloc((size_t)(n * m) * sizeof(T));                                    \
        if (!t) return 0;                                                                   \
        PFX##_blocked(!tb, !ta, n, m, k, (T)1, b, ldb, a, lda, (T)0, t, m);                 \
        for (int64_t i = 0; i < m; ++i) {                                                   \
            T *cr = c + i * ldc;                                                            \
            if (beta == (T)0)                                                               \
                for (int64_t j = 0; j < n; ++j) cr[j] = alpha * t[j * m + i];               \
            else                                                                            \
                for (int64_t j = 0; j < n; ++j) cr[j] = alpha * t[j * m + i] + beta * cr[j]; \
        }                                                                                   \
        free(t);                                                                            \
        return 1;                                                                           \
    }                                                                                       \
    static void PFX##_gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, T alpha,        \
                           const T *a, int64_t lda, const T *b, int64_t ldb, T beta, T *c,  \
                           int64_t ldc) {                                                   \
        if (m <= 0 || n <= 0) return;                                                       \
        if (k <= 0 || alpha == (T)0) {                                                      \
            PFX##_scale_c(m, n, beta, c, ldc);                                              \
            return;                                                                         \
        }                                                                                   \
        if (m == 1 || n == 1 || (double)m * (double)n * (double)k <= (double)GEMM_SMALL_MNK) \
            PFX##_small(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);              \
        else if (!PFX##_narrow(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) &&     \
                 !PFX##_threaded(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc))     \
            PFX##_blocked(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);            \
    }

GEMM_DEFINE(float, sg, skernel, pick_skernel)
GEMM_DEFINE(double, dg, dkernel, pick_dkernel)

void cg_builtin_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                      const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                      float *c, int64_t ldc) {
    sg_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cg_builtin_dgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                      const double *a, int64_t lda, const double *b, int64_t ldb, double beta,
                      double *c, int64_t ldc) {
    dg_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* ------------------------------------------------------------------ hook */
static cg_sgemm_fn sgemm_hook; /* NULL: built-in */
static cg_dgemm_fn dgemm_hook;

void cg_set_gemm(cg_sgemm_fn sgemm, cg_dgemm_fn dgemm) {
    sgemm_hook = sgemm;
    dgemm_hook = dgemm;
}

/* The degenerate cases never reach a hook: BLAS rejects ld < 1 and some
 * callers have k == 0 with ld 0. */
void cg__sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
               int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0 || alpha == 0.0f) {
        sg_scale_c(m, n, beta, c, ldc);
        return;
    }
    cg_sgemm_fn f = sgemm_hook;
    if (f) f(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    else sg_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cg__dgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, double alpha, const double *a,
               int64_t lda, const double *b, int64_t ldb, double beta, double *c, int64_t ldc) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0 || alpha == 0.0) {
        dg_scale_c(m, n, beta, c, ldc);
        return;
    }
    cg_dgemm_fn f = dgemm_hook;
    if (f) f(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    else dg_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
