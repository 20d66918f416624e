// 03_cpp_usage.cpp -- cgrad from C++: an RAII handle around cg_tensor, a
// custom op whose backward is C++, and a gradient check of it.
//
//     c++ -std=c++11 03_cpp_usage.cpp -o cpp_usage $(pkg-config --cflags --libs cgrad)
//
// The op is softsign(x) = x / (1 + |x|), d/dx = 1 / (1 + |x|)^2. Its
// backward is written with cgrad ops, so it is itself differentiable
// (second derivatives work). C++ exceptions must not cross the C library:
// the backward catches them and returns CG_ERR_CALLBACK with the message.
// Exits non-zero if any check fails.
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cgrad.h"

namespace {

// Throws on a failed status, with cgrad's message.
void check(cg_status st, const char *what) {
    if (st != CG_OK)
        throw std::runtime_error(std::string(what) + ": " + cg_status_name(st) + ": " +
                                 cg_last_error());
}

// Owns one reference to a cg_tensor; copies retain, moves transfer.
class Tensor {
  public:
    Tensor() : t_(nullptr) {}
    explicit Tensor(cg_tensor *owned) : t_(owned) {}  // takes over a new reference
    static Tensor borrow(cg_tensor *t) {
        cg_tensor_retain(t);
        return Tensor(t);
    }
    Tensor(const Tensor &o) : t_(o.t_) { cg_tensor_retain(t_); }
    Tensor(Tensor &&o) noexcept : t_(o.t_) { o.t_ = nullptr; }
    Tensor &operator=(Tensor o) noexcept {
        std::swap(t_, o.t_);
        return *this;
    }
    ~Tensor() { cg_tensor_free(t_); }

    cg_tensor *get() const { return t_; }
    cg_tensor *release() {  // hands the reference to the caller
        cg_tensor *t = t_;
        t_ = nullptr;
        return t;
    }
    explicit operator bool() const { return t_ != nullptr; }

    std::vector<double> values() const {
        std::vector<double> v(static_cast<size_t>(cg_tensor_numel(t_)));
        Tensor as64 = to(CG_FLOAT64);
        check(cg_tensor_copy_to(as64.get(), v.data(), v.size() * sizeof(double)), "copy_to");
        return v;
    }
    Tensor to(cg_dtype dtype) const { return make([&](cg_tensor **o) { return cg_to_dtype(t_, dtype, o); }); }
    Tensor abs() const { return make([&](cg_tensor **o) { return cg_abs(t_, o); }); }
    Tensor operator+(double s) const { return make([&](cg_tensor **o) { return cg_add_scalar(t_, s, o); }); }
    Tensor operator*(const Tensor &b) const { return make([&](cg_tensor **o) { return cg_mul(t_, b.t_, o); }); }
    Tensor operator/(const Tensor &b) const { return make([&](cg_tensor **o) { return cg_div(t_, b.t_, o); }); }
    Tensor sum() const { return make([&](cg_tensor **o) { return cg_sum(t_, nullptr, 0, 0, o); }); }
    Tensor grad() const { return borrow(cg_tensor_grad(t_)); }

    template <class F> static Tensor make(F op) {
        cg_tensor *out = nullptr;
        check(op(&out), "cgrad op");
        return Tensor(out);
    }

  private:
    cg_tensor *t_;
};

Tensor randn64(std::vector<int64_t> shape, bool requires_grad) {
    Tensor t = Tensor::make([&](cg_tensor **o) {
        return cg_randn(CG_FLOAT64, static_cast<int>(shape.size()), shape.data(), o);
    });
    if (requires_grad) check(cg_tensor_set_requires_grad(t.get(), 1), "requires_grad");
    return t;
}

// ---------------------------------------------------------------- softsign
struct SoftsignCtx {
    Tensor x;            // the input, saved for backward
    bool fail = false;   // make the backward throw (to show the error path)
};

// grad_in = grad_out / (1 + |x|)^2
cg_status softsign_backward(void *ctx, int, cg_tensor *const *grad_outputs, int,
                            const int *needs_input_grad, cg_tensor **grad_inputs) {
    try {
        const SoftsignCtx &c = *static_cast<SoftsignCtx *>(ctx);
        if (c.fail) throw std::runtime_error("softsign backward asked to fail");
        if (!needs_input_grad[0]) return CG_OK;
        Tensor denom = c.x.abs() + 1.0;
        Tensor g = Tensor::borrow(grad_outputs[0]) / (denom * denom);
        grad_inputs[0] = g.release();
        return CG_OK;
    } catch (const std::exception &e) {
        return cg_set_error(CG_ERR_CALLBACK, e.what());
    }
}

void softsign_free(void *ctx) { delete static_cast<SoftsignCtx *>(ctx); }

Tensor softsign(const Tensor &x, bool fail_in_backward = false) {
    Tensor y;
    {
        int prev = cg_set_grad_enabled(0);  // forward is not recorded op by op
        try {
            y = x / (x.abs() + 1.0);
        } catch (...) {
            cg_set_grad_enabled(prev);
            throw;
        }
        cg_set_grad_enabled(prev);
    }
    SoftsignCtx *ctx = new SoftsignCtx;
    ctx->x = x;
    ctx->fail = fail_in_backward;
    cg_tensor *in = x.get(), *out = y.get();
    // The entry owns ctx from here on, on success and on failure alike.
    check(cg_record_custom("softsign", 1, &in, 1, &out, softsign_backward, ctx, softsign_free),
          "record softsign");
    return y;
}

// cg_fn adapter for cg_gradcheck.
cg_status softsign_fn(void *, int, cg_tensor *const *inputs, cg_tensor **out) {
    try {
        *out = softsign(Tensor::borrow(inputs[0])).release();
        return CG_OK;
    } catch (const std::exception &e) {
        return cg_set_error(CG_ERR_CALLBACK, e.what());
    }
}

}  // namespace

int main() {
    int failures = 0;
    try {
        cg_manual_seed(3);
        Tensor x = randn64({4, 5}, true);

        // 1. gradcheck: the C++ backward against float64 central differences.
        cg_tensor *inputs[1] = {x.get()};
        cg_status st = cg_gradcheck(softsign_fn, nullptr, 1, inputs, 1e-6, 1e-8, 1e-6);
        std::printf("gradcheck softsign: %s\n", st == CG_OK ? "OK" : cg_last_error());
        failures += st != CG_OK;

        // 2. backward through the op into x.grad, against the formula.
        Tensor loss = softsign(x).sum();
        check(cg_backward(loss.get(), nullptr, 0, 0), "backward");
        std::vector<double> xv = x.values(), gv = x.grad().values();
        double worst = 0.0;
        for (size_t i = 0; i < xv.size(); ++i) {
            double want = 1.0 / ((1.0 + std::fabs(xv[i])) * (1.0 + std::fabs(xv[i])));
            worst = std::fmax(worst, std::fabs(gv[i] - want));
        }
        std::printf("x.grad vs 1/(1+|x|)^2: max abs error %.3g\n", worst);
        failures += !(worst < 1e-12);

        // 3. a throwing backward comes back as CG_ERR_CALLBACK, nothing leaks.
        Tensor bad = softsign(x, true).sum();
        st = cg_backward(bad.get(), nullptr, 0, 0);
        std::printf("throwing backward: %s (%s)\n", cg_status_name(st), cg_last_error());
        failures += !(st == CG_ERR_CALLBACK &&
                      std::string(cg_last_error()).find("asked to fail") != std::string::npos);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "cpp_usage: %s\n", e.what());
        return 1;
    }
    std::printf("%s\n", failures == 0 ? "all checks passed" : "CHECKS FAILED");
    return failures == 0 ? 0 : 1;
}
