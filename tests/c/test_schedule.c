/* test_schedule.c -- learning-rate schedules: values at chosen steps, worked
 * out by hand from the definitions, and refusal of bad arguments. */
#include "cgtest.h"

#define PI 3.14159265358979323846
#define TOL 1e-14

static void test_step_multistep_exponential(void) {
    double lr = -1;
    cg_lr_step_options st = {3, 0.5};
    CHECK_OK(cg_lr_step(&st, 0.8, 0, &lr));
    CHECK_CLOSE(lr, 0.8, TOL);
    CHECK_OK(cg_lr_step(&st, 0.8, 2, &lr));
    CHECK_CLOSE(lr, 0.8, TOL);
    CHECK_OK(cg_lr_step(&st, 0.8, 3, &lr));
    CHECK_CLOSE(lr, 0.4, TOL);
    CHECK_OK(cg_lr_step(&st, 0.8, 7, &lr));
    CHECK_CLOSE(lr, 0.2, TOL);

    int64_t ms[4] = {2, 5, 5, 9}; /* 5 twice: gamma^2 at step 5 */
    cg_lr_multistep_options mst = {ms, 4, 0.1};
    CHECK_OK(cg_lr_multistep(&mst, 1.0, 1, &lr));
    CHECK_CLOSE(lr, 1.0, TOL);
    CHECK_OK(cg_lr_multistep(&mst, 1.0, 2, &lr));
    CHECK_CLOSE(lr, 0.1, TOL);
    CHECK_OK(cg_lr_multistep(&mst, 1.0, 5, &lr));
    CHECK_CLOSE(lr, 1e-3, TOL);
    CHECK_OK(cg_lr_multistep(&mst, 1.0, 100, &lr));
    CHECK_CLOSE(lr, 1e-4, TOL);
    cg_lr_multistep_options none = {NULL, 0, 0.1};
    CHECK_OK(cg_lr_multistep(&none, 0.3, 50, &lr));
    CHECK_CLOSE(lr, 0.3, TOL);

    cg_lr_exponential_options ex = {0.9};
    CHECK_OK(cg_lr_exponential(&ex, 2.0, 0, &lr));
    CHECK_CLOSE(lr, 2.0, TOL);
    CHECK_OK(cg_lr_exponential(&ex, 2.0, 3, &lr));
    CHECK_CLOSE(lr, 2.0 * 0.729, TOL);
}

static void test_constant_linear_polynomial(void) {
    double lr = -1;
    cg_lr_constant_options c = {0.25, 4};
    CHECK_OK(cg_lr_constant(&c, 0.8, 3, &lr));
    CHECK_CLOSE(lr, 0.2, TOL);
    CHECK_OK(cg_lr_constant(&c, 0.8, 4, &lr));
    CHECK_CLOSE(lr, 0.8, TOL);

    cg_lr_linear_options li = {0.5, 1.0, 4};
    CHECK_OK(cg_lr_linear(&li, 0.4, 0, &lr));
    CHECK_CLOSE(lr, 0.2, TOL);
    CHECK_OK(cg_lr_linear(&li, 0.4, 2, &lr));
    CHECK_CLOSE(lr, 0.3, TOL);
    CHECK_OK(cg_lr_linear(&li, 0.4, 40, &lr)); /* held at end_factor */
    CHECK_CLOSE(lr, 0.4, TOL);
    cg_lr_linear_options down = {1.0, 0.0, 10};
    CHECK_OK(cg_lr_linear(&down, 1.0, 7, &lr));
    CHECK_CLOSE(lr, 0.3, TOL);

    cg_lr_polynomial_options po = {10, 2.0};
    CHECK_OK(cg_lr_polynomial(&po, 1.0, 5, &lr));
    CHECK_CLOSE(lr, 0.25, TOL);
    CHECK_OK(cg_lr_polynomial(&po, 1.0, 10, &lr));
    CHECK_CLOSE(lr, 0.0, TOL);
    CHECK_OK(cg_lr_polynomial(&po, 1.0, 12, &lr));
    CHECK_CLOSE(lr, 0.0, TOL);
}

static void test_cosine_and_restarts(void) {
    double lr = -1, tc = -1, ti = -1;
    cg_lr_cosine_options co = {10, 0.1};
    CHECK_OK(cg_lr_cosine(&co, 1.1, 0, &lr));
    CHECK_CLOSE(lr, 1.1, TOL);
    CHECK_OK(cg_lr_cosine(&co, 1.1, 5, &lr));
    CHECK_CLOSE(lr, 0.6, TOL);
    CHECK_OK(cg_lr_cosine(&co, 1.1, 10, &lr));
    CHECK_CLOSE(lr, 0.1, TOL);
    CHECK_OK(cg_lr_cosine(&co, 1.1, 15, &lr)); /* periodic past T_max, as PyTorch */
    CHECK_CLOSE(lr, 0.6, TOL);
    CHECK_OK(cg_lr_cosine(&co, 1.1, 20, &lr));
    CHECK_CLOSE(lr, 1.1, TOL);

    /* T_0 = 4, T_mult = 2: cycles [0,4) [4,12) [12,28) ... */
    cg_lr_cosine_warm_restarts_options wr = {4, 2, 0.0};
    CHECK_OK(cg_lr_cosine_warm_restarts(&wr, 1.0, 2, &lr));
    CHECK_CLOSE(lr, 0.5, TOL);
    CHECK_OK(cg_lr_cosine_warm_restarts(&wr, 1.0, 4, &lr)); /* restart */
    CHECK_CLOSE(lr, 1.0, TOL);
    CHECK_OK(cg_lr_cosine_warm_restarts(&wr, 1.0, 8, &lr));
    CHECK_CLOSE(lr, 0.5, TOL);
    CHECK_OK(cg_lr_cosine_warm_restarts(&wr, 1.0, 12, &lr));
    CHECK_CLOSE(lr, 1.0, TOL);
    CHECK_OK(cg_lr_cosine_warm_restarts_at(&wr, 1.0, 13.5, &lr, &tc, &ti));
    CHECK_CLOSE(tc, 1.5, TOL);
    CHECK_CLOSE(ti, 16.0, TOL);
    CHECK_CLOSE(lr, 0.5 * (1 + cos(PI * 1.5 / 16.0)), TOL);
    /* 3^5 boundary: log()-based cycle search gets this one wrong. */
    cg_lr_cosine_warm_restarts_options w3 = {2, 3, 0.0};
    double start5 = 2.0 * (243.0 - 1.0) / 2.0; /* T_0 (T_mult^5 - 1) / (T_mult - 1) */
    CHECK_OK(cg_lr_cosine_warm_restarts_at(&w3, 1.0, start5, &lr, &tc, &ti));
    CHECK_CLOSE(tc, 0.0, TOL);
    CHECK_CLOSE(ti, 2.0 * 243.0, TOL);
    CHECK_CLOSE(lr, 1.0, TOL);
    cg_lr_cosine_warm_restarts_options w1 = {5, 1, 0.0};
    CHECK_OK(cg_lr_cosine_warm_restarts_at(&w1, 1.0, 12.5, &lr, NULL, &ti));
    CHECK_CLOSE(ti, 5.0, TOL);
    CHECK_CLOSE(lr, 0.5, TOL);
}

static void test_one_cycle(void) {
    double lr = -1, m = -1;
    /* total 100, pct 0.3: up over [0, 29], down over [29, 99]. */
    cg_lr_one_cycle_options o = {100, 0.3, CG_ANNEAL_COS, 25.0, 1e4, 0, 0.85, 0.95};
    CHECK_OK(cg_lr_one_cycle(&o, 1.0, 0, &lr));
    CHECK_CLOSE(lr, 0.04, TOL);
    CHECK_OK(cg_lr_one_cycle_momentum(&o, 0, &m));
    CHECK_CLOSE(m, 0.95, TOL);
    CHECK_OK(cg_lr_one_cycle(&o, 1.0, 29, &lr));
    CHECK_CLOSE(lr, 1.0, TOL);
    CHECK_OK(cg_lr_one_cycle_momentum(&o, 29, &m));
    CHECK_CLOSE(m, 0.85, TOL);
    CHECK_OK(cg_lr_one_cycle(&o, 1.0, 99, &lr));
    CHECK_CLOSE(lr, 0.04 / 1e4, TOL);
    CHECK_OK(cg_lr_one_cycle(&o, 1.0, 64, &lr)); /* halfway down: cos = 0 */
    CHECK_CLOSE(lr, 0.5 * (1.0 + 4e-6), TOL);
    o.anneal_strategy = CG_ANNEAL_LINEAR;
    CHECK_OK(cg_lr_one_cycle(&o, 1.0, 14, &lr)); /* 14/29 of the way up */
    CHECK_CLOSE(lr, 0.04 + 0.96 * 14.0 / 29.0, TOL);
    CHECK_OK(cg_lr_one_cycle_momentum(&o, 14, &m));
    CHECK_CLOSE(m, 0.95 - 0.1 * 14.0 / 29.0, TOL);
    /* Three phases: up [0,29], back down [29,58], annihilate [58,99]. */
    o.three_phase = 1;
    CHECK_OK(cg_lr_one_cycle(&o, 1.0, 58, &lr));
    CHECK_CLOSE(lr, 0.04, TOL);
    CHECK_OK(cg_lr_one_cycle_momentum(&o, 58, &m));
    CHECK_CLOSE(m, 0.95, TOL);
    CHECK_OK(cg_lr_one_cycle(&o, 1.0, 99, &lr));
    CHECK_CLOSE(lr, 4e-6, TOL);
    CHECK_OK(cg_lr_one_cycle_momentum(&o, 80, &m));
    CHECK_CLOSE(m, 0.95, TOL);
    CHECK_OK(cg_lr_one_cycle(&o, 1.0, 100, &lr)); /* PyTorch allows step == total */
    CHECK_STATUS(cg_lr_one_cycle(&o, 1.0, 101, &lr), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "101") != NULL);
}

static void test_warmup_cosine(void) {
    double lr = -1;
    cg_lr_warmup_cosine_options w = {10, 110, 0.0, 0.01};
    CHECK_OK(cg_lr_warmup_cosine(&w, 1.0, 0, &lr));
    CHECK_CLOSE(lr, 0.0, TOL);
    CHECK_OK(cg_lr_warmup_cosine(&w, 1.0, 5, &lr));
    CHECK_CLOSE(lr, 0.5, TOL);
    CHECK_OK(cg_lr_warmup_cosine(&w, 1.0, 10, &lr));
    CHECK_CLOSE(lr, 1.0, TOL);
    CHECK_OK(cg_lr_warmup_cosine(&w, 1.0, 60, &lr));
    CHECK_CLOSE(lr, 0.505, TOL);
    CHECK_OK(cg_lr_warmup_cosine(&w, 1.0, 110, &lr));
    CHECK_CLOSE(lr, 0.01, TOL);
    CHECK_OK(cg_lr_warmup_cosine(&w, 1.0, 5000, &lr)); /* constant after */
    CHECK_CLOSE(lr, 0.01, TOL);
    w.warmup_start_factor = 0.2;
    CHECK_OK(cg_lr_warmup_cosine(&w, 2.0, 5, &lr));
    CHECK_CLOSE(lr, 2.0 * 0.6, TOL);
    cg_lr_warmup_cosine_options nowarm = {0, 4, 0.0, 0.0};
    CHECK_OK(cg_lr_warmup_cosine(&nowarm, 1.0, 0, &lr));
    CHECK_CLOSE(lr, 1.0, TOL);
    CHECK_OK(cg_lr_warmup_cosine(&nowarm, 1.0, 2, &lr));
    CHECK_CLOSE(lr, 0.5, TOL);
}

static void test_bad_arguments(void) {
    double lr = 123.0;
    cg_lr_step_options st = {3, 0.5};
    CHECK_STATUS(cg_lr_step(NULL, 1.0, 0, &lr), CG_ERR_NULL);
    CHECK_STATUS(cg_lr_step(&st, 1.0, 0, NULL), CG_ERR_NULL);
    CHECK_STATUS(cg_lr_step(&st, 1.0, -1, &lr), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "step must be >= 0, got -1") != NULL);
    CHECK_STATUS(cg_lr_step(&st, NAN, 0, &lr), CG_ERR_VALUE);
    CHECK_STATUS(cg_lr_step(&st, -0.1, 0, &lr), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "base_lr") != NULL);
    st.step_size = 0;
    CHECK_STATUS(cg_lr_step(&st, 1.0, 0, &lr), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "step_size must be >= 1, got 0") != NULL);
    st.step_size = 2;
    st.gamma = INFINITY;
    CHECK_STATUS(cg_lr_step(&st, 1.0, 0, &lr), CG_ERR_VALUE);
    CHECK(lr == 123.0); /* untouched on failure */

    int64_t unsorted[3] = {5, 3, 9}, negative[1] = {-2};
    cg_lr_multistep_options ms = {unsorted, 3, 0.1};
    CHECK_STATUS(cg_lr_multistep(&ms, 1.0, 4, &lr), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "non-decreasing") != NULL);
    ms.milestones = negative;
    ms.n_milestones = 1;
    CHECK_STATUS(cg_lr_multistep(&ms, 1.0, 4, &lr), CG_ERR_VALUE);
    ms.milestones = NULL;
    CHECK_STATUS(cg_lr_multistep(&ms, 1.0, 4, &lr), CG_ERR_NULL);

    cg_lr_constant_options c = {1.5, 4};
    CHECK_STATUS(cg_lr_constant(&c, 1.0, 0, &lr), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "factor must be in [0, 1], got 1.5") != NULL);
    cg_lr_linear_options li = {0.0, 1.0, 4};
    CHECK_STATUS(cg_lr_linear(&li, 1.0, 0, &lr), CG_ERR_VALUE);
    li.start_factor = 0.5;
    li.total_iters = 0;
    CHECK_STATUS(cg_lr_linear(&li, 1.0, 0, &lr), CG_ERR_VALUE);
    cg_lr_exponential_options ex = {-0.5};
    CHECK_STATUS(cg_lr_exponential(&ex, 1.0, 0, &lr), CG_ERR_VALUE);
    cg_lr_cosine_options co = {0, 0.0};
    CHECK_STATUS(cg_lr_cosine(&co, 1.0, 0, &lr), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "T_max") != NULL);
    co.T_max = 5;
    co.eta_min = -1.0;
    CHECK_STATUS(cg_lr_cosine(&co, 1.0, 0, &lr), CG_ERR_VALUE);
    cg_lr_cosine_warm_restarts_options wr = {4, 0, 0.0};
    CHECK_STATUS(cg_lr_cosine_warm_restarts(&wr, 1.0, 0, &lr), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "T_mult must be >= 1, got 0") != NULL);
    wr.T_mult = 2;
    CHECK_STATUS(cg_lr_cosine_warm_restarts_at(&wr, 1.0, -0.5, &lr, NULL, NULL), CG_ERR_VALUE);
    CHECK_STATUS(cg_lr_cosine_warm_restarts_at(&wr, 1.0, INFINITY, &lr, NULL, NULL),
                 CG_ERR_VALUE);
    cg_lr_polynomial_options po = {5, -1.0};
    CHECK_STATUS(cg_lr_polynomial(&po, 1.0, 0, &lr), CG_ERR_VALUE);
    cg_lr_warmup_cosine_options w = {10, 5, 0.0, 0.0};
    CHECK_STATUS(cg_lr_warmup_cosine(&w, 1.0, 0, &lr), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "total_steps") != NULL);
    w.total_steps = 20;
    w.warmup_start_factor = 2.0;
    CHECK_STATUS(cg_lr_warmup_cosine(&w, 1.0, 0, &lr), CG_ERR_VALUE);

    cg_lr_one_cycle_options o = {10, 0.3, CG_ANNEAL_COS, 25.0, 1e4, 0, 0.85, 0.95};
    o.pct_start = 1.5;
    CHECK_STATUS(cg_lr_one_cycle(&o, 1.0, 0, &lr), CG_ERR_VALUE);
    o.pct_start = 0.3;
    o.anneal_strategy = (cg_anneal)7;
    CHECK_STATUS(cg_lr_one_cycle(&o, 1.0, 0, &lr), CG_ERR_VALUE);
    o.anneal_strategy = CG_ANNEAL_LINEAR;
    o.div_factor = 0.0;
    CHECK_STATUS(cg_lr_one_cycle(&o, 1.0, 0, &lr), CG_ERR_VALUE);
    o.div_factor = 25.0;
    o.total_steps = 0;
    CHECK_STATUS(cg_lr_one_cycle_momentum(&o, 0, &lr), CG_ERR_VALUE);
    /* pct_start * total_steps == 1: the warm-up phase is empty at step 0. */
    o.total_steps = 10;
    o.pct_start = 0.1;
    CHECK_STATUS(cg_lr_one_cycle(&o, 1.0, 0, &lr), CG_ERR_VALUE);
    CHECK(strstr(cg_last_error(), "zero length") != NULL);
    CHECK_OK(cg_lr_one_cycle(&o, 1.0, 1, &lr));
    CHECK_CLOSE(lr, 1.0 - (1.0 - 4e-6) / 9.0, TOL); /* linear, 1/9 of the way down */
}

int main(void) {
    test_step_multistep_exponential();
    test_constant_linear_polynomial();
    test_cosine_and_restarts();
    test_one_cycle();
    test_warmup_cosine();
    test_bad_arguments();
    return cgt_report("test_schedule");
}
