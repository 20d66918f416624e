/* test_anomaly.c -- anomaly mode: forward report, backward failure naming
 * the op and its location, hooks, and that off means off. */
#include "cgtest.h"

static int loc_calls = 0, loc_frees = 0;
static void *test_location(void *ctx) {
    (void)ctx;
    ++loc_calls;
    int *line = (int *)malloc(sizeof *line);
    if (line) *line = 42;
    return line;
}
static void test_location_str(void *tag, char *buf, size_t size) {
    snprintf(buf, size, "model.c:%d", *(int *)tag);
}
static void test_location_free(void *tag) {
    ++loc_frees;
    free(tag);
}

static int hook_calls = 0;
static cg_status failing_hook(void *ctx, const char *message) {
    (void)ctx;
    ++hook_calls;
    CHECK(strstr(message, "log") != NULL);
    return cg_set_error(CG_ERR_CALLBACK, "stop at the first anomaly");
}

static cg_tensor *vec3(double a, double b, double c, int requires_grad) {
    int64_t shape[1] = {3};
    double d[3] = {a, b, c};
    cg_tensor *t = cgt_f64(1, shape, d);
    if (t && requires_grad) cg_tensor_set_requires_grad(t, 1);
    return t;
}

static void test_off_by_default(void) {
    CHECK(cg_anomaly_mode() == 0);
    cg_tensor *x = vec3(1, 0, 4, 1), *y = NULL, *s = NULL;
    CHECK_OK(cg_sqrt(x, &y));
    CHECK_OK(cg_sum(y, NULL, 0, 0, &s));
    CHECK_OK(cg_backward(s, NULL, 0, 0)); /* inf gradient, no complaint */
    CHECK(isinf(cgt_at(cg_tensor_grad(x), 1)));
    CHECK(cg_anomaly_report()[0] == '\0');
    cg_tensor_free(s); cg_tensor_free(y); cg_tensor_free(x);
}

static void test_forward_report(void) {
    cg_set_location_hook(test_location, test_location_str, test_location_free, NULL);
    CHECK(cg_set_anomaly_mode(1) == 0);
    cg_tensor *x = vec3(1, 0, 4, 1), *y = NULL, *z = NULL, *w = NULL;
    CHECK_OK(cg_exp(x, &y));            /* finite: nothing reported */
    CHECK(cg_anomaly_report()[0] == '\0');
    CHECK_OK(cg_log(x, &z));            /* log(0) = -inf */
    const char *r = cg_anomaly_report();
    CHECK(strstr(r, "'log'") != NULL);
    CHECK(strstr(r, "model.c:42") != NULL);
    CHECK(strstr(r, "inf") != NULL && strstr(r, "from finite inputs") != NULL);
    CHECK_OK(cg_mul_scalar(z, 2.0, &w)); /* later anomalies keep the first report */
    CHECK(strstr(cg_anomaly_report(), "'log'") != NULL);
    CHECK(loc_calls >= 3);
    cg_tensor_free(w); cg_tensor_free(z); cg_tensor_free(y); cg_tensor_free(x);
    CHECK(loc_frees == loc_calls); /* every entry freed its tag */
    cg_set_anomaly_mode(0);
    cg_set_anomaly_mode(1); /* re-enabling clears the report */
    CHECK(cg_anomaly_report()[0] == '\0');
    cg_set_anomaly_mode(0);
    cg_set_location_hook(NULL, NULL, NULL, NULL);
}

static void test_nonfinite_input_named(void) {
    cg_set_anomaly_mode(1);
    cg_tensor *x = vec3(1, NAN, 2, 1), *y = NULL;
    CHECK_OK(cg_tanh(x, &y));
    CHECK(strstr(cg_anomaly_report(), "input 0 already held non-finite values") != NULL);
    cg_tensor_free(y); cg_tensor_free(x);
    cg_set_anomaly_mode(0);
}

static void test_backward_fails_naming_op(void) {
    cg_set_location_hook(test_location, test_location_str, test_location_free, NULL);
    cg_set_anomaly_mode(1);
    cg_tensor *x = vec3(1, 0, 4, 1), *y = NULL, *s = NULL;
    CHECK_OK(cg_sqrt(x, &y)); /* forward finite, derivative 1/(2 sqrt 0) = inf */
    CHECK_OK(cg_sum(y, NULL, 0, 0, &s));
    CHECK_STATUS(cg_backward(s, NULL, 1, 0), CG_ERR_AUTOGRAD);
    CHECK(strstr(cg_last_error(), "backward of op 'sqrt'") != NULL);
    CHECK(strstr(cg_last_error(), "model.c:42") != NULL);
    CHECK(strstr(cg_last_error(), "were finite") != NULL);
    CHECK(cg_tensor_grad(x) == NULL); /* nothing accumulated */
    cg_set_anomaly_mode(0);
    CHECK_OK(cg_backward(s, NULL, 0, 0)); /* graph retained and intact */
    cg_tensor_free(s); cg_tensor_free(y); cg_tensor_free(x);
    cg_set_location_hook(NULL, NULL, NULL, NULL);
}

static void test_hook_failure_fails_op(void) {
    cg_set_anomaly_hook(failing_hook, NULL);
    cg_set_anomaly_mode(1);
    cg_tensor *x = vec3(0, 1, 2, 1), *y = NULL;
    CHECK_STATUS(cg_log(x, &y), CG_ERR_CALLBACK);
    CHECK(y == NULL);
    CHECK(hook_calls == 1);
    cg_set_anomaly_mode(0);
    cg_set_anomaly_hook(NULL, NULL);
    cg_tensor_free(x);
}

static cg_status nan_backward(void *ctx, int n_out, cg_tensor *const *gout, int n_in,
                              const int *needs, cg_tensor **gin) {
    (void)ctx; (void)n_out; (void)n_in; (void)needs;
    return cg_mul_scalar(gout[0], NAN, &gin[0]);
}

static void test_custom_backward_nan(void) {
    cg_set_anomaly_mode(1);
    cg_tensor *x = vec3(1, 2, 3, 1), *y = NULL, *s = NULL;
    int prev = cg_set_grad_enabled(0);
    CHECK_OK(cg_mul_scalar(x, 3.0, &y));
    cg_set_grad_enabled(prev);
    CHECK_OK(cg_record_custom("my_op", 1, &x, 1, &y, nan_backward, NULL, NULL));
    CHECK_OK(cg_sum(y, NULL, 0, 0, &s));
    CHECK_STATUS(cg_backward(s, NULL, 0, 0), CG_ERR_AUTOGRAD);
    CHECK(strstr(cg_last_error(), "'my_op'") != NULL && strstr(cg_last_error(), "nan") != NULL);
    cg_tensor_free(s); cg_tensor_free(y); cg_tensor_free(x);
    cg_set_anomaly_mode(0);
}

static void test_strided_output_scanned(void) {
    cg_set_anomaly_mode(1);
    int64_t shape[2] = {2, 2};
    double d[4] = {1, -1, 2, 3};
    cg_tensor *x = cgt_f64(2, shape, d), *t = NULL, *y = NULL;
    cg_tensor_set_requires_grad(x, 1);
    CHECK_OK(cg_transpose(x, 0, 1, &t)); /* a strided view */
    CHECK(cg_anomaly_report()[0] == '\0');
    CHECK_OK(cg_sqrt(t, &y));              /* sqrt(-1) = nan */
    CHECK(strstr(cg_anomaly_report(), "'sqrt'") != NULL);
    CHECK(strstr(cg_anomaly_report(), "nan") != NULL);
    cg_tensor_free(y); cg_tensor_free(t); cg_tensor_free(x);
    cg_set_anomaly_mode(0);
}

static int observed = 0;
static char observed_ops[8][32];
static cg_status count_entries(void *ctx, const char *op, uint64_t seq, const char *location,
                               int n_out, cg_tensor *const *gout) {
    (void)seq; (void)location;
    int *stop_at = (int *)ctx;
    if (observed < 8) snprintf(observed_ops[observed], 32, "%s", op);
    ++observed;
    CHECK(n_out == 1 && gout[0] != NULL);
    if (stop_at && observed == *stop_at) return cg_set_error(CG_ERR_CALLBACK, "observer stops here");
    return CG_OK;
}

static void test_entry_observers(void) {
    cg_tensor *x = vec3(1, 2, 3, 1), *y = NULL, *s = NULL;
    int64_t h = 0, h2 = 0;
    CHECK_OK(cg_entry_hook_push(count_entries, NULL, NULL, &h));
    CHECK_OK(cg_exp(x, &y));
    CHECK_OK(cg_sum(y, NULL, 0, 0, &s));
    CHECK_OK(cg_backward(s, NULL, 1, 0));
    CHECK(observed == 2 && strcmp(observed_ops[0], "sum") == 0 && strcmp(observed_ops[1], "exp") == 0);
    int stop_at = 3;
    CHECK_OK(cg_entry_hook_push(count_entries, &stop_at, NULL, &h2));
    CHECK_STATUS(cg_entry_hook_pop(h), CG_ERR_VALUE); /* not the innermost */
    CHECK_STATUS(cg_backward(s, NULL, 1, 0), CG_ERR_CALLBACK);
    CHECK(strstr(cg_last_error(), "observer stops here") != NULL);
    CHECK_OK(cg_entry_hook_pop(h2));
    CHECK_OK(cg_entry_hook_pop(h));
    CHECK_STATUS(cg_entry_hook_pop(h), CG_ERR_VALUE);
    CHECK_STATUS(cg_entry_hook_push(NULL, NULL, NULL, &h), CG_ERR_NULL);
    observed = 0;
    CHECK_OK(cg_backward(s, NULL, 0, 0));
    CHECK(observed == 0);
    cg_tensor_free(s); cg_tensor_free(y); cg_tensor_free(x);
}

int main(void) {
    test_entry_observers();
    test_off_by_default();
    test_forward_report();
    test_nonfinite_input_named();
    test_backward_fails_naming_op();
    test_hook_failure_fails_op();
    test_custom_backward_nan();
    test_strided_output_scanned();
    return cgt_report(__FILE__);
}
