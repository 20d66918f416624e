# Declarations of include/cgrad.h for Cython. The function block is generated
# by tools/gen_pxd.py; tests/python/test_pxd_sync.py checks they agree.
from libc.stdint cimport int64_t, uint64_t

cdef extern from "cgrad.h" nogil:
    ctypedef enum cg_status:
        CG_OK
        CG_ERR_NULL
        CG_ERR_SHAPE
        CG_ERR_DTYPE
        CG_ERR_INDEX
        CG_ERR_VALUE
        CG_ERR_NOMEM
        CG_ERR_AUTOGRAD
        CG_ERR_UNSUPPORTED
        CG_ERR_CALLBACK
        CG_STATUS_COUNT
    ctypedef enum cg_dtype:
        CG_FLOAT32
        CG_FLOAT64
        CG_INT64
        CG_BOOL
        CG_FLOAT16
        CG_DTYPE_COUNT
    ctypedef enum cg_layout:
        CG_STRIDED
        CG_SPARSE_ROWS
    int CG_MAX_DIMS
    const char *CG_VERSION_STRING
    ctypedef struct cg_tensor:
        pass
    ctypedef struct cg_sgd_options:
        double lr, momentum, dampening, weight_decay
        int nesterov, maximize
    ctypedef struct cg_adam_options:
        double lr, beta1, beta2, eps, weight_decay
        int decoupled_weight_decay, amsgrad, maximize
    ctypedef struct cg_rmsprop_options:
        double lr, alpha, eps, weight_decay, momentum
        int centered, maximize
    ctypedef struct cg_adagrad_options:
        double lr, lr_decay, weight_decay, eps, initial_accumulator_value
        int maximize
    ctypedef struct cg_optimizer:
        pass
    ctypedef struct cg_op_handle:
        pass
    ctypedef struct cg_stats:
        double sum_sq, max_abs
        int64_t nonfinite, numel
    ctypedef enum cg_measure:
        CG_MEASURE_GRAD
        CG_MEASURE_WEIGHT
        CG_MEASURE_UPDATE
    ctypedef struct cg_update_stats:
        int what
        double update_sum_sq
        cg_stats grad, weight
    ctypedef enum cg_anneal:
        CG_ANNEAL_COS
        CG_ANNEAL_LINEAR
        CG_ANNEAL_COUNT
    ctypedef struct cg_lr_step_options:
        int64_t step_size
        double gamma
    ctypedef struct cg_lr_multistep_options:
        const int64_t *milestones
        int64_t n_milestones
        double gamma
    ctypedef struct cg_lr_constant_options:
        double factor
        int64_t total_iters
    ctypedef struct cg_lr_linear_options:
        double start_factor
        double end_factor
        int64_t total_iters
    ctypedef struct cg_lr_exponential_options:
        double gamma
    ctypedef struct cg_lr_cosine_options:
        int64_t T_max
        double eta_min
    ctypedef struct cg_lr_cosine_warm_restarts_options:
        int64_t T_0
        int64_t T_mult
        double eta_min
    ctypedef struct cg_lr_one_cycle_options:
        int64_t total_steps
        double pct_start
        cg_anneal anneal_strategy
        double div_factor
        double final_div_factor
        int three_phase
        double base_momentum
        double max_momentum
    ctypedef struct cg_lr_polynomial_options:
        int64_t total_iters
        double power
    ctypedef struct cg_lr_warmup_cosine_options:
        int64_t warmup_steps
        int64_t total_steps
        double warmup_start_factor
        double eta_min
    ctypedef void (*cg_release_fn)(void *release_ctx) noexcept
    ctypedef cg_status (*cg_custom_backward_fn)(void *ctx, int n_outputs, cg_tensor **grad_outputs, int n_inputs, const int *needs_input_grad, cg_tensor **grad_inputs) noexcept
    ctypedef void (*cg_ctx_free_fn)(void *ctx) noexcept
    ctypedef cg_status (*cg_grad_hook_fn)(void *ctx, cg_tensor *grad, cg_tensor **replacement) noexcept
    ctypedef cg_status (*cg_post_accumulate_hook_fn)(void *ctx, cg_tensor *leaf) noexcept
    ctypedef cg_status (*cg_override_fn)(void *ctx, const char *op_name, int n_inputs, cg_tensor **inputs, int n_outputs, cg_tensor **outputs, cg_tensor **grad_outputs, const int *needs_input_grad, cg_tensor **grad_inputs) noexcept
    ctypedef cg_status (*cg_fn)(void *ctx, int n_inputs, cg_tensor **inputs, cg_tensor **out) noexcept
    ctypedef void *(*cg_location_fn)(void *ctx) noexcept
    ctypedef void (*cg_location_str_fn)(void *tag, char *buf, size_t size) noexcept
    ctypedef void (*cg_location_free_fn)(void *tag) noexcept
    ctypedef cg_status (*cg_anomaly_fn)(void *ctx, const char *message) noexcept
    ctypedef cg_status (*cg_op_forward_fn)(void *ctx, int n_inputs, cg_tensor **inputs, int n_params, const double *params, cg_tensor **out) noexcept
    ctypedef cg_status (*cg_op_backward_fn)(void *ctx, int n_inputs, cg_tensor **inputs, int n_params, const double *params, cg_tensor *output, cg_tensor *grad_output, const int *needs_input_grad, cg_tensor **grad_inputs) noexcept
    ctypedef cg_status (*cg_entry_hook_fn)(void *ctx, const char *op_name, uint64_t seq, const char *location, int n_outputs, cg_tensor **grad_outputs) noexcept
    int CG_DEVICE_CPU
    int CG_MAX_DEVICES
    ctypedef struct cg_backend:
        cg_status (*alloc)(void *ctx, size_t nbytes, int zero, void **handle) noexcept
        void (*release)(void *ctx, void *handle) noexcept
        cg_status (*kernel)(void *ctx, const char *name, int n_out, int n_tensors, cg_tensor * const *tensors, int n_f, const double *f, int n_i, const int64_t *iparam) noexcept
        cg_status (*to_host)(void *ctx, const cg_tensor *t, void *dst) noexcept
        cg_status (*from_host)(void *ctx, cg_tensor *t, const void *src) noexcept
    ctypedef void (*cg_sgemm_fn)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) noexcept
    ctypedef void (*cg_dgemm_fn)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double *a, int64_t lda, const double *b, int64_t ldb, double beta, double *c, int64_t ldc) noexcept

    const char *cg_last_error()
    const char *cg_status_name(cg_status status)
    void cg_clear_error()
    size_t cg_dtype_size(cg_dtype dtype)
    const char *cg_dtype_name(cg_dtype dtype)
    void cg_tensor_retain(cg_tensor *t)
    void cg_tensor_free(cg_tensor *t)
    cg_status cg_empty(cg_dtype dtype, int ndim, const int64_t *shape, cg_tensor **out)
    cg_status cg_zeros(cg_dtype dtype, int ndim, const int64_t *shape, cg_tensor **out)
    cg_status cg_ones(cg_dtype dtype, int ndim, const int64_t *shape, cg_tensor **out)
    cg_status cg_full(cg_dtype dtype, int ndim, const int64_t *shape, double value, cg_tensor **out)
    cg_status cg_scalar(cg_dtype dtype, double value, cg_tensor **out)
    cg_status cg_from_data(cg_dtype dtype, int ndim, const int64_t *shape, const void *data, cg_tensor **out)
    cg_status cg_from_blob(cg_dtype dtype, int ndim, const int64_t *shape, const int64_t *strides, void *data, cg_release_fn release, void *release_ctx, cg_tensor **out)
    cg_status cg_arange(cg_dtype dtype, double start, double end, double step, cg_tensor **out)
    void cg_manual_seed(uint64_t seed)
    void cg_rng_get_state(uint64_t *state)
    cg_status cg_rng_set_state(const uint64_t *state)
    cg_status cg_rand(cg_dtype dtype, int ndim, const int64_t *shape, cg_tensor **out)
    cg_status cg_randn(cg_dtype dtype, int ndim, const int64_t *shape, cg_tensor **out)
    cg_status cg_randint(int64_t low, int64_t high, int ndim, const int64_t *shape, cg_tensor **out)
    cg_status cg_randperm(int64_t n, cg_tensor **out)
    cg_dtype cg_tensor_dtype(const cg_tensor *t)
    int cg_tensor_ndim(const cg_tensor *t)
    const int64_t *cg_tensor_shape(const cg_tensor *t)
    const int64_t *cg_tensor_strides(const cg_tensor *t)
    int64_t cg_tensor_numel(const cg_tensor *t)
    void *cg_tensor_data(const cg_tensor *t)
    int cg_tensor_is_contiguous(const cg_tensor *t)
    uint64_t cg_tensor_version(const cg_tensor *t)
    cg_status cg_tensor_item(const cg_tensor *t, double *out)
    cg_status cg_tensor_copy_to(const cg_tensor *t, void *dst, size_t nbytes)
    cg_status cg_backend_register(const char *name, const cg_backend *vtable, void *ctx, int *device)
    cg_status cg_device_find(const char *name, int *device)
    const char *cg_device_name(int device)
    int cg_tensor_device(const cg_tensor *t)
    void *cg_tensor_device_handle(const cg_tensor *t)
    int64_t cg_tensor_offset(const cg_tensor *t)
    cg_status cg_empty_on(int device, cg_dtype dtype, int ndim, const int64_t *shape, cg_tensor **out)
    cg_status cg_zeros_on(int device, cg_dtype dtype, int ndim, const int64_t *shape, cg_tensor **out)
    cg_status cg_from_handle(int device, cg_dtype dtype, int ndim, const int64_t *shape, const int64_t *strides, int64_t offset, void *handle, size_t nbytes, cg_tensor **out)
    cg_status cg_to_device(cg_tensor *t, int device, cg_tensor **out)
    int cg_tensor_requires_grad(const cg_tensor *t)
    cg_status cg_tensor_set_requires_grad(cg_tensor *t, int requires_grad)
    int cg_tensor_is_leaf(const cg_tensor *t)
    cg_tensor *cg_tensor_grad(const cg_tensor *t)
    cg_status cg_tensor_set_grad(cg_tensor *t, cg_tensor *grad)
    const char *cg_tensor_grad_fn_name(const cg_tensor *t)
    cg_status cg_tensor_set_data(cg_tensor *t, cg_tensor *src)
    cg_status cg_detach(cg_tensor *t, cg_tensor **out)
    int cg_is_grad_enabled()
    int cg_set_grad_enabled(int enabled)
    cg_status cg_backward(cg_tensor *root, cg_tensor *grad, int retain_graph, int create_graph)
    cg_status cg_grad(int n_outputs, cg_tensor **outputs, cg_tensor **grad_outputs, int n_inputs, cg_tensor **inputs, int retain_graph, int create_graph, int allow_unused, cg_tensor **grads)
    cg_status cg_record_custom(const char *name, int n_inputs, cg_tensor **inputs, int n_outputs, cg_tensor **outputs, cg_custom_backward_fn backward, void *ctx, cg_ctx_free_fn ctx_free)
    cg_status cg_tensor_register_hook(cg_tensor *t, cg_grad_hook_fn fn, void *ctx, cg_ctx_free_fn ctx_free, int64_t *handle)
    cg_status cg_tensor_register_post_accumulate_hook(cg_tensor *t, cg_post_accumulate_hook_fn fn, void *ctx, cg_ctx_free_fn ctx_free, int64_t *handle)
    cg_status cg_tensor_remove_hook(cg_tensor *t, int64_t handle)
    cg_status cg_override_push(const char *op_name, cg_override_fn fn, void *ctx, cg_ctx_free_fn ctx_free, int64_t *handle)
    cg_status cg_override_pop(int64_t handle)
    int cg_set_anomaly_mode(int enabled)
    int cg_anomaly_mode()
    const char *cg_anomaly_report()
    void cg_set_location_hook(cg_location_fn fn, cg_location_str_fn str, cg_location_free_fn free_fn, void *ctx)
    void cg_set_anomaly_hook(cg_anomaly_fn fn, void *ctx)
    cg_status cg_op_register(const char *name, int n_inputs, int n_params, cg_op_forward_fn forward, cg_op_backward_fn backward, void *ctx, cg_ctx_free_fn ctx_free)
    cg_status cg_op_unregister(const char *name)
    cg_status cg_op_call(const char *name, int n_inputs, cg_tensor **inputs, int n_params, const double *params, cg_tensor **out)
    cg_status cg_op_find(const char *name, cg_op_handle **out)
    void cg_op_handle_free(cg_op_handle *handle)
    cg_status cg_op_call_handle(cg_op_handle *handle, int n_inputs, cg_tensor **inputs, int n_params, const double *params, cg_tensor **out)
    int cg_op_handle_is_registered(const cg_op_handle *handle)
    cg_status cg_op_set_saves(const char *name, int save_inputs, int save_output)
    int cg_op_count()
    const char *cg_op_name(int i)
    cg_status cg_op_info(const char *name, int *n_inputs, int *n_params)
    cg_status cg_op_gradcheck(const char *name, int n_inputs, cg_tensor **inputs, int n_params, const double *params, double eps, double atol, double rtol)
    cg_status cg_entry_hook_push(cg_entry_hook_fn fn, void *ctx, cg_ctx_free_fn ctx_free, int64_t *handle)
    cg_status cg_entry_hook_pop(int64_t handle)
    cg_status cg_set_error(cg_status status, const char *message)
    cg_status cg_gradcheck(cg_fn fn, void *ctx, int n_inputs, cg_tensor **inputs, double eps, double atol, double rtol)
    cg_status cg_add(cg_tensor *a, cg_tensor *b, cg_tensor **out)
    cg_status cg_sub(cg_tensor *a, cg_tensor *b, cg_tensor **out)
    cg_status cg_mul(cg_tensor *a, cg_tensor *b, cg_tensor **out)
    cg_status cg_div(cg_tensor *a, cg_tensor *b, cg_tensor **out)
    cg_status cg_pow(cg_tensor *a, cg_tensor *b, cg_tensor **out)
    cg_status cg_minimum(cg_tensor *a, cg_tensor *b, cg_tensor **out)
    cg_status cg_maximum(cg_tensor *a, cg_tensor *b, cg_tensor **out)
    cg_status cg_add_scalar(cg_tensor *a, double s, cg_tensor **out)
    cg_status cg_mul_scalar(cg_tensor *a, double s, cg_tensor **out)
    cg_status cg_pow_scalar(cg_tensor *a, double exponent, cg_tensor **out)
    cg_status cg_eq(cg_tensor *a, cg_tensor *b, cg_tensor **out)
    cg_status cg_ne(cg_tensor *a, cg_tensor *b, cg_tensor **out)
    cg_status cg_lt(cg_tensor *a, cg_tensor *b, cg_tensor **out)
    cg_status cg_le(cg_tensor *a, cg_tensor *b, cg_tensor **out)
    cg_status cg_gt(cg_tensor *a, cg_tensor *b, cg_tensor **out)
    cg_status cg_ge(cg_tensor *a, cg_tensor *b, cg_tensor **out)
    cg_status cg_where(cg_tensor *cond, cg_tensor *a, cg_tensor *b, cg_tensor **out)
    cg_status cg_neg(cg_tensor *a, cg_tensor **out)
    cg_status cg_exp(cg_tensor *a, cg_tensor **out)
    cg_status cg_log(cg_tensor *a, cg_tensor **out)
    cg_status cg_sqrt(cg_tensor *a, cg_tensor **out)
    cg_status cg_abs(cg_tensor *a, cg_tensor **out)
    cg_status cg_sign(cg_tensor *a, cg_tensor **out)
    cg_status cg_round(cg_tensor *a, cg_tensor **out)
    cg_status cg_floor(cg_tensor *a, cg_tensor **out)
    cg_status cg_ceil(cg_tensor *a, cg_tensor **out)
    cg_status cg_relu(cg_tensor *a, cg_tensor **out)
    cg_status cg_leaky_relu(cg_tensor *a, double negative_slope, cg_tensor **out)
    cg_status cg_elu(cg_tensor *a, double alpha, cg_tensor **out)
    cg_status cg_gelu(cg_tensor *a, int approximate, cg_tensor **out)
    cg_status cg_sigmoid(cg_tensor *a, cg_tensor **out)
    cg_status cg_tanh(cg_tensor *a, cg_tensor **out)
    cg_status cg_softplus(cg_tensor *a, double beta, double threshold, cg_tensor **out)
    cg_status cg_clamp(cg_tensor *a, double lo, double hi, cg_tensor **out)
    cg_status cg_sum(cg_tensor *a, const int *dims, int ndims, int keepdim, cg_tensor **out)
    cg_status cg_mean(cg_tensor *a, const int *dims, int ndims, int keepdim, cg_tensor **out)
    cg_status cg_var(cg_tensor *a, const int *dims, int ndims, double correction, int keepdim, cg_tensor **out)
    cg_status cg_max(cg_tensor *a, const int *dims, int ndims, int keepdim, cg_tensor **out)
    cg_status cg_min(cg_tensor *a, const int *dims, int ndims, int keepdim, cg_tensor **out)
    cg_status cg_argmax(cg_tensor *a, int dim, int keepdim, int flatten_all, cg_tensor **out)
    cg_status cg_argmin(cg_tensor *a, int dim, int keepdim, int flatten_all, cg_tensor **out)
    cg_status cg_logsumexp(cg_tensor *a, const int *dims, int ndims, int keepdim, cg_tensor **out)
    cg_status cg_softmax(cg_tensor *a, int dim, cg_tensor **out)
    cg_status cg_log_softmax(cg_tensor *a, int dim, cg_tensor **out)
    cg_status cg_sum_to_shape(cg_tensor *a, int ndim, const int64_t *shape, cg_tensor **out)
    cg_status cg_reshape(cg_tensor *a, int ndim, const int64_t *shape, cg_tensor **out)
    cg_status cg_permute(cg_tensor *a, const int *perm, cg_tensor **out)
    cg_status cg_transpose(cg_tensor *a, int dim0, int dim1, cg_tensor **out)
    cg_status cg_expand(cg_tensor *a, int ndim, const int64_t *shape, cg_tensor **out)
    cg_status cg_squeeze(cg_tensor *a, int dim, cg_tensor **out)
    cg_status cg_squeeze_all(cg_tensor *a, cg_tensor **out)
    cg_status cg_unsqueeze(cg_tensor *a, int dim, cg_tensor **out)
    cg_status cg_slice(cg_tensor *a, int dim, int64_t start, int64_t stop, int64_t step, cg_tensor **out)
    cg_status cg_select(cg_tensor *a, int dim, int64_t index, cg_tensor **out)
    cg_status cg_cat(int n, cg_tensor **tensors, int dim, cg_tensor **out)
    cg_status cg_stack(int n, cg_tensor **tensors, int dim, cg_tensor **out)
    cg_status cg_contiguous(cg_tensor *a, cg_tensor **out)
    cg_status cg_clone(cg_tensor *a, cg_tensor **out)
    cg_status cg_to_dtype(cg_tensor *a, cg_dtype dtype, cg_tensor **out)
    cg_status cg_index_select(cg_tensor *a, int dim, cg_tensor *index, cg_tensor **out)
    cg_status cg_index_add(cg_tensor *a, int dim, cg_tensor *index, cg_tensor *src, cg_tensor **out)
    cg_status cg_gather(cg_tensor *a, int dim, cg_tensor *index, cg_tensor **out)
    cg_status cg_scatter_add(cg_tensor *a, int dim, cg_tensor *index, cg_tensor *src, cg_tensor **out)
    cg_status cg_nonzero_flat(cg_tensor *mask, cg_tensor **out)
    cg_status cg_embedding(cg_tensor *weight, cg_tensor *indices, cg_tensor **out)
    cg_layout cg_tensor_layout(const cg_tensor *t)
    int cg_tensor_is_sparse(const cg_tensor *t)
    cg_status cg_sparse_rows(cg_tensor *indices, cg_tensor *values, int64_t num_rows, cg_tensor **out)
    cg_status cg_sparse_indices(cg_tensor *t, cg_tensor **out)
    cg_status cg_sparse_values(cg_tensor *t, cg_tensor **out)
    int64_t cg_sparse_nnz(const cg_tensor *t)
    int cg_sparse_is_coalesced(const cg_tensor *t)
    cg_status cg_sparse_coalesce(cg_tensor *t, cg_tensor **out)
    cg_status cg_sparse_to_dense(cg_tensor *t, cg_tensor **out)
    cg_status cg_sparse_zero_(cg_tensor *t)
    cg_status cg_sparse_add(cg_tensor *a, cg_tensor *b, cg_tensor **out)
    cg_status cg_embedding_sparse(cg_tensor *weight, cg_tensor *indices, int64_t padding_idx, cg_tensor **out)
    cg_status cg_sparse_linear(cg_tensor *x, cg_tensor *indptr, cg_tensor *indices, cg_tensor *values, cg_tensor *bias, int64_t out_features, cg_tensor **out)
    cg_status cg_matmul(cg_tensor *a, cg_tensor *b, cg_tensor **out)
    cg_status cg_linear(cg_tensor *x, cg_tensor *weight, cg_tensor *bias, cg_tensor **out)
    void cg_set_gemm(cg_sgemm_fn sgemm, cg_dgemm_fn dgemm)
    void cg_set_num_threads(int n)
    int cg_get_num_threads()
    void cg_builtin_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
    void cg_builtin_dgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double *a, int64_t lda, const double *b, int64_t ldb, double beta, double *c, int64_t ldc)
    cg_status cg_conv2d(cg_tensor *x, cg_tensor *weight, cg_tensor *bias, const int64_t *stride, const int64_t *padding, const int64_t *dilation, int64_t groups, cg_tensor **out)
    cg_status cg_max_pool2d(cg_tensor *x, const int64_t *kernel, const int64_t *stride, const int64_t *padding, cg_tensor **out)
    cg_status cg_avg_pool2d(cg_tensor *x, const int64_t *kernel, const int64_t *stride, const int64_t *padding, int count_include_pad, cg_tensor **out)
    cg_status cg_dropout(cg_tensor *x, double p, int training, cg_tensor **out)
    ctypedef enum cg_reduction:
        CG_REDUCTION_NONE
        CG_REDUCTION_MEAN
        CG_REDUCTION_SUM
    cg_status cg_nll_loss(cg_tensor *input, cg_tensor *target, cg_tensor *weight, int64_t ignore_index, cg_reduction reduction, cg_tensor **out)
    cg_status cg_add_(cg_tensor *a, cg_tensor *b, double alpha)
    cg_status cg_mul_(cg_tensor *a, cg_tensor *b)
    cg_status cg_add_scalar_(cg_tensor *a, double s)
    cg_status cg_mul_scalar_(cg_tensor *a, double s)
    cg_status cg_zero_(cg_tensor *a)
    cg_status cg_fill_(cg_tensor *a, double value)
    cg_status cg_copy_(cg_tensor *dst, cg_tensor *src)
    cg_status cg_lr_step(const cg_lr_step_options *opt, double base_lr, int64_t step, double *lr)
    cg_status cg_lr_multistep(const cg_lr_multistep_options *opt, double base_lr, int64_t step, double *lr)
    cg_status cg_lr_constant(const cg_lr_constant_options *opt, double base_lr, int64_t step, double *lr)
    cg_status cg_lr_linear(const cg_lr_linear_options *opt, double base_lr, int64_t step, double *lr)
    cg_status cg_lr_exponential(const cg_lr_exponential_options *opt, double base_lr, int64_t step, double *lr)
    cg_status cg_lr_cosine(const cg_lr_cosine_options *opt, double base_lr, int64_t step, double *lr)
    cg_status cg_lr_cosine_warm_restarts(const cg_lr_cosine_warm_restarts_options *opt, double base_lr, int64_t step, double *lr)
    cg_status cg_lr_cosine_warm_restarts_at(const cg_lr_cosine_warm_restarts_options *opt, double base_lr, double epoch, double *lr, double *t_cur, double *t_i)
    cg_status cg_lr_one_cycle(const cg_lr_one_cycle_options *opt, double max_lr, int64_t step, double *lr)
    cg_status cg_lr_one_cycle_momentum(const cg_lr_one_cycle_options *opt, int64_t step, double *momentum)
    cg_status cg_lr_polynomial(const cg_lr_polynomial_options *opt, double base_lr, int64_t step, double *lr)
    cg_status cg_lr_warmup_cosine(const cg_lr_warmup_cosine_options *opt, double base_lr, int64_t step, double *lr)
    cg_sgd_options cg_sgd_default_options()
    cg_status cg_sgd_update(cg_tensor *param, cg_tensor *grad, cg_tensor *momentum_buffer, int init_buffer, const cg_sgd_options *options, double *update_sum_sq)
    cg_adam_options cg_adam_default_options()
    cg_adam_options cg_adamw_default_options()
    cg_status cg_adam_update(cg_tensor *param, cg_tensor *grad, cg_tensor *exp_avg, cg_tensor *exp_avg_sq, cg_tensor *max_exp_avg_sq, int64_t step, const cg_adam_options *options, double *update_sum_sq)
    cg_rmsprop_options cg_rmsprop_default_options()
    cg_status cg_rmsprop_update(cg_tensor *param, cg_tensor *grad, cg_tensor *square_avg, cg_tensor *grad_avg, cg_tensor *momentum_buffer, const cg_rmsprop_options *options, double *update_sum_sq)
    cg_status cg_rmsprop_update_multi(int n, cg_tensor **params, cg_tensor **grads, cg_tensor **square_avgs, cg_tensor **grad_avgs, cg_tensor **momentum_buffers, const cg_rmsprop_options *options)
    cg_adagrad_options cg_adagrad_default_options()
    cg_status cg_adagrad_update(cg_tensor *param, cg_tensor *grad, cg_tensor *state_sum, int64_t step, const cg_adagrad_options *options, double *update_sum_sq)
    cg_status cg_adagrad_update_multi(int n, cg_tensor **params, cg_tensor **grads, cg_tensor **state_sums, int64_t step, const cg_adagrad_options *options)
    cg_status cg_sgd_sparse_update(cg_tensor *param, cg_tensor *grad, cg_tensor *momentum_in, const cg_sgd_options *options, cg_tensor **momentum_out)
    cg_status cg_sparse_adam_update(cg_tensor *param, cg_tensor *grad, cg_tensor *exp_avg, cg_tensor *exp_avg_sq, int64_t step, const cg_adam_options *options)
    cg_status cg_adagrad_sparse_update(cg_tensor *param, cg_tensor *grad, cg_tensor *state_sum, int64_t step, const cg_adagrad_options *options)
    cg_status cg_total_norm(int n, cg_tensor **tensors, double norm_type, double *total_norm)
    cg_status cg_clip_grad_norm(int n, cg_tensor **grads, double max_norm, double norm_type, int error_if_nonfinite, double *total_norm, double *clip_coef)
    cg_status cg_clip_grad_norm_tensor(int n, cg_tensor **grads, double max_norm, double norm_type, cg_tensor **result)
    cg_status cg_clip_grad_value(int n, cg_tensor **grads, double clip_value, int64_t *n_clipped)
    cg_status cg_clip_grad_value_tensor(int n, cg_tensor **grads, double clip_value, cg_tensor **n_clipped)
    cg_status cg_clip_grad_agc(int n, cg_tensor **params, cg_tensor **grads, double clipping, double eps, int64_t *n_clipped, int64_t *n_units)
    cg_status cg_clip_grad_agc_tensor(int n, cg_tensor **params, cg_tensor **grads, double clipping, double eps, cg_tensor **n_clipped, int64_t *n_units)
    cg_status cg_tensor_stats(const cg_tensor *t, cg_stats *stats)
    cg_status cg_tensor_stats_many(int n, cg_tensor **tensors, cg_stats *stats)
    cg_status cg_sgd_update_stats(cg_tensor *param, cg_tensor *grad, cg_tensor *momentum_buffer, int init_buffer, const cg_sgd_options *options, cg_update_stats *stats)
    cg_status cg_adam_update_stats(cg_tensor *param, cg_tensor *grad, cg_tensor *exp_avg, cg_tensor *exp_avg_sq, cg_tensor *max_exp_avg_sq, int64_t step, const cg_adam_options *options, cg_update_stats *stats)
    cg_status cg_sgd_update_multi(int n, cg_tensor **params, cg_tensor **grads, cg_tensor **momentum_buffers, int init_buffer, const cg_sgd_options *options)
    cg_status cg_adam_update_multi(int n, cg_tensor **params, cg_tensor **grads, cg_tensor **exp_avgs, cg_tensor **exp_avg_sqs, cg_tensor **max_exp_avg_sqs, int64_t step, const cg_adam_options *options)
    cg_status cg_rmsprop_update_stats(cg_tensor *param, cg_tensor *grad, cg_tensor *square_avg, cg_tensor *grad_avg, cg_tensor *momentum_buffer, const cg_rmsprop_options *options, cg_update_stats *stats)
    cg_status cg_adagrad_update_stats(cg_tensor *param, cg_tensor *grad, cg_tensor *state_sum, int64_t step, const cg_adagrad_options *options, cg_update_stats *stats)
    cg_status cg_optimizer_new_sgd(int n, cg_tensor **params, const cg_sgd_options *options, cg_optimizer **out)
    cg_status cg_optimizer_new_adam(int n, cg_tensor **params, const cg_adam_options *options, cg_optimizer **out)
    cg_status cg_optimizer_new_adamw(int n, cg_tensor **params, const cg_adam_options *options, cg_optimizer **out)
    cg_status cg_optimizer_new_rmsprop(int n, cg_tensor **params, const cg_rmsprop_options *options, cg_optimizer **out)
    cg_status cg_optimizer_step(cg_optimizer *opt)
    cg_status cg_optimizer_step_stats(cg_optimizer *opt, cg_update_stats *stats)
    void cg_optimizer_zero_grad(cg_optimizer *opt)
    cg_status cg_optimizer_set_lr(cg_optimizer *opt, double lr)
    double cg_optimizer_get_lr(const cg_optimizer *opt)
    cg_tensor *cg_optimizer_state(const cg_optimizer *opt, int i, const char *name)
    int64_t cg_optimizer_param_steps(const cg_optimizer *opt, int i)
    void cg_optimizer_free(cg_optimizer *opt)
    cg_status cg_amp_unscale_(int n, cg_tensor **grads, double inv_scale, int64_t *nonfinite)
