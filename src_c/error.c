/* error.c -- thread-local error messages and status / dtype names. */
#include <stdio.h>

#include "cg_internal.h"

#define CG_ERR_MSG_LEN 512
static __thread char cg_err_msg[CG_ERR_MSG_LEN];

cg_status cg__err(cg_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cg_err_msg, sizeof cg_err_msg, fmt, ap);
    va_end(ap);
    return code;
}

const char *cg_last_error(void) { return cg_err_msg; }

void cg_clear_error(void) { cg_err_msg[0] = '\0'; }

cg_status cg_set_error(cg_status status, const char *message) {
    snprintf(cg_err_msg, sizeof cg_err_msg, "%s", message ? message : "");
    return status;
}

const char *cg_status_name(cg_status status) {
    static const char *const names[CG_STATUS_COUNT] = {
        "CG_OK",          "CG_ERR_NULL",  "CG_ERR_SHAPE",    "CG_ERR_DTYPE",
        "CG_ERR_INDEX",   "CG_ERR_VALUE", "CG_ERR_NOMEM",    "CG_ERR_AUTOGRAD",
        "CG_ERR_UNSUPPORTED", "CG_ERR_CALLBACK"};
    if ((int)status < 0 || status >= CG_STATUS_COUNT) return "CG_ERR_UNKNOWN";
    return names[status];
}

size_t cg_dtype_size(cg_dtype dtype) {
    switch (dtype) {
    case CG_FLOAT32: return 4;
    case CG_FLOAT64: return 8;
    case CG_INT64: return 8;
    case CG_BOOL: return 1;
    case CG_FLOAT16: return 2;
    default: return 0;
    }
}

const char *cg_dtype_name(cg_dtype dtype) {
    switch (dtype) {
    case CG_FLOAT32: return "float32";
    case CG_FLOAT64: return "float64";
    case CG_INT64: return "int64";
    case CG_BOOL: return "bool";
    case CG_FLOAT16: return "float16";
    default: return "invalid";
    }
}

int cg__valid_dtype(cg_dtype d) { return (int)d >= 0 && d < CG_DTYPE_COUNT; }

cg_dtype cg__promote(cg_dtype a, cg_dtype b) {
    /* The enum order is not the promotion order: rank them. */
    static const int rank[CG_DTYPE_COUNT] = {3, 4, 1, 0, 2}; /* bool < int64 < f16 < f32 < f64 */
    return rank[a] >= rank[b] ? a : b;
}
