/* rng.c -- process-wide seeded generator (xoshiro256**, seeded through
 * splitmix64), so results are reproducible without NumPy. */
#include "cg_internal.h"

static uint64_t rng_state[4] = {0x9E3779B97F4A7C15ULL, 0xBF58476D1CE4E5B9ULL,
                                0x94D049BB133111EBULL, 0x2545F4914F6CDD1DULL};

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void cg_manual_seed(uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; ++i) rng_state[i] = splitmix64(&x);
}

void cg_rng_get_state(uint64_t state[4]) {
    if (!state) return;
    for (int i = 0; i < 4; ++i) state[i] = rng_state[i];
}

cg_status cg_rng_set_state(const uint64_t state[4]) {
    if (!state) return cg__err(CG_ERR_NULL, "cg_rng_set_state: state is NULL");
    if (!(state[0] | state[1] | state[2] | state[3]))
        return cg__err(CG_ERR_VALUE, "cg_rng_set_state: the all-zero state is not a valid xoshiro256** state");
    for (int i = 0; i < 4; ++i) rng_state[i] = state[i];
    return CG_OK;
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t cg__rng_next(void) {
    uint64_t *s = rng_state;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double cg__rng_uniform(void) { return (double)(cg__rng_next() >> 11) * 0x1.0p-53; }

static cg_status float_dtype(const char *fn, cg_dtype dtype) {
    if (!cg__is_float(dtype))
        return cg__err(CG_ERR_DTYPE, "%s: dtype must be float32 or float64, got %s", fn,
                       cg_dtype_name(dtype));
    return CG_OK;
}

/* float16: drawn as float32 (the same stream), then rounded. */
static cg_status via_float32(cg_status (*draw)(cg_dtype, int, const int64_t *, cg_tensor **), int ndim,
                             const int64_t *shape, cg_tensor **out) {
    cg_tensor *f;
    CG_TRY(draw(CG_FLOAT32, ndim, shape, &f));
    cg_status st = cg_to_dtype(f, CG_FLOAT16, out);
    cg_tensor_free(f);
    return st;
}

cg_status cg_rand(cg_dtype dtype, int ndim, const int64_t *shape, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_TRY(float_dtype("cg_rand", dtype));
    if (dtype == CG_FLOAT16) return via_float32(cg_rand, ndim, shape, out);
    cg_tensor *t;
    CG_TRY(cg__new(dtype, ndim, shape, 0, &t));
    if (dtype == CG_FLOAT32) {
        float *p = (float *)cg__ptr(t);
        for (int64_t i = 0; i < t->numel; ++i) p[i] = (float)(cg__rng_next() >> 40) * 0x1.0p-24f;
    } else {
        double *p = (double *)cg__ptr(t);
        for (int64_t i = 0; i < t->numel; ++i) p[i] = cg__rng_uniform();
    }
    *out = t;
    return CG_OK;
}

cg_status cg_randn(cg_dtype dtype, int ndim, const int64_t *shape, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_TRY(float_dtype("cg_randn", dtype));
    if (dtype == CG_FLOAT16) return via_float32(cg_randn, ndim, shape, out);
    cg_tensor *t;
    CG_TRY(cg__new(dtype, ndim, shape, 0, &t));
    void *p = cg__ptr(t);
    /* Box-Muller, two normals per pair of uniforms. */
    for (int64_t i = 0; i < t->numel; i += 2) {
        double u1 = 1.0 - cg__rng_uniform(); /* (0, 1]: log is finite */
        double u2 = cg__rng_uniform();
        double r = sqrt(-2.0 * log(u1));
        double z0 = r * cos(6.283185307179586 * u2), z1 = r * sin(6.283185307179586 * u2);
        cg__store(p, dtype, i, z0);
        if (i + 1 < t->numel) cg__store(p, dtype, i + 1, z1);
    }
    *out = t;
    return CG_OK;
}

/* Uniform in [0, range) without modulo bias (rejection). */
static uint64_t uniform_below(uint64_t range) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % range;
    uint64_t x;
    do x = cg__rng_next();
    while (x >= limit);
    return x % range;
}

cg_status cg_randint(int64_t low, int64_t high, int ndim, const int64_t *shape, cg_tensor **out) {
    CG_CHECK_OUT(out);
    if (high <= low)
        return cg__err(CG_ERR_VALUE, "cg_randint: empty range [%lld, %lld)", (long long)low, (long long)high);
    cg_tensor *t;
    CG_TRY(cg__new(CG_INT64, ndim, shape, 0, &t));
    int64_t *p = (int64_t *)cg__ptr(t);
    uint64_t range = (uint64_t)high - (uint64_t)low;
    for (int64_t i = 0; i < t->numel; ++i) p[i] = low + (int64_t)uniform_below(range);
    *out = t;
    return CG_OK;
}

cg_status cg_randperm(int64_t n, cg_tensor **out) {
    CG_CHECK_OUT(out);
    if (n < 0) return cg__err(CG_ERR_VALUE, "cg_randperm: n must be >= 0, got %lld", (long long)n);
    cg_tensor *t;
    CG_TRY(cg__new(CG_INT64, 1, &n, 0, &t));
    int64_t *p = (int64_t *)cg__ptr(t);
    for (int64_t i = 0; i < n; ++i) p[i] = i;
    for (int64_t i = n - 1; i > 0; --i) { /* Fisher-Yates */
        int64_t j = (int64_t)uniform_below((uint64_t)i + 1);
        int64_t tmp = p[i];
        p[i] = p[j];
        p[j] = tmp;
    }
    *out = t;
    return CG_OK;
}
