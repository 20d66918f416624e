"""Custom autograd Functions (PyTorch's torch.autograd.Function) on the C tape.

Gradients are checked against float64 central differences of the forward
(always) and against torch.autograd.Function (when torch is importable)."""
import weakref

import numpy as np
import pytest

import cgrad
import cgrad.autograd as ag
from cgrad._core import Function, FunctionCtx, once_differentiable

F64 = cgrad.float64


# ---------------------------------------------------------------- helpers
def t64(a, requires_grad=True):
    return cgrad.tensor(np.asarray(a, dtype=np.float64), dtype=F64, requires_grad=requires_grad)


def numeric_grad(f, arrays, eps=1e-6):
    """Central differences of the scalar f(*tensors) w.r.t. each array."""
    grads = []
    for k, a in enumerate(arrays):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            vals = []
            for s in (+1, -1):
                b = [x.copy() for x in arrays]
                b[k][idx] += s * eps
                with cgrad.no_grad():
                    vals.append(f(*[t64(x, False) for x in b]).item())
            g[idx] = (vals[0] - vals[1]) / (2 * eps)
        grads.append(g)
    return grads


def gradcheck(f, arrays, atol=1e-6, rtol=1e-5):
    """Analytical gradient of sum(f(x) * v) (v fixed random) vs central differences."""
    rng = np.random.default_rng(1)
    xs = [t64(a) for a in arrays]
    out = f(*xs)
    v = rng.standard_normal(out.shape)
    analytic = ag.grad((out * t64(v, False)).sum(), xs)
    numeric = numeric_grad(lambda *ts: (f(*ts) * t64(v, False)).sum(), arrays)
    for k, (a, n) in enumerate(zip(analytic, numeric)):
        np.testing.assert_allclose(a.detach().numpy(), n, atol=atol, rtol=rtol,
                                   err_msg=f"input {k}")


class MySquare(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return 2 * x * g


class Cube(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x * x

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return 3 * x * x * g


class Exp(Function):
    """Saves its own output (relinked to the entry on unpack)."""
    @staticmethod
    def forward(ctx, x):
        y = x.exp()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved_tensors
        return g * y


# ---------------------------------------------------------------- basics
def test_square_matches_central_differences():
    rng = np.random.default_rng(0)
    gradcheck(MySquare.apply, [rng.standard_normal((2, 3))])
    x = t64([[1.0, -2.0, 3.0]])
    y = MySquare.apply(x)
    assert y.grad_fn.name() == "MySquare"
    assert y.requires_grad and not y.is_leaf
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[2.0, -4.0, 6.0]])


def test_library_gradcheck_and_gradgradcheck_accept_custom_functions():
    rng = np.random.default_rng(6)
    x = t64(rng.standard_normal((2, 3)))
    assert ag.gradcheck(MySquare.apply, (x,))
    assert ag.gradgradcheck(Cube.apply, (x,))
    assert ag.gradgradcheck(Exp.apply, (x,))
    y = t64(rng.standard_normal((2, 3)))
    assert ag.gradcheck(lambda a, b: MulAdd.apply(a, b), (x, y))

    class WrongSquare(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return 3 * x * g

    assert not ag.gradcheck(WrongSquare.apply, (x,), raise_exception=False)


def test_square_matches_torch(torch):
    class TSquare(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return 2 * x * g

    a = np.random.default_rng(2).standard_normal((4, 5))
    x = t64(a)
    (MySquare.apply(x) * 3.0).sum().backward()
    tx = torch.tensor(a, requires_grad=True)
    (TSquare.apply(tx) * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)


def test_float32_gradients_keep_dtype():
    x = cgrad.tensor([1.0, 2.0], requires_grad=True)
    MySquare.apply(x).sum().backward()
    assert x.grad.dtype is cgrad.float32
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])


class MulAdd(Function):
    """(x * y, x + y): two inputs, two outputs."""
    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return x * y, x + y

    @staticmethod
    def backward(ctx, gp, gs):
        x, y = ctx.saved_tensors
        return gp * y + gs, gp * x + gs


def test_multi_input_multi_output():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((3,)), rng.standard_normal((3,))

    def f(x, y):
        p, s = MulAdd.apply(x, y)
        return p * s.exp()

    gradcheck(f, [a, b])
    p, s = MulAdd.apply(t64(a), t64(b))
    assert p.grad_fn.name() == s.grad_fn.name() == "MulAdd"


def test_multi_output_only_one_used_gets_zeros():
    seen = {}

    class Two(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2, x * 3

        @staticmethod
        def backward(ctx, g1, g2):
            seen["g"] = (g1.numpy().copy(), g2.numpy().copy())
            return g1 * 2 + g2 * 3

    x = t64([1.0, 2.0])
    a, _ = Two.apply(x)
    a.sum().backward()
    np.testing.assert_allclose(seen["g"][0], [1, 1])
    np.testing.assert_allclose(seen["g"][1], [0, 0])
    np.testing.assert_allclose(x.grad.numpy(), [2, 2])


def test_multi_output_matches_torch(torch):
    class TMulAdd(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            ctx.save_for_backward(x, y)
            return x * y, x + y

        @staticmethod
        def backward(ctx, gp, gs):
            x, y = ctx.saved_tensors
            return gp * y + gs, gp * x + gs

    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    x, y = t64(a), t64(b)
    p, s = MulAdd.apply(x, y)
    (p.tanh() * s).sum().backward()
    tx, ty = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    tp, ts = TMulAdd.apply(tx, ty)
    (tp.tanh() * ts).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(y.grad.numpy(), ty.grad.numpy(), rtol=1e-12)


class ScaleShift(Function):
    """Non-tensor arguments and non-tensor outputs."""
    @staticmethod
    def forward(ctx, x, alpha, tag, shift=0.0):
        ctx.alpha = alpha
        ctx.tag = tag
        return x * alpha + shift, f"{tag}!"

    @staticmethod
    def backward(ctx, g, g_tag):
        assert g_tag is None
        assert ctx.tag == "hello"
        return g * ctx.alpha, None, None, None


def test_non_tensor_args_and_outputs():
    x = t64([1.0, 2.0])
    y, msg = ScaleShift.apply(x, 3.0, "hello", 1.0)
    assert msg == "hello!"
    np.testing.assert_allclose(y.detach().numpy(), [4.0, 7.0])
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


def test_keyword_arguments_are_bound_to_forward_parameters():
    x = t64([1.0, 2.0])
    y, _ = ScaleShift.apply(x, tag="hello", alpha=2.0)  # shift takes its default
    np.testing.assert_allclose(y.detach().numpy(), [2.0, 4.0])
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])

    class KW(Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, w)
            return x * w

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            return g * w, g * x

    x, w = t64([1.0, 2.0]), t64([3.0, 4.0])
    KW.apply(x, w=w).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), [1.0, 2.0])
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 4.0])
    with pytest.raises(TypeError, match="KW.apply"):
        KW.apply(x, v=w)


def test_needs_input_grad():
    seen = {}

    class Rec(Function):
        @staticmethod
        def forward(ctx, a, b, k):
            seen["fwd"] = ctx.needs_input_grad
            return a * b * k

        @staticmethod
        def backward(ctx, g):
            seen["bwd"] = ctx.needs_input_grad
            return None, g, None

    a, b = t64([1.0], requires_grad=False), t64([2.0])
    Rec.apply(a, b, 2.0).sum().backward()
    assert seen["fwd"] == seen["bwd"] == (False, True, False)
    np.testing.assert_allclose(b.grad.numpy(), [1.0])
    with cgrad.no_grad():
        Rec.apply(a, b, 2.0)
    assert seen["fwd"] == (False, False, False)


def test_gradient_for_input_that_does_not_need_it_is_ignored():
    class Both(Function):
        @staticmethod
        def forward(ctx, a, b):
            return a * b

        @staticmethod
        def backward(ctx, g):
            return g, g

    a, b = t64([1.0], requires_grad=False), t64([2.0])
    Both.apply(a, b).sum().backward()
    assert a.grad is None
    np.testing.assert_allclose(b.grad.numpy(), [1.0])


def test_mark_non_differentiable_and_integer_outputs():
    seen = {}

    class SortLike(Function):
        @staticmethod
        def forward(ctx, x):
            mask = (x > 0).to(x.dtype)
            idx = x.argmax()
            ctx.mark_non_differentiable(mask)
            return x * 2, mask, idx

        @staticmethod
        def backward(ctx, g, g_mask, g_idx):
            seen["mask"] = g_mask
            seen["idx"] = g_idx
            return g * 2

    x = t64([-1.0, 2.0, 3.0])
    y, mask, idx = SortLike.apply(x)
    assert y.requires_grad
    assert not mask.requires_grad and mask.grad_fn is None
    assert not idx.requires_grad and idx.dtype is cgrad.int64
    (y.sum() + 0.0).backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0, 2.0])
    np.testing.assert_allclose(seen["mask"].numpy(), [0.0, 0.0, 0.0])  # materialized zeros
    # an int64 output is non-differentiable by itself; its grad_output is zeros too
    assert seen["idx"].dtype is cgrad.int64 and seen["idx"].item() == 0


def test_set_materialize_grads_false_passes_none_for_unused_outputs():
    seen = []

    class Two(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.set_materialize_grads(False)
            return x * 2, x * 3

        @staticmethod
        def backward(ctx, g1, g2):
            seen.append((g1 is None, g2 is None))
            out = None
            if g1 is not None:
                out = g1 * 2
            if g2 is not None:
                out = g2 * 3 if out is None else out + g2 * 3
            return out

    x = t64([1.0, 2.0])
    a, b = Two.apply(x)
    a.sum().backward(retain_graph=True)
    b.sum().backward(retain_graph=True)
    (a.sum() + b.sum()).backward()
    assert seen == [(False, True), (True, False), (False, False)]
    np.testing.assert_allclose(x.grad.numpy(), [2 + 3 + 5, 2 + 3 + 5])


def test_identity_output_gets_its_own_entry():
    class Ident(Function):
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def backward(ctx, g):
            return g * 5

    x = t64([1.0, 2.0])
    y = Ident.apply(x)
    assert y is not x and x.is_leaf and x.grad_fn is None
    assert y.grad_fn.name() == "Ident"
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 5.0])


def test_same_output_twice_and_views():
    class Dup(Function):
        @staticmethod
        def forward(ctx, x):
            y = x * 1.0
            return y, y, x.reshape(-1)

        @staticmethod
        def backward(ctx, g1, g2, g3):
            return g1 + 2 * g2 + 3 * g3.reshape(2, 2)

    x = t64([[1.0, 2.0], [3.0, 4.0]])
    a, b, c = Dup.apply(x)
    (a.sum() + b.sum() + c.sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full((2, 2), 6.0))


def test_broadcast_gradient_is_summed_to_the_input_shape():
    class AddB(Function):
        @staticmethod
        def forward(ctx, x, b):
            return x + b

        @staticmethod
        def backward(ctx, g):
            return g, g  # b's gradient has x's (broadcast) shape, as in PyTorch

    x, b = t64(np.ones((2, 3))), t64([1.0, 2.0, 3.0])
    AddB.apply(x, b).sum().backward()
    np.testing.assert_allclose(b.grad.numpy(), [2.0, 2.0, 2.0])


def test_setup_context_style():
    class Sq(Function):
        @staticmethod
        def forward(x):
            return x * x

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, = inputs
            ctx.save_for_backward(x)

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return 2 * x * g

    x = t64([3.0])
    Sq.apply(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [6.0])


def test_forward_runs_without_grad_and_restores_mode_on_error():
    seen = {}

    class Boom(Function):
        @staticmethod
        def forward(ctx, x):
            seen["mode"] = cgrad.is_grad_enabled()
            raise ValueError("forward failed")

        @staticmethod
        def backward(ctx, g):
            return g

    with pytest.raises(ValueError, match="forward failed"):
        Boom.apply(t64([1.0]))
    assert seen["mode"] is False
    assert cgrad.is_grad_enabled()


def test_no_grad_records_nothing():
    x = t64([1.0, 2.0])
    with cgrad.no_grad():
        y = MySquare.apply(x)
    assert not y.requires_grad and y.grad_fn is None
    y2 = MySquare.apply(t64([1.0], requires_grad=False))
    assert not y2.requires_grad and y2.grad_fn is None


def test_base_class_misuse():
    with pytest.raises(TypeError):
        Function.apply(t64([1.0]))

    class NoBackward(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

    with pytest.raises(NotImplementedError):
        NoBackward.apply(t64([1.0])).sum().backward()
    with pytest.raises(RuntimeError, match="apply"):
        MySquare()(t64([1.0]))


# ---------------------------------------------------------------- errors
def _fn_returning(value_fn, n_inputs=1):
    class Bad(Function):
        @staticmethod
        def forward(ctx, *xs):
            out = xs[0] * 1.0
            for x in xs[1:]:
                if isinstance(x, cgrad.Tensor):
                    out = out + x.sum()
            return out

        @staticmethod
        def backward(ctx, g):
            return value_fn(g)

    return Bad


def test_wrong_number_of_gradients():
    Bad = _fn_returning(lambda g: g)
    x, w = t64([1.0, 2.0]), t64([3.0])
    with pytest.raises(RuntimeError, match=r"Bad\.backward returned an incorrect number of gradients \(expected 2.*got 1\)"):
        Bad.apply(x, w).sum().backward()
    Bad3 = _fn_returning(lambda g: (g, g, g))
    with pytest.raises(RuntimeError, match=r"expected 2.*got 3"):
        Bad3.apply(t64([1.0, 2.0]), t64([3.0])).sum().backward()
    # trailing Nones are accepted (as in PyTorch)
    Ok = _fn_returning(lambda g: (g, None, None))
    x = t64([1.0, 2.0])
    Ok.apply(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0])


def test_wrong_shape_names_function_and_input():
    class MySq(Function):
        @staticmethod
        def forward(ctx, x):
            return x * x

        @staticmethod
        def backward(ctx, g):
            return g.sum(0)

    x = t64(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"MySq\.backward returned a gradient of shape \(3,\) for input 0 of shape \(2, 3\)"):
        MySq.apply(x).sum().backward()


def test_wrong_dtype_non_tensor_and_non_none_for_non_tensor():
    Bad = _fn_returning(lambda g: g.to(cgrad.float32))
    with pytest.raises(TypeError, match=r"Bad\.backward returned a gradient of dtype float32 for input 0 of dtype float64"):
        Bad.apply(t64([1.0])).sum().backward()
    Bad = _fn_returning(lambda g: np.ones(1))
    with pytest.raises(TypeError, match=r"Bad\.backward returned ndarray for input 0"):
        Bad.apply(t64([1.0])).sum().backward()
    Bad = _fn_returning(lambda g: (g, g))
    with pytest.raises(TypeError, match=r"Bad\.backward returned a gradient for input 1, which is not a tensor"):
        Bad.apply(t64([1.0]), 2.0).sum().backward()


def test_exception_in_backward_propagates_unchanged():
    class MyError(Exception):
        pass

    class Raises(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            raise MyError("custom failure 42")

    x = t64([1.0])
    with pytest.raises(MyError, match="custom failure 42"):
        Raises.apply(x).sum().backward()
    with pytest.raises(MyError, match="custom failure 42"):
        ag.grad(Raises.apply(x).sum(), x)
    # the tape still works afterwards
    MySquare.apply(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0])


# ---------------------------------------------------------------- saved tensors
def test_saved_tensors_released_after_backward():
    ctxs = []

    class Sq(Function):
        @staticmethod
        def forward(ctx, x):
            ctxs.append(ctx)
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return 2 * x * g

    x = t64([1.0, 2.0])
    y = Sq.apply(x)
    y.sum().backward()
    with pytest.raises(RuntimeError, match="Sq"):
        y.sum().backward()
    with pytest.raises(RuntimeError, match=r"second time.*in Sq"):
        ctxs[0].saved_tensors


def test_retain_graph_allows_second_backward():
    x = t64([1.0, 2.0])
    y = MySquare.apply(x)
    y.sum().backward(retain_graph=True)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 8.0])


def test_in_place_modification_of_saved_tensor_is_detected():
    class MulW(Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(w)
            return x * w

        @staticmethod
        def backward(ctx, g):
            w, = ctx.saved_tensors
            return g * w, None

    x, w = t64([1.0, 2.0]), t64([3.0, 4.0], requires_grad=False)
    y = MulW.apply(x, w)
    w.add_(1.0)
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation.*MulW"):
        y.sum().backward()


def test_save_for_backward_rejects_non_tensors_and_allows_none():
    class S(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x, None)
            return x * 2

        @staticmethod
        def backward(ctx, g):
            x, nothing = ctx.saved_tensors
            assert nothing is None
            return g * 2

    x = t64([1.0])
    S.apply(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0])

    class Bad(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(3)
            return x

    with pytest.raises(TypeError, match="save_for_backward"):
        Bad.apply(x)


# ---------------------------------------------------------------- higher order
def test_double_backward_hvp_of_custom_cube():
    rng = np.random.default_rng(5)
    a = rng.standard_normal(4)
    u = rng.standard_normal(4)

    def grad_at(arr):
        x = t64(arr)
        (g,) = ag.grad((Cube.apply(x) * x.tanh()).sum(), x, create_graph=True)
        return x, g

    x, g = grad_at(a)
    (hvp,) = ag.grad((g * t64(u, False)).sum(), x)
    eps = 1e-5
    num = (grad_at(a + eps * u)[1].detach().numpy() - grad_at(a - eps * u)[1].detach().numpy()) / (2 * eps)
    np.testing.assert_allclose(hvp.numpy(), num, rtol=1e-6, atol=1e-8)


def test_double_backward_through_saved_output():
    x = t64([0.5, -1.0])
    (g,) = ag.grad(Exp.apply(x).sum(), x, create_graph=True)
    (h,) = ag.grad(g.sum(), x)
    np.testing.assert_allclose(g.detach().numpy(), np.exp([0.5, -1.0]), rtol=1e-12)
    np.testing.assert_allclose(h.numpy(), np.exp([0.5, -1.0]), rtol=1e-12)


def test_double_backward_matches_torch(torch):
    class TCube(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return 3 * x * x * g

    a = np.array([0.3, -1.2, 2.0])
    x = t64(a)
    (g,) = ag.grad((Cube.apply(x) ** 2).sum(), x, create_graph=True)
    (g.sum()).backward()
    tx = torch.tensor(a, requires_grad=True)
    (tg,) = torch.autograd.grad((TCube.apply(tx) ** 2).sum(), tx, create_graph=True)
    tg.sum().backward()
    np.testing.assert_allclose(g.detach().numpy(), tg.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)


def test_once_differentiable():
    class NpCube(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x * x

        @staticmethod
        @once_differentiable
        def backward(ctx, g):
            assert not cgrad.is_grad_enabled()
            x, = ctx.saved_tensors
            return cgrad.tensor(3 * x.detach().numpy() ** 2 * g.numpy(), dtype=x.dtype)

    x = t64([1.0, 2.0])
    NpCube.apply(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 12.0])
    x = t64([1.0, 2.0])
    (g,) = ag.grad(NpCube.apply(x).sum(), x, create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), [3.0, 12.0])
    with pytest.raises(RuntimeError, match=r"once_differentiable.*NpCube"):
        g.sum().backward()


# ---------------------------------------------------------------- scale and memory
def test_long_chain():
    class Scale(Function):
        @staticmethod
        def forward(ctx, x, s):
            ctx.s = s
            return x * s

        @staticmethod
        def backward(ctx, g):
            return g * ctx.s, None

    x = t64([1.0, 2.0])
    y = x
    for _ in range(1000):
        y = Scale.apply(y, 1.001)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.001 ** 1000] * 2, rtol=1e-10)

    # a longer chain that also saves tensors, freed without recursion
    y = x
    for _ in range(20000):
        y = MySquare.apply(y * 0.0 + 1.0)
    y.sum().backward()
    del y


def test_ctx_is_freed_with_the_graph():
    refs = []

    class Sq(Function):
        @staticmethod
        def forward(ctx, x):
            refs.append(weakref.ref(ctx))
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return 2 * x * g

    class SaveOut(Function):
        @staticmethod
        def forward(ctx, x):
            refs.append(weakref.ref(ctx))
            y = x * 2
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            y, = ctx.saved_tensors
            return g * 2

    x = t64([1.0, 2.0])
    # no backward at all
    y = Sq.apply(x)
    z = SaveOut.apply(y)
    assert all(r() is not None for r in refs)
    del y, z
    assert all(r() is None for r in refs)  # no gc needed: no cycle
    # after backward
    refs.clear()
    loss = SaveOut.apply(Sq.apply(x)).sum()
    loss.backward()
    del loss
    assert all(r() is None for r in refs)
    # under no_grad the ctx is dropped at once
    refs.clear()
    with cgrad.no_grad():
        y = Sq.apply(x)
    assert refs[0]() is None


def test_output_stored_on_ctx_warns():
    class Stash(Function):
        @staticmethod
        def forward(ctx, x):
            y = x * 2
            ctx.out = y
            return y

        @staticmethod
        def backward(ctx, g):
            return g * 2

    with pytest.warns(RuntimeWarning, match="ctx.out"):
        Stash.apply(t64([1.0]))


def test_functionctx_attributes():
    class A(Function):
        @staticmethod
        def forward(ctx, x):
            assert isinstance(ctx, FunctionCtx)
            ctx.shape = x.shape
            ctx.flags = {"a": 1}
            return x * 1.0

        @staticmethod
        def backward(ctx, g):
            assert ctx.shape == (2,) and ctx.flags == {"a": 1}
            return g

    x = t64([1.0, 2.0])
    A.apply(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0])


def test_saved_tensors_freed_by_backward_while_graph_lives():
    refs = []

    class Keep(Function):
        @staticmethod
        def forward(ctx, x):
            tmp = x * 2
            refs.append(weakref.ref(tmp))
            refs.append(weakref.ref(ctx))
            ctx.save_for_backward(tmp)
            return x * 3

        @staticmethod
        def backward(ctx, g):
            tmp, = ctx.saved_tensors
            return g * 3

    x = t64([1.0])
    y = Keep.apply(x)
    y.sum().backward()
    assert y.grad_fn is not None  # the graph is still alive ...
    assert refs[0]() is None and refs[1]() is None  # ... but ctx and its saved tensors are gone


def test_same_tensor_passed_twice_and_returning_a_non_grad_input():
    class PickSecond(Function):
        @staticmethod
        def forward(ctx, x, c):
            ctx.save_for_backward(x)
            return x * x, c  # c is an input that does not require grad

        @staticmethod
        def backward(ctx, g, gc):
            x, = ctx.saved_tensors
            return 2 * x * g, gc

    x = t64([1.0, 2.0])
    c = t64([5.0, 6.0], requires_grad=False)
    y, c_out = PickSecond.apply(x, c)
    assert c_out is not c and c_out.grad_fn.name() == "PickSecond"
    assert c.grad_fn is None and not c.requires_grad  # the input itself is untouched
    (y.sum() + c_out.sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])

    x = t64([1.0, 2.0])
    MulAdd.apply(x, x)[0].sum().backward()  # x * x through both slots
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])


def test_custom_function_inside_a_custom_backward_with_create_graph():
    class SquareViaCustom(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return MySquare.apply(x) * 0.0 + 2 * x * g  # a custom op recorded in backward

    x = t64([1.5, -2.0])
    (g,) = ag.grad(SquareViaCustom.apply(x).sum(), x, create_graph=True)
    (h,) = ag.grad(g.sum(), x)
    np.testing.assert_allclose(g.detach().numpy(), [3.0, -4.0])
    np.testing.assert_allclose(h.numpy(), [2.0, 2.0])


def test_exception_in_backward_with_create_graph_and_later_backward_works():
    class Raises(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            raise ZeroDivisionError("no")

    x = t64([1.0])
    with pytest.raises(ZeroDivisionError):
        ag.grad(Raises.apply(x).sum(), x, create_graph=True)
    assert cgrad.is_grad_enabled()
    (g,) = ag.grad(Cube.apply(x).sum(), x, create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), [3.0])
