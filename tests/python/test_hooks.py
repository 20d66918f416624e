"""Tensor.register_hook and register_post_accumulate_grad_hook."""
import numpy as np
import pytest

import cgrad


def test_leaf_hook_sees_total_gradient_once_and_can_replace_it():
    x = cgrad.tensor([1.0, 2.0, 3.0], requires_grad=True)
    seen = []

    def hook(g):
        seen.append(g.tolist())
        return g * 2

    x.register_hook(hook)
    ((x * x).sum() + x.sum()).backward()  # two paths into x: one call, summed
    assert seen == [[3.0, 5.0, 7.0]]
    assert x.grad.tolist() == [6.0, 10.0, 14.0]


def test_hook_returning_none_keeps_gradient_and_remove_unregisters():
    x = cgrad.tensor([1.0, -1.0], requires_grad=True)
    calls = []
    h = x.register_hook(lambda g: calls.append(1))
    (x * 3).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0] and calls == [1]
    h.remove()
    h.remove()  # idempotent
    x.grad = None
    (x * 3).sum().backward()
    assert calls == [1]


def test_nonleaf_hook_clips_in_flight():
    x = cgrad.tensor([1.0, 2.0], requires_grad=True)
    z = x * 3
    z.register_hook(lambda g: g.clamp(max=0.5))
    (z * cgrad.tensor([1.0, 0.25])).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.5, 0.75])


def test_hooks_run_in_registration_order():
    x = cgrad.tensor([1.0], requires_grad=True)
    x.register_hook(lambda g: g + 1)
    x.register_hook(lambda g: g * 10)
    (x * 1.0).sum().backward()
    assert x.grad.item() == 20.0


def test_hook_applies_to_autograd_grad():
    x = cgrad.tensor([2.0], requires_grad=True)
    x.register_hook(lambda g: g * 0)
    (g,) = cgrad.autograd.grad((x * x).sum(), x)
    assert g.item() == 0.0 and x.grad is None


def test_hook_exception_propagates_unchanged():
    x = cgrad.tensor([1.0], requires_grad=True)

    def bad(g):
        raise KeyError("boom")

    x.register_hook(bad)
    with pytest.raises(KeyError, match="boom"):
        (x * 2).sum().backward()


def test_hook_bad_return_values():
    x = cgrad.tensor([1.0, 2.0], requires_grad=True)
    h = x.register_hook(lambda g: "nope")
    with pytest.raises(TypeError, match="Tensor or None"):
        (x * 2).sum().backward()
    h.remove()
    x.register_hook(lambda g: cgrad.zeros(3))
    with pytest.raises(ValueError, match="hook"):
        (x * 2).sum().backward()


def test_register_hook_needs_grad_and_callable():
    with pytest.raises(RuntimeError):
        cgrad.zeros(2).register_hook(lambda g: g)
    with pytest.raises(TypeError):
        cgrad.zeros(2, requires_grad=True).register_hook(3)


def test_post_accumulate_hook_sees_updated_grad():
    w = cgrad.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.tolist()))
    (w * w).sum().backward()
    assert seen == [[2.0, 4.0]]
    with pytest.raises(RuntimeError, match="leaf"):
        (w * 2).register_post_accumulate_grad_hook(lambda t: None)


def test_hook_with_create_graph_is_differentiable():
    x = cgrad.tensor([3.0], requires_grad=True, dtype=cgrad.float64)
    y = x * x
    h = y.register_hook(lambda g: g * y)  # the gradient becomes y * 2x = 2x^3
    (g,) = cgrad.autograd.grad(y.sum(), x, create_graph=True)
    assert g.item() == pytest.approx(2 * 3.0 * 9.0)
    h.remove()  # hooks persist: the second pass would run it again
    (gg,) = cgrad.autograd.grad(g.sum(), x)
    assert gg.item() == pytest.approx(6 * 9.0)  # d/dx 2x^3


def test_hook_handle_does_not_leak_callable():
    import gc
    import weakref

    class Hook:
        def __call__(self, g):
            return None

    h = Hook()
    ref = weakref.ref(h)
    x = cgrad.tensor([1.0], requires_grad=True)
    x.register_hook(h)
    del h, x
    gc.collect()
    assert ref() is None
