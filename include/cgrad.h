/*
 * cgrad.h -- public C API of cgrad, a tape-based reverse-mode autodiff core.
 *
 * Usage (error handling shortened; every fallible call returns cg_status):
 *
 *     int64_t shape[2] = {2, 3};
 *     cg_tensor *x = NULL, *y = NULL, *loss = NULL;
 *     cg_manual_seed(0);
 *     cg_randn(CG_FLOAT32, 2, shape, &x);
 *     cg_tensor_set_requires_grad(x, 1);
 *     cg_tanh(x, &y);                       // recorded on the tape
 *     cg_sum(y, NULL, 0, 0, &loss);         // all dims -> 0-d tensor
 *     if (cg_backward(loss, NULL, 0, 0) != CG_OK)
 *         fprintf(stderr, "%s\n", cg_last_error());
 *     cg_tensor *g = cg_tensor_grad(x);     // borrowed: 1 - tanh(x)^2
 *     cg_tensor_free(loss); cg_tensor_free(y); cg_tensor_free(x);
 *
 * Conventions
 *  - Shapes are row-major (NumPy order); strides are counted in elements.
 *  - Tensor arguments are borrowed: a call never takes over the caller's
 *    reference. A tensor returned through `cg_tensor **out` is a NEW
 *    reference that the caller releases with cg_tensor_free().
 *  - Every call that can fail returns a cg_status; on failure *out is left
 *    NULL and cg_last_error() holds a message for the calling thread.
 *    The library never aborts, exits or prints.
 *  - Grad mode, the tape's sequence counter and the error message are
 *    thread-local. The RNG is process-wide and not thread-safe.
 *  - A dim argument may be negative (counted from the end, as in Python).
 */
#ifndef CGRAD_H
#define CGRAD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CG_VERSION_MAJOR 0
#define CG_VERSION_MINOR 1
#define CG_VERSION_PATCH 0
#define CG_VERSION_STRING "0.1.0"

#if defined(_WIN32)
#define CG_API __declspec(dllexport)
#elif defined(__GNUC__)
#define CG_API __attribute__((visibility("default")))
#else
#define CG_API
#endif

#define CG_MAX_DIMS 8

/* Status codes. Only grows at the end (before CG_STATUS_COUNT). */
typedef enum cg_status {
    CG_OK = 0,
    CG_ERR_NULL,        /* a required pointer argument was NULL */
    CG_ERR_SHAPE,       /* shapes do not match / cannot broadcast */
    CG_ERR_DTYPE,       /* dtype not supported by this op, or mismatch */
    CG_ERR_INDEX,       /* index or dim out of range */
    CG_ERR_VALUE,       /* bad scalar argument (negative size, p outside [0,1]...) */
    CG_ERR_NOMEM,       /* allocation failed */
    CG_ERR_AUTOGRAD,    /* backward twice, modified saved tensor, no grad_fn... */
    CG_ERR_UNSUPPORTED, /* valid request this build cannot do */
    CG_ERR_CALLBACK,    /* a user callback (custom backward) failed */
    CG_STATUS_COUNT
} cg_status;

/* Element types. Only grows at the end (before CG_DTYPE_COUNT). */
typedef enum cg_dtype {
    CG_FLOAT32 = 0,
    CG_FLOAT64,
    CG_INT64, /* indices, labels: no gradient */
    CG_BOOL,  /* masks, comparison results (1 byte each): no gradient */
    CG_FLOAT16, /* IEEE binary16: computed on device backends; on the host a
                   storage type only (views, copies, casts, device moves) */
    CG_DTYPE_COUNT
} cg_dtype;

typedef struct cg_tensor cg_tensor; /* opaque, refcounted */

/* Memory layouts. A row-sparse tensor of shape (num_rows, *row_shape) holds
 * int64 row indices (nnz,) and values (nnz, *row_shape); see "row-sparse
 * tensors" below. Ops that cannot take one fail with CG_ERR_UNSUPPORTED. */
typedef enum cg_layout {
    CG_STRIDED = 0,
    CG_SPARSE_ROWS = 1
} cg_layout;

/* ---------------------------------------------------------------- errors */
/* Message of the last failure on this thread ("" if none). Borrowed: valid
 * until the next failing call on the same thread. */
CG_API const char *cg_last_error(void);
CG_API const char *cg_status_name(cg_status status); /* static string */
CG_API void cg_clear_error(void);

CG_API size_t cg_dtype_size(cg_dtype dtype);     /* 0 for an invalid dtype */
CG_API const char *cg_dtype_name(cg_dtype dtype); /* static string */

/* ------------------------------------------------------------- lifetime */
CG_API void cg_tensor_retain(cg_tensor *t);  /* +1 reference; NULL is a no-op */
CG_API void cg_tensor_free(cg_tensor *t);    /* -1 reference; NULL is a no-op */

/* ------------------------------------------------------------- creation */
/* All return a new contiguous tensor owned by the caller. ndim in [0, 8];
 * shape entries >= 0. */
CG_API cg_status cg_empty(cg_dtype dtype, int ndim, const int64_t *shape, cg_tensor **out);
CG_API cg_status cg_zeros(cg_dtype dtype, int ndim, const int64_t *shape, cg_tensor **out);
CG_API cg_status cg_ones(cg_dtype dtype, int ndim, const int64_t *shape, cg_tensor **out);
CG_API cg_status cg_full(cg_dtype dtype, int ndim, const int64_t *shape, double value,
                         cg_tensor **out);
/* 0-d tensor holding value. */
CG_API cg_status cg_scalar(cg_dtype dtype, double value, cg_tensor **out);
/* Copies numel*dtype_size bytes of contiguous row-major data. */
CG_API cg_status cg_from_data(cg_dtype dtype, int ndim, const int64_t *shape,
                              const void *data, cg_tensor **out);
/* Zero-copy wrap of foreign memory. strides in elements (NULL: contiguous);
 * release(release_ctx) is called once when the last tensor viewing the
 * memory is freed (release may be NULL). Strides may be 0 or negative. */
typedef void (*cg_release_fn)(void *release_ctx);
CG_API cg_status cg_from_blob(cg_dtype dtype, int ndim, const int64_t *shape,
                              const int64_t *strides, void *data, cg_release_fn release,
                              void *release_ctx, cg_tensor **out);
/* [start, end) with step, 1-D. */
CG_API cg_status cg_arange(cg_dtype dtype, double start, double end, double step,
                           cg_tensor **out);

/* ------------------------------------------------------------------ RNG */
/* Process-wide generator (xoshiro256**); same seed -> same numbers on every
 * platform. */
CG_API void cg_manual_seed(uint64_t seed);
/* The generator's 256-bit state, for checkpoints: get copies it out (NULL
 * is a no-op); set restores it (CG_ERR_VALUE for the all-zero state, which
 * the generator cannot leave). */
CG_API void cg_rng_get_state(uint64_t state[4]);
CG_API cg_status cg_rng_set_state(const uint64_t state[4]);
CG_API cg_status cg_rand(cg_dtype dtype, int ndim, const int64_t *shape, cg_tensor **out);  /* U[0,1) */
CG_API cg_status cg_randn(cg_dtype dtype, int ndim, const int64_t *shape, cg_tensor **out); /* N(0,1) */
/* Uniform integers in [low, high), int64. */
CG_API cg_status cg_randint(int64_t low, int64_t high, int ndim, const int64_t *shape,
                            cg_tensor **out);
/* A random permutation of 0..n-1, int64. */
CG_API cg_status cg_randperm(int64_t n, cg_tensor **out);

/* ----------------------------------------------------------- inspection */
CG_API cg_dtype cg_tensor_dtype(const cg_tensor *t);
CG_API int cg_tensor_ndim(const cg_tensor *t);
CG_API const int64_t *cg_tensor_shape(const cg_tensor *t);   /* borrowed, ndim entries */
CG_API const int64_t *cg_tensor_strides(const cg_tensor *t); /* borrowed, in elements */
CG_API int64_t cg_tensor_numel(const cg_tensor *t);
/* Pointer to element [0,...,0] (storage offset applied). Borrowed: valid while
 * t lives. */
CG_API void *cg_tensor_data(const cg_tensor *t);
CG_API int cg_tensor_is_contiguous(const cg_tensor *t);
/* Version counter of the storage: bumped by every in-place op. */
CG_API uint64_t cg_tensor_version(const cg_tensor *t);
/* Value of a one-element tensor as double. */
CG_API cg_status cg_tensor_item(const cg_tensor *t, double *out);
/* Copies the elements in row-major order into dst (nbytes must equal
 * numel * dtype_size). Works for non-contiguous tensors. */
CG_API cg_status cg_tensor_copy_to(const cg_tensor *t, void *dst, size_t nbytes);

/* -------------------------------------------------- devices and backends */
/* A tensor lives on a device: 0 is the host (the C kernels of this
 * library); other devices are backends registered at run time, such as the
 * "cuda" backend that the Python package fills with CuPy (or with NumPy, as
 * a reference device for machines without a GPU). The tape, the derivative
 * formulas and the shape logic stay here: an op on device tensors computes
 * its output shapes and dtypes as on the host, allocates the outputs through
 * the backend and asks the backend to run a named kernel on them. An op that
 * has no device kernel yet fails with CG_ERR_UNSUPPORTED naming the op and
 * the device; an op whose tensors are on different devices fails with
 * CG_ERR_VALUE naming both. docs/backend.md lists every kernel name and
 * what its tensors and parameters mean.
 *
 * The backend's functions are called with the backend's ctx. A buffer is an
 * opaque handle of the backend's (a device pointer, an array object); a
 * tensor on the device views it at cg_tensor_offset elements with its
 * shape and strides (cg_tensor_device_handle gives the handle). */
#define CG_DEVICE_CPU 0
#define CG_MAX_DEVICES 8
typedef struct cg_backend {
    /* A new buffer of nbytes (zero-filled when zero != 0). */
    cg_status (*alloc)(void *ctx, size_t nbytes, int zero, void **handle);
    /* Drops the library's reference to a buffer from alloc or cg_from_handle. */
    void (*release)(void *ctx, void *handle);
    /* Runs kernel `name`: tensors holds n_out outputs (allocated by the
     * library, to be written) followed by the inputs; f and iparam are the
     * kernel's scalar parameters (docs/backend.md). All borrowed for the
     * call. A kernel the backend lacks returns CG_ERR_UNSUPPORTED. */
    cg_status (*kernel)(void *ctx, const char *name, int n_out, int n_tensors,
                        cg_tensor *const *tensors, int n_f, const double *f, int n_i,
                        const int64_t *iparam);
    /* Copies t's elements in row-major order to host memory dst
     * (numel * dtype size bytes) / from host memory src into t. */
    cg_status (*to_host)(void *ctx, const cg_tensor *t, void *dst);
    cg_status (*from_host)(void *ctx, cg_tensor *t, const void *src);
} cg_backend;
/* Registers (or, for a name already registered, replaces) the backend of
 * device `name`; *device receives its id (1 .. CG_MAX_DEVICES-1). The
 * vtable is copied; ctx is borrowed and must outlive every tensor on the
 * device. Replacing a backend while tensors of it live is the caller's
 * responsibility. Not thread-safe against ops running on the device. */
CG_API cg_status cg_backend_register(const char *name, const cg_backend *vtable, void *ctx,
                                     int *device);
/* Id of device `name` ("cpu" is 0); CG_ERR_VALUE when none is registered. */
CG_API cg_status cg_device_find(const char *name, int *device);
/* Name of a device id, NULL when none is registered under it. Static or
 * owned by the registry (valid until the process ends). */
CG_API const char *cg_device_name(int device);
CG_API int cg_tensor_device(const cg_tensor *t);       /* 0 for host tensors */
/* The backend buffer a device tensor views (borrowed), NULL on the host. */
CG_API void *cg_tensor_device_handle(const cg_tensor *t);
CG_API int64_t cg_tensor_offset(const cg_tensor *t);    /* elements into the buffer */
/* New contiguous tensor on device (zero-filled with zeros). */
CG_API cg_status cg_empty_on(int device, cg_dtype dtype, int ndim, const int64_t *shape,
                             cg_tensor **out);
CG_API cg_status cg_zeros_on(int device, cg_dtype dtype, int ndim, const int64_t *shape,
                             cg_tensor **out);
/* Zero-copy wrap of a backend buffer of nbytes: the tensor views it at
 * offset (elements) with shape and strides (NULL: contiguous). The library
 * takes over one reference to handle and calls the backend's release once
 * when the last tensor viewing it dies (also when this call fails). The
 * view must lie inside nbytes (CG_ERR_VALUE otherwise). */
CG_API cg_status cg_from_handle(int device, cg_dtype dtype, int ndim, const int64_t *shape,
                                const int64_t *strides, int64_t offset, void *handle,
                                size_t nbytes, cg_tensor **out);
/* Copy of t on device (differentiable: the gradient is copied back to t's
 * device, a row-sparse one row-sparse). A new reference to t itself when it
 * is already there. A row-sparse t moves as its two parts. */
CG_API cg_status cg_to_device(cg_tensor *t, int device, cg_tensor **out);

/* ------------------------------------------------------------- autograd */
CG_API int cg_tensor_requires_grad(const cg_tensor *t);
/* Leaves only; floating dtypes only. */
CG_API cg_status cg_tensor_set_requires_grad(cg_tensor *t, int requires_grad);
CG_API int cg_tensor_is_leaf(const cg_tensor *t);
/* Accumulated gradient of a leaf, or NULL. Borrowed: valid until the grad is
 * replaced (next backward may accumulate in place or replace it). */
CG_API cg_tensor *cg_tensor_grad(const cg_tensor *t);
/* Replace the gradient (NULL clears it). grad must match shape and dtype.
 * The tensor retains its own reference to grad. */
CG_API cg_status cg_tensor_set_grad(cg_tensor *t, cg_tensor *grad);
/* Name of the op that produced t ("mul", "matmul", ...), NULL for leaves. */
CG_API const char *cg_tensor_grad_fn_name(const cg_tensor *t);
/* Makes leaf t use src's data (storage, dtype, shape, strides), as
 * PyTorch's `t.data = src`: t keeps its identity, requires_grad and hooks;
 * its grad is dropped unless it still matches shape and dtype. A tape entry
 * that saved t before refuses to run backward (CG_ERR_AUTOGRAD), and a
 * backward of an older graph whose gradient no longer matches t fails
 * instead of accumulating a gradient of the old shape or dtype. */
CG_API cg_status cg_tensor_set_data(cg_tensor *t, cg_tensor *src);
/* New tensor sharing storage with t, not recorded on the tape. */
CG_API cg_status cg_detach(cg_tensor *t, cg_tensor **out);

CG_API int cg_is_grad_enabled(void);
/* Returns the previous setting. */
CG_API int cg_set_grad_enabled(int enabled);

/* Reverse sweep from root. grad: gradient of root (NULL allowed only when
 * root has exactly one element: ones). Accumulates into the .grad of every
 * leaf that requires grad. Without retain_graph the saved tensors of the
 * entries it walked are freed, and a second backward through them fails
 * with CG_ERR_AUTOGRAD naming the op. With create_graph the backward is
 * itself recorded (higher-order derivatives). */
CG_API cg_status cg_backward(cg_tensor *root, cg_tensor *grad, int retain_graph,
                             int create_graph);
/* Functional form: gradients of sum(outputs[i] * grad_outputs[i]) with
 * respect to inputs, without touching .grad. grad_outputs may be NULL (all
 * outputs one-element) or hold NULL entries. grads[j] receives a new
 * reference, or NULL when inputs[j] is unreachable and allow_unused. */
CG_API cg_status cg_grad(int n_outputs, cg_tensor *const *outputs,
                         cg_tensor *const *grad_outputs, int n_inputs,
                         cg_tensor *const *inputs, int retain_graph, int create_graph,
                         int allow_unused, cg_tensor **grads);

/* ------------------------------------------------- custom ops (foreign) */
/* A custom op computes its outputs with grad mode off, then records one
 * tape entry whose backward is a C function. Example, y = x^2 with the
 * derivative 2*x*g written by hand (tests/c/test_tape.c has it in full):
 *
 *     static cg_status sq_backward(void *ctx, int n_out, cg_tensor *const *gout,
 *                                  int n_in, const int *needs, cg_tensor **gin) {
 *         cg_tensor *two_x = NULL;
 *         cg_status st = cg_mul_scalar((cg_tensor *)ctx, 2.0, &two_x);
 *         if (!st) st = cg_mul(two_x, gout[0], &gin[0]);   // differentiable
 *         cg_tensor_free(two_x);
 *         return st;
 *     }
 *     static void sq_free(void *ctx) { cg_tensor_free((cg_tensor *)ctx); }
 *
 *     cg_status square(cg_tensor *x, cg_tensor **out) {
 *         int prev = cg_set_grad_enabled(0);
 *         cg_status st = cg_mul(x, x, out);
 *         cg_set_grad_enabled(prev);
 *         if (st) return st;
 *         cg_tensor_retain(x);                    // the entry's context
 *         st = cg_record_custom("square", 1, &x, 1, out, sq_backward, x, sq_free);
 *         if (st) { cg_tensor_free(*out); *out = NULL; }
 *         return st;
 *     }
 *
 * and cg_gradcheck(fn, ctx, 1, &x64, 1e-6, 1e-7, 1e-5) checks it. */
/* Backward of a custom op. grad_outputs[i] is never NULL (zeros when that
 * output got no gradient). Set grad_inputs[j] to a NEW reference (or leave
 * NULL: no gradient) for each j with needs_input_grad[j]. Runs with grad
 * mode == create_graph, so a backward written with cg_ ops is
 * differentiable. Return CG_OK or an error status (set a message with
 * cg_set_error). */
typedef cg_status (*cg_custom_backward_fn)(void *ctx, int n_outputs,
                                           cg_tensor *const *grad_outputs, int n_inputs,
                                           const int *needs_input_grad,
                                           cg_tensor **grad_inputs);
typedef void (*cg_ctx_free_fn)(void *ctx);
/* Records a tape entry named `name` (copied) linking inputs to outputs.
 * outputs must be fresh tensors computed by the caller (leaves without
 * grad). If grad mode is off or no input requires grad, nothing is recorded,
 * ctx_free(ctx) is called at once and CG_OK is returned. Otherwise the entry
 * owns ctx: ctx_free(ctx) is called when the entry is released by a
 * non-retained backward or destroyed, whichever comes first. When the call
 * fails, ctx_free(ctx) has been called as well: after the call the caller
 * never frees ctx itself. */
CG_API cg_status cg_record_custom(const char *name, int n_inputs, cg_tensor *const *inputs,
                                  int n_outputs, cg_tensor *const *outputs,
                                  cg_custom_backward_fn backward, void *ctx,
                                  cg_ctx_free_fn ctx_free);
/* Gradient hooks. A grad hook sees the gradient flowing into t during a
 * backward (for a leaf: the sum of all contributions of that backward, before
 * it is accumulated into .grad or returned by cg_grad; for a non-leaf: before
 * the op that produced t runs its backward). It may set *replacement to a NEW
 * reference of the same shape and dtype to replace the gradient, or leave it
 * NULL. Hooks run in registration order, each on the previous one's result.
 * A post-accumulate hook (leaves only) runs after .grad was updated. The hook
 * owns ctx (ctx_free(ctx) when removed or when t's entry dies); *handle
 * identifies it for cg_tensor_remove_hook. */
typedef cg_status (*cg_grad_hook_fn)(void *ctx, cg_tensor *grad, cg_tensor **replacement);
typedef cg_status (*cg_post_accumulate_hook_fn)(void *ctx, cg_tensor *leaf);
CG_API cg_status cg_tensor_register_hook(cg_tensor *t, cg_grad_hook_fn fn, void *ctx,
                                         cg_ctx_free_fn ctx_free, int64_t *handle);
CG_API cg_status cg_tensor_register_post_accumulate_hook(cg_tensor *t,
                                                         cg_post_accumulate_hook_fn fn,
                                                         void *ctx, cg_ctx_free_fn ctx_free,
                                                         int64_t *handle);
/* CG_ERR_VALUE if no hook with that handle is registered on t. */
CG_API cg_status cg_tensor_remove_hook(cg_tensor *t, int64_t handle);

/* Backward override by op name. While an override is pushed on this thread,
 * every op named op_name ("relu", "mul", "matmul", ...; "*" matches every
 * op) that is recorded gets fn as its derivative instead of the built-in
 * one. The entry keeps its inputs and outputs for fn. fn sets grad_inputs[j]
 * to a NEW reference (same shape and dtype as inputs[j]) or leaves it NULL,
 * for each j with needs_input_grad[j]; it runs with grad mode ==
 * create_graph. Overrides nest: the innermost matching one wins. The
 * override owns ctx (ctx_free(ctx) once it is popped and no recorded entry
 * uses it any more). Pop with the handle, innermost first. */
typedef cg_status (*cg_override_fn)(void *ctx, const char *op_name, int n_inputs,
                                    cg_tensor *const *inputs, int n_outputs,
                                    cg_tensor *const *outputs, cg_tensor *const *grad_outputs,
                                    const int *needs_input_grad, cg_tensor **grad_inputs);
CG_API cg_status cg_override_push(const char *op_name, cg_override_fn fn, void *ctx,
                                  cg_ctx_free_fn ctx_free, int64_t *handle);
/* CG_ERR_VALUE if handle is not the innermost override of this thread. */
CG_API cg_status cg_override_pop(int64_t handle);

/* Anomaly mode (NaN/Inf localisation), per thread, off by default. While
 * on, every op recorded on this thread scans its outputs for NaN/Inf once
 * and keeps where it was created (from the location hook, if installed);
 * the first op whose forward produced a non-finite value is remembered
 * (cg_anomaly_report) and passed to the anomaly hook, whose failure status
 * fails the op; and a backward in which an entry computes a non-finite
 * gradient fails with CG_ERR_AUTOGRAD naming the op, the input and where the
 * op was created. Enabling it (from off) clears the report. Returns the
 * previous setting. */
CG_API int cg_set_anomaly_mode(int enabled);
CG_API int cg_anomaly_mode(void);
/* The first forward anomaly on this thread since anomaly mode was enabled,
 * "" if none. Borrowed: valid until anomaly mode is enabled again. */
CG_API const char *cg_anomaly_report(void);
/* Process-wide hooks for anomaly mode (NULL uninstalls). The location hook
 * runs when an entry is recorded and returns an opaque tag for where it was
 * created (or NULL); the entry owns it and calls free_fn(tag) when it dies;
 * str(tag, buf, size) writes it as text ("train.py:42") when a report needs
 * it. The anomaly hook gets the report message (borrowed, valid during the
 * call). Install them before threads record. */
typedef void *(*cg_location_fn)(void *ctx);
typedef void (*cg_location_str_fn)(void *tag, char *buf, size_t size);
typedef void (*cg_location_free_fn)(void *tag);
typedef cg_status (*cg_anomaly_fn)(void *ctx, const char *message);
CG_API void cg_set_location_hook(cg_location_fn fn, cg_location_str_fn str,
                                 cg_location_free_fn free_fn, void *ctx);
CG_API void cg_set_anomaly_hook(cg_anomaly_fn fn, void *ctx);

/* Op registry: named custom ops callable from C (cg_op_call, or
 * cg_op_call_handle on a handle from cg_op_find) and from Python
 * (cgrad.ops.call / cgrad.ops.<name>, after cgrad.ops.load_library loads a
 * shared library that registers them). Each call records one tape entry,
 * as a built-in op does: the entry keeps the call's params and what it
 * saves (inputs, output) in itself, names the op by its registered name
 * (grad_fn name, anomaly reports, entry observers), and a backward override
 * pushed for that name (or "*") replaces its backward. Process-wide and
 * thread-safe.
 *
 * forward(ctx, n_inputs, inputs, n_params, params, &out) computes a NEW
 * tensor from the inputs; it runs with grad mode off. backward(ctx,
 * n_inputs, inputs, n_params, params, output, grad_output, needs_input_grad,
 * grad_inputs) gets the call's inputs, its output (linked to the call's
 * entry, as a saved output of a built-in is), the gradient of the output,
 * and sets grad_inputs[j] to a NEW reference of inputs[j]'s dtype and shape
 * (or a shape that broadcasts to it: it is summed down) or leaves it NULL,
 * for each j with needs_input_grad[j]; any other shape or dtype fails the
 * backward naming the op and the input. It runs with grad mode ==
 * create_graph: written with cg_ ops, it is differentiable (double backward
 * works through it). A saved input or output modified in place after the
 * call fails the backward with CG_ERR_AUTOGRAD naming the op, as for a
 * built-in. All pointers passed to forward and backward are borrowed for
 * the call.
 *
 * cg_op_register: name is letters, digits and '_' (not starting with a
 * digit, < 64 characters) and must not be registered yet; 1..16 inputs,
 * 0..16 params. The registry owns ctx (ctx_free(ctx) when the op is
 * unregistered and no recorded call uses it any more, or at once if
 * registration fails). */
typedef cg_status (*cg_op_forward_fn)(void *ctx, int n_inputs, cg_tensor *const *inputs,
                                      int n_params, const double *params, cg_tensor **out);
typedef cg_status (*cg_op_backward_fn)(void *ctx, int n_inputs, cg_tensor *const *inputs,
                                       int n_params, const double *params, cg_tensor *output,
                                       cg_tensor *grad_output, const int *needs_input_grad,
                                       cg_tensor **grad_inputs);
CG_API cg_status cg_op_register(const char *name, int n_inputs, int n_params,
                                cg_op_forward_fn forward, cg_op_backward_fn backward, void *ctx,
                                cg_ctx_free_fn ctx_free);
/* CG_ERR_VALUE if no op has that name. Entries already recorded keep working. */
CG_API cg_status cg_op_unregister(const char *name);
/* Calls op name: n_inputs / n_params must match its registration. *out is a
 * new reference (recorded on the tape when grad mode is on and an input
 * requires grad). Looks the name up under the registry's lock on every
 * call; a hot loop takes a handle once instead. */
CG_API cg_status cg_op_call(const char *name, int n_inputs, cg_tensor *const *inputs, int n_params,
                            const double *params, cg_tensor **out);
/* A handle on one registered op: calls through it take no lock and do no
 * lookup, so they cost what a built-in op costs. cg_op_find sets *out to a
 * NEW handle (CG_ERR_VALUE naming the name when none is registered);
 * release it with cg_op_handle_free (NULL is fine). The handle keeps the op
 * (and its ctx) alive: after cg_op_unregister, calls through it still work
 * and run the op it was taken on, even when another op has since been
 * registered under the same name. */
typedef struct cg_op_handle cg_op_handle; /* opaque, refcounted */
CG_API cg_status cg_op_find(const char *name, cg_op_handle **out);
CG_API void cg_op_handle_free(cg_op_handle *handle);
/* cg_op_call through a handle (the same checks, results and errors). */
CG_API cg_status cg_op_call_handle(cg_op_handle *handle, int n_inputs, cg_tensor *const *inputs,
                                   int n_params, const double *params, cg_tensor **out);
/* 1 while the op the handle refers to is registered, 0 once it was
 * unregistered (or handle is NULL). */
CG_API int cg_op_handle_is_registered(const cg_op_handle *handle);
/* What op name's backward receives (default: both). An op whose backward
 * does not read its inputs (or output) says so, and its calls keep nothing
 * alive for backward: the inputs array then holds NULLs (output NULL). */
CG_API cg_status cg_op_set_saves(const char *name, int save_inputs, int save_output);
CG_API int cg_op_count(void);
/* Name of the i-th registered op (registration order), NULL when out of
 * range. Borrowed: valid until that op is unregistered. */
CG_API const char *cg_op_name(int i);
CG_API cg_status cg_op_info(const char *name, int *n_inputs, int *n_params);
/* cg_gradcheck of op name at these (float64) inputs. */
CG_API cg_status cg_op_gradcheck(const char *name, int n_inputs, cg_tensor *const *inputs,
                                 int n_params, const double *params, double eps, double atol,
                                 double rtol);

/* Tape-entry observers (debugging), per thread. While one is pushed, every
 * entry that a backward on this thread runs calls fn, before its backward,
 * with the op's name, its sequence number, where it was created (borrowed,
 * NULL unless it was recorded in anomaly mode) and the gradients flowing
 * into its outputs (borrowed, valid during the call, never NULL: zeros for
 * an output that got none). fn runs with grad mode off and must not modify
 * the gradients (use cg_tensor_register_hook to change one); a failing
 * status aborts the backward. Observers nest; the innermost runs first.
 * The observer owns ctx (ctx_free(ctx) when popped). */
typedef cg_status (*cg_entry_hook_fn)(void *ctx, const char *op_name, uint64_t seq,
                                      const char *location, int n_outputs,
                                      cg_tensor *const *grad_outputs);
CG_API cg_status cg_entry_hook_push(cg_entry_hook_fn fn, void *ctx, cg_ctx_free_fn ctx_free,
                                    int64_t *handle);
/* CG_ERR_VALUE if handle is not the innermost observer of this thread. */
CG_API cg_status cg_entry_hook_pop(int64_t handle);

/* For callbacks: set the thread's error message and return status. */
CG_API cg_status cg_set_error(cg_status status, const char *message);

/* Gradient check. fn computes one output tensor from n_inputs float64
 * inputs. Compares cg_grad of sum(out * v) (v fixed random) against float64
 * central differences. CG_OK if every element agrees within
 * atol + rtol*|numeric|; otherwise CG_ERR_VALUE and cg_last_error() names
 * the input, the element index and both values. */
typedef cg_status (*cg_fn)(void *ctx, int n_inputs, cg_tensor *const *inputs,
                           cg_tensor **out);
CG_API cg_status cg_gradcheck(cg_fn fn, void *ctx, int n_inputs, cg_tensor *const *inputs,
                              double eps, double atol, double rtol);

/* ------------------------------------------- elementwise, broadcasting */
/* Binary ops follow NumPy broadcasting and type promotion
 * (bool < int64 < float32 < float64). */
CG_API cg_status cg_add(cg_tensor *a, cg_tensor *b, cg_tensor **out);
CG_API cg_status cg_sub(cg_tensor *a, cg_tensor *b, cg_tensor **out);
CG_API cg_status cg_mul(cg_tensor *a, cg_tensor *b, cg_tensor **out);
CG_API cg_status cg_div(cg_tensor *a, cg_tensor *b, cg_tensor **out); /* true division */
CG_API cg_status cg_pow(cg_tensor *a, cg_tensor *b, cg_tensor **out);
CG_API cg_status cg_minimum(cg_tensor *a, cg_tensor *b, cg_tensor **out);
CG_API cg_status cg_maximum(cg_tensor *a, cg_tensor *b, cg_tensor **out);
/* Scalar right-hand side, result keeps a's dtype (float), like PyTorch. */
CG_API cg_status cg_add_scalar(cg_tensor *a, double s, cg_tensor **out);
CG_API cg_status cg_mul_scalar(cg_tensor *a, double s, cg_tensor **out);
CG_API cg_status cg_pow_scalar(cg_tensor *a, double exponent, cg_tensor **out);
/* Comparisons: bool result, never recorded. */
CG_API cg_status cg_eq(cg_tensor *a, cg_tensor *b, cg_tensor **out);
CG_API cg_status cg_ne(cg_tensor *a, cg_tensor *b, cg_tensor **out);
CG_API cg_status cg_lt(cg_tensor *a, cg_tensor *b, cg_tensor **out);
CG_API cg_status cg_le(cg_tensor *a, cg_tensor *b, cg_tensor **out);
CG_API cg_status cg_gt(cg_tensor *a, cg_tensor *b, cg_tensor **out);
CG_API cg_status cg_ge(cg_tensor *a, cg_tensor *b, cg_tensor **out);
/* cond (bool) ? a : b, all three broadcast. */
CG_API cg_status cg_where(cg_tensor *cond, cg_tensor *a, cg_tensor *b, cg_tensor **out);

/* --------------------------------------------------------------- unary */
CG_API cg_status cg_neg(cg_tensor *a, cg_tensor **out);
CG_API cg_status cg_exp(cg_tensor *a, cg_tensor **out);
CG_API cg_status cg_log(cg_tensor *a, cg_tensor **out);
CG_API cg_status cg_sqrt(cg_tensor *a, cg_tensor **out);
CG_API cg_status cg_abs(cg_tensor *a, cg_tensor **out);
CG_API cg_status cg_sign(cg_tensor *a, cg_tensor **out);  /* zero gradient */
CG_API cg_status cg_round(cg_tensor *a, cg_tensor **out); /* half to even; zero gradient */
CG_API cg_status cg_floor(cg_tensor *a, cg_tensor **out); /* zero gradient */
CG_API cg_status cg_ceil(cg_tensor *a, cg_tensor **out);  /* zero gradient */
CG_API cg_status cg_relu(cg_tensor *a, cg_tensor **out);
CG_API cg_status cg_leaky_relu(cg_tensor *a, double negative_slope, cg_tensor **out);
CG_API cg_status cg_elu(cg_tensor *a, double alpha, cg_tensor **out);
/* approximate: 0 exact (erf), 1 tanh approximation. */
CG_API cg_status cg_gelu(cg_tensor *a, int approximate, cg_tensor **out);
CG_API cg_status cg_sigmoid(cg_tensor *a, cg_tensor **out);
CG_API cg_status cg_tanh(cg_tensor *a, cg_tensor **out);
/* log(1 + exp(beta*x)) / beta, linear above threshold (as PyTorch). */
CG_API cg_status cg_softplus(cg_tensor *a, double beta, double threshold, cg_tensor **out);
/* Bounds may be -INFINITY / INFINITY for "none". Gradient 1 inside [lo, hi]. */
CG_API cg_status cg_clamp(cg_tensor *a, double lo, double hi, cg_tensor **out);

/* ---------------------------------------------------------- reductions */
/* dims == NULL (ndims 0) reduces over every dim. Repeated dims are an error. */
CG_API cg_status cg_sum(cg_tensor *a, const int *dims, int ndims, int keepdim, cg_tensor **out);
CG_API cg_status cg_mean(cg_tensor *a, const int *dims, int ndims, int keepdim, cg_tensor **out);
/* correction 1: unbiased (PyTorch default), 0: population. */
CG_API cg_status cg_var(cg_tensor *a, const int *dims, int ndims, double correction,
                        int keepdim, cg_tensor **out);
/* Values only; the gradient goes to the (first) arg-extremum, split evenly
 * among ties as PyTorch's amax does. */
CG_API cg_status cg_max(cg_tensor *a, const int *dims, int ndims, int keepdim, cg_tensor **out);
CG_API cg_status cg_min(cg_tensor *a, const int *dims, int ndims, int keepdim, cg_tensor **out);
/* int64 index of the first extremum along dim; flatten_all != 0 ignores dim
 * and returns a 0-d index into the flattened tensor. */
CG_API cg_status cg_argmax(cg_tensor *a, int dim, int keepdim, int flatten_all, cg_tensor **out);
CG_API cg_status cg_argmin(cg_tensor *a, int dim, int keepdim, int flatten_all, cg_tensor **out);
CG_API cg_status cg_logsumexp(cg_tensor *a, const int *dims, int ndims, int keepdim,
                              cg_tensor **out);
CG_API cg_status cg_softmax(cg_tensor *a, int dim, cg_tensor **out);
CG_API cg_status cg_log_softmax(cg_tensor *a, int dim, cg_tensor **out);
/* Sums a broadcast tensor back down to shape (the adjoint of expand). */
CG_API cg_status cg_sum_to_shape(cg_tensor *a, int ndim, const int64_t *shape, cg_tensor **out);

/* --------------------------------------------------------------- shape */
/* Views where the layout allows (no copy), copies otherwise. One shape entry
 * may be -1. */
CG_API cg_status cg_reshape(cg_tensor *a, int ndim, const int64_t *shape, cg_tensor **out);
CG_API cg_status cg_permute(cg_tensor *a, const int *perm, cg_tensor **out); /* ndim entries */
CG_API cg_status cg_transpose(cg_tensor *a, int dim0, int dim1, cg_tensor **out);
/* Broadcast view (stride 0); -1 keeps a dim; new leading dims allowed. */
CG_API cg_status cg_expand(cg_tensor *a, int ndim, const int64_t *shape, cg_tensor **out);
CG_API cg_status cg_squeeze(cg_tensor *a, int dim, cg_tensor **out); /* no-op if size != 1 */
CG_API cg_status cg_squeeze_all(cg_tensor *a, cg_tensor **out);
CG_API cg_status cg_unsqueeze(cg_tensor *a, int dim, cg_tensor **out);
/* Python slice semantics along dim: negative start/stop count from the end,
 * out-of-range values are clamped; step > 0. A view. */
CG_API cg_status cg_slice(cg_tensor *a, int dim, int64_t start, int64_t stop, int64_t step,
                          cg_tensor **out);
/* a[..., index, ...] along dim (removes dim). A view. */
CG_API cg_status cg_select(cg_tensor *a, int dim, int64_t index, cg_tensor **out);
CG_API cg_status cg_cat(int n, cg_tensor *const *tensors, int dim, cg_tensor **out);
CG_API cg_status cg_stack(int n, cg_tensor *const *tensors, int dim, cg_tensor **out);
/* Contiguous copy (differentiable); returns a new reference to a itself
 * when a is already contiguous. */
CG_API cg_status cg_contiguous(cg_tensor *a, cg_tensor **out);
CG_API cg_status cg_clone(cg_tensor *a, cg_tensor **out);
/* Cast; differentiable between floating dtypes. */
CG_API cg_status cg_to_dtype(cg_tensor *a, cg_dtype dtype, cg_tensor **out);

/* ------------------------------------------------------------ indexing */
/* index: int64 1-D; negative entries count from the end. */
CG_API cg_status cg_index_select(cg_tensor *a, int dim, cg_tensor *index, cg_tensor **out);
/* out = a with src rows added at index along dim (out of place). */
CG_API cg_status cg_index_add(cg_tensor *a, int dim, cg_tensor *index, cg_tensor *src,
                              cg_tensor **out);
/* out[i][j] = a[index[i][j]][j] (dim 0), etc.; index int64, same ndim. */
CG_API cg_status cg_gather(cg_tensor *a, int dim, cg_tensor *index, cg_tensor **out);
/* out = a; out[index[i][j]][j] += src[i][j] (dim 0), etc. (out of place). */
CG_API cg_status cg_scatter_add(cg_tensor *a, int dim, cg_tensor *index, cg_tensor *src,
                                cg_tensor **out);
/* Flat (row-major) positions of the true elements of a bool mask, int64 1-D. */
CG_API cg_status cg_nonzero_flat(cg_tensor *mask, cg_tensor **out);
/* weight (num, dim) looked up at int64 indices of any shape -> (*idx, dim). */
CG_API cg_status cg_embedding(cg_tensor *weight, cg_tensor *indices, cg_tensor **out);

/* ---------------------------------------------------- row-sparse tensors */
/* A row-sparse tensor is what Embedding(sparse=True) gives its weight as
 * gradient (PyTorch's sparse COO tensor with one sparse dim): dense shape
 * (num_rows, *row_shape); row indices[k] holds values[k]. Indices may repeat
 * (uncoalesced: the rows sum) until cg_sparse_coalesce. Sparse tensors carry
 * no autograd history; shape/dtype/numel queries describe the dense tensor,
 * cg_tensor_data returns NULL and cg_tensor_is_contiguous 0. Only calls
 * documented here (and cg_detach, cg_tensor_set_grad, clipping, the sparse
 * optimizer updates) accept them; every other op returns CG_ERR_UNSUPPORTED. */
CG_API cg_layout cg_tensor_layout(const cg_tensor *t); /* CG_STRIDED for NULL */
CG_API int cg_tensor_is_sparse(const cg_tensor *t);
/* New row-sparse tensor of shape (num_rows, *values.shape[1:]). indices:
 * int64 1-D (nnz,) with entries in [0, num_rows); values: float32/float64
 * (or float16: on the host a storage type, as for dense tensors),
 * ndim >= 1, values.shape[0] == nnz, not requiring grad. Both borrowed: the
 * result holds a reference to each (a contiguous copy when not contiguous),
 * so it shares their memory as PyTorch's sparse_coo_tensor does. */
CG_API cg_status cg_sparse_rows(cg_tensor *indices, cg_tensor *values, int64_t num_rows,
                                cg_tensor **out);
/* New references to the parts of a sparse t: int64 (nnz,) and (nnz, ...). */
CG_API cg_status cg_sparse_indices(cg_tensor *t, cg_tensor **out);
CG_API cg_status cg_sparse_values(cg_tensor *t, cg_tensor **out);
CG_API int64_t cg_sparse_nnz(const cg_tensor *t);          /* -1 if not sparse */
CG_API int cg_sparse_is_coalesced(const cg_tensor *t);     /* 0 if not sparse */
/* New sparse tensor with sorted unique indices, duplicate rows summed in the
 * order they appear (a new reference to t when t is coalesced already). */
CG_API cg_status cg_sparse_coalesce(cg_tensor *t, cg_tensor **out);
/* New dense contiguous tensor: zeros plus every row added in index order
 * (the same float sums as index_add). A strided t gives a new ref to t. */
CG_API cg_status cg_sparse_to_dense(cg_tensor *t, cg_tensor **out);
/* Drops every stored row of a sparse t in place (nnz 0: all zeros), as
 * PyTorch's zero_ on a sparse tensor. */
CG_API cg_status cg_sparse_zero_(cg_tensor *t);
/* a + b for same shape and dtype: sparse + sparse is sparse (the parts
 * concatenated, not coalesced); a sparse/dense mix is dense (PyTorch's). */
CG_API cg_status cg_sparse_add(cg_tensor *a, cg_tensor *b, cg_tensor **out);
/* cg_embedding whose backward gives the weight a row-sparse gradient: one
 * row per looked-up index (uncoalesced, as PyTorch), the rows of
 * padding_idx left out (padding_idx < 0: none). Its backward refuses
 * create_graph (CG_ERR_UNSUPPORTED): use cg_embedding for double backward. */
CG_API cg_status cg_embedding_sparse(cg_tensor *weight, cg_tensor *indices, int64_t padding_idx,
                                     cg_tensor **out);

/* ------------------------------------------- sparsely connected linear */
/* out (N, out_features) = x (N, in) @ W^T + bias, W (out_features, in) given
 * in CSR: row o has the connections k in [indptr[o], indptr[o+1]), input
 * column indices[k] and weight values[k]. indptr int64 (out_features + 1,)
 * non-decreasing from 0 to nnz; indices int64 (nnz,) in [0, in); values
 * (nnz,) and bias (out_features,) (or NULL) of x's dtype (float32/float64).
 * Forward and backward cost O(N * nnz): differentiable in x, values and
 * bias (the backward is itself built of differentiable ops, so higher
 * derivatives work). All borrowed; *out new. */
CG_API cg_status cg_sparse_linear(cg_tensor *x, cg_tensor *indptr, cg_tensor *indices,
                                  cg_tensor *values, cg_tensor *bias, int64_t out_features,
                                  cg_tensor **out);

/* -------------------------------------------------------- linear algebra */
/* NumPy matmul rules: 1-D x 1-D dot, 2-D, batched with broadcast batch dims. */
CG_API cg_status cg_matmul(cg_tensor *a, cg_tensor *b, cg_tensor **out);
/* PyTorch's F.linear as one op each way: out = x @ weight^T + bias, x
 * (.., in_features) with at least 1 dim, weight (out_features, in_features),
 * bias (out_features) or NULL; out (.., out_features). The forward is one
 * GEMM accumulating onto the bias (one backend "linear" kernel on a
 * device); the backward (op "linear", differentiable) is g @ weight, the
 * rows of g^T @ x, and the sum of g's rows. All borrowed; *out new. */
CG_API cg_status cg_linear(cg_tensor *x, cg_tensor *weight, cg_tensor *bias, cg_tensor **out);

/* Row-major GEMM hook: C = alpha * op(A) @ op(B) + beta * C, op(X) = X or
 * X^T when trans_x != 0; A is m x k after op, B is k x n, C is m x n; lda,
 * ldb, ldc are row strides in elements. */
typedef void (*cg_sgemm_fn)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                            float alpha, const float *a, int64_t lda, const float *b,
                            int64_t ldb, float beta, float *c, int64_t ldc);
typedef void (*cg_dgemm_fn)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                            double alpha, const double *a, int64_t lda, const double *b,
                            int64_t ldb, double beta, double *c, int64_t ldc);
/* Install a GEMM (e.g. BLAS). NULL restores the built-in blocked kernel. */
CG_API void cg_set_gemm(cg_sgemm_fn sgemm, cg_dgemm_fn dgemm);
/* Threads used by the built-in GEMM for large products (about 1e6
 * multiply-adds and up; smaller ones stay on the calling thread). The
 * default is the number of online CPUs, at most 8; n <= 0 restores it, and
 * n is capped at 64. The workers are created on the first large product and
 * sleep between products; one product uses them at a time (a concurrent one
 * runs single-threaded). Installed hooks (cg_set_gemm) are not affected.
 * Without POSIX threads the GEMM is single-threaded and get returns 1. */
CG_API void cg_set_num_threads(int n);
CG_API int cg_get_num_threads(void);
/* The built-in kernels, usable directly. */
CG_API void cg_builtin_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                             float alpha, const float *a, int64_t lda, const float *b,
                             int64_t ldb, float beta, float *c, int64_t ldc);
CG_API void cg_builtin_dgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                             double alpha, const double *a, int64_t lda, const double *b,
                             int64_t ldb, double beta, double *c, int64_t ldc);

/* ------------------------------------------------------------------ nn */
/* x (N, C_in, H, W), weight (C_out, C_in/groups, kH, kW), bias (C_out) or
 * NULL. stride/padding/dilation: {h, w}. */
CG_API cg_status cg_conv2d(cg_tensor *x, cg_tensor *weight, cg_tensor *bias,
                           const int64_t stride[2], const int64_t padding[2],
                           const int64_t dilation[2], int64_t groups, cg_tensor **out);
/* x (N, C, H, W) or (C, H, W), C, H, W >= 1 (N may be 0); padding counts as
 * -inf in max_pool2d. */
CG_API cg_status cg_max_pool2d(cg_tensor *x, const int64_t kernel[2], const int64_t stride[2],
                               const int64_t padding[2], cg_tensor **out);
CG_API cg_status cg_avg_pool2d(cg_tensor *x, const int64_t kernel[2], const int64_t stride[2],
                               const int64_t padding[2], int count_include_pad,
                               cg_tensor **out);
/* Zeroes elements with probability p, scales the rest by 1/(1-p); identity
 * when training == 0. Uses the process RNG. */
CG_API cg_status cg_dropout(cg_tensor *x, double p, int training, cg_tensor **out);

/* How a loss reduces its per-element values (PyTorch's reduction=). */
typedef enum {
    CG_REDUCTION_NONE = 0, /* one loss per target */
    CG_REDUCTION_MEAN = 1, /* sum divided by the total weight of the counted targets */
    CG_REDUCTION_SUM = 2
} cg_reduction;
/* Negative log-likelihood of class indices (PyTorch's nll_loss): input
 * log-probabilities (N, C, d1, ...) or (C,), target int64 of the input's
 * shape without the class dim (() for (C,)), weight (C,) in the input's
 * dtype or NULL. loss = -weight[t] * input[n, t, d...], 0 where t ==
 * ignore_index; CG_REDUCTION_MEAN divides the sum by the summed weights of
 * the targets not ignored (NaN when there are none). A target outside
 * [0, C) other than ignore_index fails with CG_ERR_INDEX. On a device that
 * check copies the target to the host, unless cg_to_device uploaded it from
 * the host and it was not written since: the range of its values, noted at
 * the upload, settles it. (Memory written outside cgrad since then is not
 * seen: the device kernels then skip a target out of range, whose loss is
 * NaN.) weight takes no gradient (CG_ERR_UNSUPPORTED when it requires one). */
CG_API cg_status cg_nll_loss(cg_tensor *input, cg_tensor *target, cg_tensor *weight,
                             int64_t ignore_index, cg_reduction reduction, cg_tensor **out);

/* ------------------------------------------------------------ in-place */
/* Bump the version counter. Refused (CG_ERR_AUTOGRAD) while grad mode is on
 * and the target requires grad: a leaf would lose its history and a saved
 * tensor would change under the tape. Use them under no-grad (optimizers,
 * initialisation). src/b broadcast to the target's shape. */
CG_API cg_status cg_add_(cg_tensor *a, cg_tensor *b, double alpha); /* a += alpha * b */
CG_API cg_status cg_mul_(cg_tensor *a, cg_tensor *b);               /* a *= b */
CG_API cg_status cg_add_scalar_(cg_tensor *a, double s);
CG_API cg_status cg_mul_scalar_(cg_tensor *a, double s); /* row-sparse a: its stored rows */
CG_API cg_status cg_zero_(cg_tensor *a);
CG_API cg_status cg_fill_(cg_tensor *a, double value);
CG_API cg_status cg_copy_(cg_tensor *dst, cg_tensor *src); /* casts dtype */

/* ------------------------- learning-rate schedules: pure functions of the step */
/* Each schedule is lr = f(options, base_lr, step) with no hidden state, so a
 * run resumed at step k gets exactly the values an uninterrupted run gets and
 * any step can be evaluated directly. The formulas are PyTorch's closed forms
 * (torch.optim.lr_scheduler), argument names are PyTorch's.
 *  - step counts scheduler steps from 0 (PyTorch's last_epoch); step < 0 is
 *    CG_ERR_VALUE.
 *  - base_lr is the group's initial lr: finite and >= 0.
 *  - opt and lr must not be NULL (CG_ERR_NULL). Options are borrowed for the
 *    call only. A bad option is CG_ERR_VALUE with a message naming it and its
 *    value; *lr is left unchanged on failure. */

/* base_lr * gamma^(step / step_size) (integer division). step_size >= 1,
 * gamma finite >= 0. */
typedef struct cg_lr_step_options {
    int64_t step_size;
    double gamma;
} cg_lr_step_options;
CG_API cg_status cg_lr_step(const cg_lr_step_options *opt, double base_lr, int64_t step,
                            double *lr);

/* base_lr * gamma^(number of milestones <= step). milestones: n_milestones
 * entries >= 0 in non-decreasing order (a repeated milestone applies gamma
 * once per repeat, like PyTorch's Counter); may be NULL when n_milestones is 0. */
typedef struct cg_lr_multistep_options {
    const int64_t *milestones;
    int64_t n_milestones;
    double gamma;
} cg_lr_multistep_options;
CG_API cg_status cg_lr_multistep(const cg_lr_multistep_options *opt, double base_lr,
                                 int64_t step, double *lr);

/* base_lr * factor before step total_iters, base_lr from then on.
 * factor in [0, 1], total_iters >= 1. */
typedef struct cg_lr_constant_options {
    double factor;
    int64_t total_iters;
} cg_lr_constant_options;
CG_API cg_status cg_lr_constant(const cg_lr_constant_options *opt, double base_lr,
                                int64_t step, double *lr);

/* base_lr * (start_factor + (end_factor - start_factor) * min(step, total_iters)
 * / total_iters). start_factor in (0, 1], end_factor in [0, 1], total_iters >= 1. */
typedef struct cg_lr_linear_options {
    double start_factor;
    double end_factor;
    int64_t total_iters;
} cg_lr_linear_options;
CG_API cg_status cg_lr_linear(const cg_lr_linear_options *opt, double base_lr, int64_t step,
                              double *lr);

/* base_lr * gamma^step. gamma finite >= 0. */
typedef struct cg_lr_exponential_options {
    double gamma;
} cg_lr_exponential_options;
CG_API cg_status cg_lr_exponential(const cg_lr_exponential_options *opt, double base_lr,
                                   int64_t step, double *lr);

/* eta_min + (base_lr - eta_min) * (1 + cos(pi * step / T_max)) / 2; periodic
 * past T_max, as PyTorch's. T_max >= 1, eta_min finite >= 0. */
typedef struct cg_lr_cosine_options {
    int64_t T_max;
    double eta_min;
} cg_lr_cosine_options;
CG_API cg_status cg_lr_cosine(const cg_lr_cosine_options *opt, double base_lr, int64_t step,
                              double *lr);

/* SGDR: cosine from base_lr to eta_min over cycles of T_0, T_0*T_mult,
 * T_0*T_mult^2, ... steps; lr = eta_min + (base_lr - eta_min) * (1 + cos(pi *
 * T_cur / T_i)) / 2 with T_cur the position inside the current cycle of length
 * T_i. T_0 >= 1, T_mult >= 1, eta_min finite >= 0. The _at form takes a
 * fractional epoch (finite, >= 0; PyTorch's step(epoch)) and also reports
 * T_cur and T_i (either out pointer may be NULL). */
typedef struct cg_lr_cosine_warm_restarts_options {
    int64_t T_0;
    int64_t T_mult;
    double eta_min;
} cg_lr_cosine_warm_restarts_options;
CG_API cg_status cg_lr_cosine_warm_restarts(const cg_lr_cosine_warm_restarts_options *opt,
                                            double base_lr, int64_t step, double *lr);
CG_API cg_status cg_lr_cosine_warm_restarts_at(const cg_lr_cosine_warm_restarts_options *opt,
                                               double base_lr, double epoch, double *lr,
                                               double *t_cur, double *t_i);

/* Annealing between two values inside a one-cycle phase. Only grows at the end. */
typedef enum cg_anneal {
    CG_ANNEAL_COS = 0, /* end + (start - end) / 2 * (1 + cos(pi * pct)) */
    CG_ANNEAL_LINEAR,  /* start + (end - start) * pct */
    CG_ANNEAL_COUNT
} cg_anneal;

/* 1cycle (PyTorch's OneCycleLR). The lr rises from max_lr / div_factor to
 * max_lr over the first pct_start * total_steps steps, then falls to
 * max_lr / div_factor / final_div_factor at step total_steps - 1; with
 * three_phase it first falls back to max_lr / div_factor (symmetric), then
 * to the minimum. Momentum moves the other way between max_momentum and
 * base_momentum. The lr function takes the group's max_lr where the others
 * take base_lr. total_steps >= 1, 0 <= step <= total_steps, pct_start in
 * [0, 1], div_factor and final_div_factor finite > 0, momenta finite; a
 * phase of zero length that the step falls into is CG_ERR_VALUE. */
typedef struct cg_lr_one_cycle_options {
    int64_t total_steps;
    double pct_start;
    cg_anneal anneal_strategy;
    double div_factor;
    double final_div_factor;
    int three_phase;
    double base_momentum;
    double max_momentum;
} cg_lr_one_cycle_options;
CG_API cg_status cg_lr_one_cycle(const cg_lr_one_cycle_options *opt, double max_lr,
                                 int64_t step, double *lr);
CG_API cg_status cg_lr_one_cycle_momentum(const cg_lr_one_cycle_options *opt, int64_t step,
                                          double *momentum);

/* base_lr * (1 - min(step, total_iters) / total_iters)^power.
 * total_iters >= 1, power finite >= 0. */
typedef struct cg_lr_polynomial_options {
    int64_t total_iters;
    double power;
} cg_lr_polynomial_options;
CG_API cg_status cg_lr_polynomial(const cg_lr_polynomial_options *opt, double base_lr,
                                  int64_t step, double *lr);

/* cgrad's warmup + cosine in one schedule: linear from
 * base_lr * warmup_start_factor at step 0 to base_lr at step warmup_steps,
 * then cosine to eta_min at step total_steps, eta_min after.
 * warmup_steps >= 0, total_steps >= max(warmup_steps, 1), warmup_start_factor
 * in [0, 1], eta_min finite >= 0. */
typedef struct cg_lr_warmup_cosine_options {
    int64_t warmup_steps;
    int64_t total_steps;
    double warmup_start_factor;
    double eta_min;
} cg_lr_warmup_cosine_options;
CG_API cg_status cg_lr_warmup_cosine(const cg_lr_warmup_cosine_options *opt, double base_lr,
                                     int64_t step, double *lr);
/* ------------- training: optimizer updates, clipping, gradient statistics */
/* Fused in-place update loops: one pass over param, grad and the state
 * buffers, float32 or float64 (all tensors of one call share shape and
 * dtype and are contiguous). The arithmetic follows PyTorch's single-tensor
 * ("foreach=False") optimizers operation for operation, in the tensors'
 * dtype, with the hyper-parameters rounded to that dtype where PyTorch
 * rounds them, so trajectories agree to float rounding. Every tensor
 * written gets its version counter bumped. Never recorded on the tape and
 * allowed in any grad mode (like PyTorch's steps under no_grad). Bad
 * hyper-parameters (negative lr, beta outside [0, 1), nesterov without
 * momentum...) fail with CG_ERR_VALUE naming the field and the value;
 * nothing is written then. All tensor arguments are borrowed.
 * update_sum_sq (the last argument of each): NULL, or where to store
 * sum((param_after - param_before)^2) over the elements, in double,
 * measured in the same pass (blocks of the old weights are kept in a
 * stack buffer; no copy of the tensor) -- the squared norm of the update
 * for an update-to-weight ratio. Left untouched when the call fails. */
typedef struct cg_sgd_options {
    double lr;           /* >= 0 */
    double momentum;     /* >= 0 */
    double dampening;
    double weight_decay; /* >= 0, coupled (added to the gradient) */
    int nesterov;        /* needs momentum > 0 and dampening == 0 */
    int maximize;
} cg_sgd_options;
/* PyTorch's defaults: lr 1e-3, everything else 0. */
CG_API cg_sgd_options cg_sgd_default_options(void);
/* momentum_buffer: NULL when momentum == 0, else the 'momentum_buffer'
 * state; with init_buffer != 0 (the parameter's first step) it is
 * overwritten with the gradient (PyTorch clones the gradient then). */
CG_API cg_status cg_sgd_update(cg_tensor *param, cg_tensor *grad, cg_tensor *momentum_buffer,
                               int init_buffer, const cg_sgd_options *options,
                               double *update_sum_sq);
/* cg_sgd_update of n parameters with one init_buffer (PyTorch's foreach
 * SGD): the lists hold parameter i's tensors at index i (momentum_buffers
 * only with a momentum, else it may be NULL); each parameter's tensors
 * share its device. Every entry is checked before any is updated, so a bad
 * entry fails the call with nothing changed (the message names the
 * parameter's index); no two written tensors may overlap. The results are
 * those of n cg_sgd_update calls; a device's parameters take one kernel
 * call (one launch per dtype on a GPU). No update norm. */
CG_API cg_status cg_sgd_update_multi(int n, cg_tensor *const *params, cg_tensor *const *grads,
                                     cg_tensor *const *momentum_buffers, int init_buffer,
                                     const cg_sgd_options *options);

typedef struct cg_adam_options {
    double lr;           /* >= 0 */
    double beta1, beta2; /* each in [0, 1) */
    double eps;          /* >= 0, added to sqrt(v_hat) */
    double weight_decay; /* >= 0 */
    int decoupled_weight_decay; /* 0: Adam (L2 added to the gradient); 1: AdamW */
    int amsgrad;
    int maximize;
} cg_adam_options;
/* Adam's defaults (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight_decay 0). */
CG_API cg_adam_options cg_adam_default_options(void);
/* AdamW's defaults (as Adam, weight_decay 1e-2, decoupled). */
CG_API cg_adam_options cg_adamw_default_options(void);
/* step: the step count after this step (1 on the first), for the bias
 * corrections. max_exp_avg_sq: required with amsgrad, else ignored. */
CG_API cg_status cg_adam_update(cg_tensor *param, cg_tensor *grad, cg_tensor *exp_avg,
                                cg_tensor *exp_avg_sq, cg_tensor *max_exp_avg_sq, int64_t step,
                                const cg_adam_options *options, double *update_sum_sq);
/* cg_adam_update of n parameters at one step count (PyTorch's foreach Adam):
 * the lists hold parameter i's tensors at index i (max_exp_avg_sqs only with
 * amsgrad, else it may be NULL); each parameter's tensors share its device.
 * Every entry is checked before any is updated, so a bad entry fails the
 * call with nothing changed (the message names the parameter's index); no
 * two written tensors may overlap. The results are those of n
 * cg_adam_update calls; a device's parameters take one kernel call (one
 * launch per dtype on a GPU). No update norm: use cg_adam_update or
 * cg_adam_update_stats to measure. */
CG_API cg_status cg_adam_update_multi(int n, cg_tensor *const *params, cg_tensor *const *grads,
                                      cg_tensor *const *exp_avgs, cg_tensor *const *exp_avg_sqs,
                                      cg_tensor *const *max_exp_avg_sqs, int64_t step,
                                      const cg_adam_options *options);

typedef struct cg_rmsprop_options {
    double lr;           /* >= 0 */
    double alpha;        /* >= 0, smoothing of the squared average */
    double eps;          /* >= 0, added to sqrt(square_avg) */
    double weight_decay; /* >= 0, coupled */
    double momentum;     /* >= 0 */
    int centered;        /* divide by the estimated variance, not the raw second moment */
    int maximize;
} cg_rmsprop_options;
/* PyTorch's defaults: lr 1e-2, alpha 0.99, eps 1e-8. */
CG_API cg_rmsprop_options cg_rmsprop_default_options(void);
/* grad_avg: required when centered; momentum_buffer: required when
 * momentum > 0 (PyTorch starts it at zeros). */
CG_API cg_status cg_rmsprop_update(cg_tensor *param, cg_tensor *grad, cg_tensor *square_avg,
                                   cg_tensor *grad_avg, cg_tensor *momentum_buffer,
                                   const cg_rmsprop_options *options, double *update_sum_sq);
/* cg_rmsprop_update of n parameters (PyTorch's foreach RMSprop): the lists
 * hold parameter i's tensors at index i (grad_avgs only when centered,
 * momentum_buffers only with momentum > 0, else either may be NULL); each
 * parameter's tensors share its device. Every entry is checked before any
 * is updated, so a bad entry fails the call with nothing changed (the
 * message names the parameter's index); no two written tensors may
 * overlap. The results are those of n cg_rmsprop_update calls; a device's
 * parameters take one kernel call (one launch per dtype on a GPU). No
 * update norm. */
CG_API cg_status cg_rmsprop_update_multi(int n, cg_tensor *const *params, cg_tensor *const *grads,
                                         cg_tensor *const *square_avgs,
                                         cg_tensor *const *grad_avgs,
                                         cg_tensor *const *momentum_buffers,
                                         const cg_rmsprop_options *options);

typedef struct cg_adagrad_options {
    double lr;           /* >= 0 */
    double lr_decay;     /* >= 0: lr / (1 + (step - 1) * lr_decay) */
    double weight_decay; /* >= 0, coupled */
    double eps;          /* >= 0, added to sqrt(sum) */
    double initial_accumulator_value; /* >= 0: what 'sum' starts at */
    int maximize;
} cg_adagrad_options;
/* PyTorch's defaults: lr 1e-2, eps 1e-10, the rest 0. */
CG_API cg_adagrad_options cg_adagrad_default_options(void);
/* state_sum: the 'sum' state (the caller fills it with
 * initial_accumulator_value before the first step); step as for Adam. */
CG_API cg_status cg_adagrad_update(cg_tensor *param, cg_tensor *grad, cg_tensor *state_sum,
                                   int64_t step, const cg_adagrad_options *options,
                                   double *update_sum_sq);
/* cg_adagrad_update of n dense parameters at one step count (PyTorch's
 * foreach Adagrad): the lists hold parameter i's tensors at index i; each
 * parameter's tensors share its device. Every entry is checked before any
 * is updated, so a bad entry fails the call with nothing changed (the
 * message names the parameter's index); no two written tensors may
 * overlap. The results are those of n cg_adagrad_update calls; a device's
 * parameters take one kernel call (one launch per dtype on a GPU). No
 * update norm. */
CG_API cg_status cg_adagrad_update_multi(int n, cg_tensor *const *params, cg_tensor *const *grads,
                                         cg_tensor *const *state_sums, int64_t step,
                                         const cg_adagrad_options *options);

/* Updates for a row-sparse grad (param dense contiguous, grad row-sparse of
 * its shape and dtype): only the rows present in the gradient (and, with
 * momentum, in the momentum buffer) are read or written, so the cost scales
 * with those rows, not with the table. The gradient is coalesced first
 * (into a temporary; grad itself is not changed).
 * SGD follows torch.optim.SGD on sparse gradients: momentum_in is NULL on
 * the first step (the buffer starts as the gradient) and afterwards the
 * row-sparse buffer this call returned last time; *momentum_out (momentum >
 * 0 only, else NULL) is the new coalesced buffer m*buf + (1-dampening)*g
 * over the union of rows, nesterov uses g + m*buf. Weight decay is lazy:
 * g + weight_decay*param on the gradient's rows only (PyTorch refuses
 * weight decay with sparse gradients). */
CG_API cg_status cg_sgd_sparse_update(cg_tensor *param, cg_tensor *grad, cg_tensor *momentum_in,
                                      const cg_sgd_options *options, cg_tensor **momentum_out);
/* torch.optim.SparseAdam: dense exp_avg / exp_avg_sq (zeros at the start,
 * param's shape) updated on the gradient's rows only, step (>= 1) the
 * parameter's step count, bias-corrected step size lr*sqrt(1-b2^t)/(1-b1^t),
 * operation for operation as torch's sparse_adam. options: lr, beta1, beta2,
 * eps, maximize (weight_decay, amsgrad, decoupled must be 0). */
CG_API cg_status cg_sparse_adam_update(cg_tensor *param, cg_tensor *grad, cg_tensor *exp_avg,
                                       cg_tensor *exp_avg_sq, int64_t step,
                                       const cg_adam_options *options);
/* torch.optim.Adagrad on a row-sparse grad: state_sum (dense, param's
 * shape) += g^2 and param += -clr * g / (sqrt(sum) + eps) on the gradient's
 * rows only, clr = lr / (1 + (step - 1) * lr_decay). Weight decay is lazy
 * as for SGD (PyTorch refuses it with sparse gradients). */
CG_API cg_status cg_adagrad_sparse_update(cg_tensor *param, cg_tensor *grad, cg_tensor *state_sum,
                                          int64_t step, const cg_adagrad_options *options);

/* Global p-norm of n tensors (any strides, float32/float64, mixed allowed),
 * as PyTorch's get_total_norm: the p-norm of the per-tensor p-norms,
 * accumulated in double. norm_type > 0 or INFINITY (max |x|). NULL
 * entries are skipped; n == 0 gives 0. Row-sparse tensors are accepted
 * here and by the two clips below: each is coalesced in place (the same
 * tensor, duplicate rows summed) and only its stored rows are read and
 * written. cg_clip_grad_agc refuses them (CG_ERR_UNSUPPORTED). */
CG_API cg_status cg_total_norm(int n, cg_tensor *const *tensors, double norm_type,
                               double *total_norm);
/* PyTorch's clip_grad_norm_: total_norm as cg_total_norm, then every grad
 * is scaled in place by clip_coef = min(max_norm / (total_norm + 1e-6), 1)
 * (rounded to the grad's dtype). With error_if_nonfinite and a NaN/inf
 * total norm it fails with CG_ERR_VALUE before writing anything (and still
 * reports total_norm). total_norm / clip_coef may be NULL. max_norm >= 0. */
CG_API cg_status cg_clip_grad_norm(int n, cg_tensor *const *grads, double max_norm,
                                   double norm_type, int error_if_nonfinite,
                                   double *total_norm, double *clip_coef);
/* cg_clip_grad_norm without copying anything to the host: *result is a new
 * float64 tensor [2] = (total_norm, clip_coef). When every grad is on one
 * device other than the cpu, the norms, the coefficient and the scaling run
 * there in one kernel ("clip_norm_"), the result stays there (no wait for
 * the device), and every grad is multiplied and its version bumped, by a
 * coefficient of 1 too (values unchanged), as PyTorch's clip_grad_norm_.
 * Otherwise (host grads, or several devices) it is cg_clip_grad_norm and
 * *result is on the cpu. No error_if_nonfinite: that needs the norm on the
 * host; use cg_clip_grad_norm. The caller frees *result. */
CG_API cg_status cg_clip_grad_norm_tensor(int n, cg_tensor *const *grads, double max_norm,
                                          double norm_type, cg_tensor **result);
/* Clamps every grad into [-clip_value, clip_value] in place (NaN stays
 * NaN). clip_value >= 0. n_clipped (may be NULL) counts changed elements. */
CG_API cg_status cg_clip_grad_value(int n, cg_tensor *const *grads, double clip_value,
                                    int64_t *n_clipped);
/* cg_clip_grad_value with the count left where the grads are: *n_clipped is
 * a new int64 0-d tensor, on their device when every grad is on one device
 * other than the cpu (nothing copied back: no wait for the device), else on
 * the cpu. The caller frees it. */
CG_API cg_status cg_clip_grad_value_tensor(int n, cg_tensor *const *grads, double clip_value,
                                           cg_tensor **n_clipped);
/* Unit-wise adaptive gradient clipping (Brock et al. 2021, as timm's
 * adaptive_clip_grad): for each output unit u (row along dim 0; the whole
 * tensor when ndim <= 1), max_norm = clipping * max(||w_u||, eps); if
 * ||g_u|| >= max_norm, g_u is scaled by max_norm / max(||g_u||, 1e-6).
 * L2 norms. params[i] and grads[i] share shape (contiguous grads); NULL
 * grads are skipped. n_clipped / n_units (may be NULL) count units.
 * clipping > 0, eps >= 0. */
CG_API cg_status cg_clip_grad_agc(int n, cg_tensor *const *params, cg_tensor *const *grads,
                                  double clipping, double eps, int64_t *n_clipped,
                                  int64_t *n_units);
/* cg_clip_grad_agc with the count of clipped units left where the grads
 * are, as cg_clip_grad_value_tensor (*n_clipped: a new int64 0-d tensor;
 * n_units, known from the shapes, may be NULL). On a device every grad's
 * version is bumped, clipped or not (the count is not read there). */
CG_API cg_status cg_clip_grad_agc_tensor(int n, cg_tensor *const *params, cg_tensor *const *grads,
                                         double clipping, double eps, cg_tensor **n_clipped,
                                         int64_t *n_units);

/* One-pass statistics of a float tensor (any strides): sum of squares and
 * max |x| over the finite elements, count of NaN/inf elements. A row-sparse
 * t gives the statistics of its coalesced rows (numel: the dense count). */
typedef struct cg_stats {
    double sum_sq;     /* sum of x^2 over finite elements, in double */
    double max_abs;    /* max |x| over finite elements (0 if none) */
    int64_t nonfinite; /* NaN and +-inf elements */
    int64_t numel;
} cg_stats;
CG_API cg_status cg_tensor_stats(const cg_tensor *t, cg_stats *stats);
/* The same for n tensors at once (one step's gradients and weights in one
 * call): stats[i] (caller's array of n) gets tensor i's statistics; a NULL
 * entry gets all zeros (a parameter without a gradient). A tensor that is
 * not float fails with CG_ERR_DTYPE naming its index, and then every
 * stats[i] is zeroed. The tensors are borrowed; n == 0 is a no-op. */
CG_API cg_status cg_tensor_stats_many(int n, cg_tensor *const *tensors, cg_stats *stats);

/* The four fused updates above, measuring in their one pass what a
 * gradient monitor records per parameter (cgrad.monitor): each block of
 * the gradient and of the old weights is measured while it sits in L1 for
 * the update, so watching every step needs no second pass over memory.
 * The update itself is bit for bit the plain call's. stats->what, set by
 * the caller, selects what is measured (0: nothing, the plain update).
 * For float32 the sums of squares (grad, weight, update) are accumulated
 * in float over runs of at most 256 elements, then in double: relative
 * error below 1.1e-6 (cg_tensor_stats: ~1e-15); max_abs, nonfinite and
 * numel are exact, and a block with non-finite elements or with magnitudes
 * whose squares float cannot hold is summed in double. */
typedef enum cg_measure {
    CG_MEASURE_GRAD = 1,   /* stats->grad: cg_stats of grad as passed in
                            * (before weight decay and maximize) */
    CG_MEASURE_WEIGHT = 2, /* stats->weight: cg_stats of param before the update */
    CG_MEASURE_UPDATE = 4  /* stats->update_sum_sq: as update_sum_sq above */
} cg_measure;
typedef struct cg_update_stats {
    int what;             /* in: CG_MEASURE_* bits */
    double update_sum_sq; /* out; 0 when not selected */
    cg_stats grad;        /* out; all zero when not selected */
    cg_stats weight;      /* out; all zero when not selected */
} cg_update_stats;
/* Arguments and errors as the plain update (fn names itself); stats must
 * not be NULL (CG_ERR_NULL) and its outputs are left untouched when the
 * call fails. On a backend device grad and weight statistics are the
 * device's cg_tensor_stats, run before the update kernel. */
CG_API cg_status cg_sgd_update_stats(cg_tensor *param, cg_tensor *grad,
                                     cg_tensor *momentum_buffer, int init_buffer,
                                     const cg_sgd_options *options, cg_update_stats *stats);
CG_API cg_status cg_adam_update_stats(cg_tensor *param, cg_tensor *grad, cg_tensor *exp_avg,
                                      cg_tensor *exp_avg_sq, cg_tensor *max_exp_avg_sq,
                                      int64_t step, const cg_adam_options *options,
                                      cg_update_stats *stats);
CG_API cg_status cg_rmsprop_update_stats(cg_tensor *param, cg_tensor *grad,
                                         cg_tensor *square_avg, cg_tensor *grad_avg,
                                         cg_tensor *momentum_buffer,
                                         const cg_rmsprop_options *options,
                                         cg_update_stats *stats);
CG_API cg_status cg_adagrad_update_stats(cg_tensor *param, cg_tensor *grad,
                                         cg_tensor *state_sum, int64_t step,
                                         const cg_adagrad_options *options,
                                         cg_update_stats *stats);

/* An optimizer object for training from C alone, over the fused updates:
 *
 *     cg_adam_options o = cg_adamw_default_options();
 *     o.lr = 1e-2;
 *     cg_optimizer *opt = NULL;
 *     cg_optimizer_new_adam(n_params, params, &o, &opt);
 *     for (int step = 0; step < 100; ++step) {
 *         cg_optimizer_zero_grad(opt);
 *         ... forward, cg_backward(loss, NULL, 0, 0) ...
 *         cg_optimizer_step(opt);
 *     }
 *     cg_optimizer_free(opt);
 *
 * It holds a reference to each parameter (leaf float tensors, contiguous,
 * each at most once) and owns their state tensors, created at the first
 * step that finds a gradient (zeros; SGD's momentum buffer starts as the
 * gradient). Parameters without a gradient are skipped and their step
 * count does not advance, as in PyTorch. Options are copied and checked at
 * creation (CG_ERR_VALUE). *out: new object, released with
 * cg_optimizer_free. */
typedef struct cg_optimizer cg_optimizer; /* opaque */
CG_API cg_status cg_optimizer_new_sgd(int n, cg_tensor *const *params,
                                      const cg_sgd_options *options, cg_optimizer **out);
/* Adam, or AdamW when options->decoupled_weight_decay is set. */
CG_API cg_status cg_optimizer_new_adam(int n, cg_tensor *const *params,
                                       const cg_adam_options *options, cg_optimizer **out);
/* AdamW: options (NULL: cg_adamw_default_options()) with decoupled weight
 * decay forced on. */
CG_API cg_status cg_optimizer_new_adamw(int n, cg_tensor *const *params,
                                        const cg_adam_options *options, cg_optimizer **out);
/* RMSprop (alpha, eps, weight_decay, momentum, centered, maximize). State
 * names: "square_avg", "grad_avg" (centered), "momentum_buffer" (momentum > 0). */
CG_API cg_status cg_optimizer_new_rmsprop(int n, cg_tensor *const *params,
                                          const cg_rmsprop_options *options, cg_optimizer **out);
/* One update of every parameter that has a gradient. A row-sparse
 * gradient takes cg_sgd_sparse_update (SGD; its momentum buffer is then
 * row-sparse) and is refused by Adam and RMSprop (CG_ERR_UNSUPPORTED).
 * Every parameter is checked before the first moves: a row-sparse gradient
 * refused, one in another layout than SGD's momentum buffer (CG_ERR_VALUE),
 * a parameter whose data (cg_tensor_set_data) no longer matches its state
 * or is not contiguous, or state that cannot be allocated, fails the step
 * with no parameter updated and no state kept. Only a failure inside an
 * update itself (a device error, or memory for a row-sparse momentum
 * buffer) leaves the parameters before the failing one updated. */
CG_API cg_status cg_optimizer_step(cg_optimizer *opt);
/* cg_optimizer_step measuring every parameter as cg_*_update_stats does
 * (what a gradient monitor records per step): stats holds one entry per
 * parameter (the n given to cg_optimizer_new_*), whose `what` the caller
 * sets. A parameter without a gradient is not updated: its grad stats are
 * zero and its update_sum_sq 0. A row-sparse gradient (cg_sgd_sparse_update)
 * is measured with cg_tensor_stats before the update; its update_sum_sq
 * is NAN (not measured). CG_ERR_NULL for a NULL stats, CG_ERR_VALUE for a
 * `what` with other bits (nothing updated then); otherwise failures as
 * cg_optimizer_step, with the entries of the parameters not reached left
 * alone. */
CG_API cg_status cg_optimizer_step_stats(cg_optimizer *opt, cg_update_stats *stats);
/* Drops every parameter's gradient (set_to_none). NULL is a no-op. */
CG_API void cg_optimizer_zero_grad(cg_optimizer *opt);
/* Learning rate for the following steps (>= 0), for schedules. */
CG_API cg_status cg_optimizer_set_lr(cg_optimizer *opt, double lr);
CG_API double cg_optimizer_get_lr(const cg_optimizer *opt); /* NAN for NULL */
/* Borrowed state tensor `name` ("exp_avg", "exp_avg_sq", "max_exp_avg_sq",
 * "momentum_buffer") of parameter i, or NULL before its first step. */
CG_API cg_tensor *cg_optimizer_state(const cg_optimizer *opt, int i, const char *name);
/* Steps taken by parameter i (-1 for a bad index). */
CG_API int64_t cg_optimizer_param_steps(const cg_optimizer *opt, int i);
CG_API void cg_optimizer_free(cg_optimizer *opt); /* NULL is a no-op */

/* Mixed precision (GradScaler's unscale_): every gradient multiplied in
 * place by inv_scale and its NaN/inf elements counted, in one pass per
 * gradient (one kernel per device for those on a backend device); PyTorch's
 * _amp_foreach_non_finite_check_and_unscale_. Elements are counted before
 * scaling. The multiply is in float32 for float16 and float32 gradients
 * (inv_scale rounded to float32; float16 results rounded once, as
 * PyTorch's float32 opmath), in double for float64 ones. Float32/float64 on
 * the host, float16/float32/float64 on a device; any strides (a broadcast,
 * stride-0 dimension is refused); a row-sparse gradient scales its stored
 * rows and counts over its coalesced rows. Host and device gradients may
 * be mixed. Versions are bumped; nothing is recorded on the tape. A
 * gradient listed twice is scaled twice. grads are borrowed; *nonfinite
 * (may be NULL) gets the total count. CG_ERR_NULL / CG_ERR_DTYPE /
 * CG_ERR_VALUE name the index of a NULL, non-float or broadcast gradient
 * (nothing is written then); a NaN inv_scale is CG_ERR_VALUE; n == 0 is a
 * no-op. */
CG_API cg_status cg_amp_unscale_(int n, cg_tensor *const *grads, double inv_scale,
                                 int64_t *nonfinite);

#ifdef __cplusplus
}
#endif
#endif /* CGRAD_H */
