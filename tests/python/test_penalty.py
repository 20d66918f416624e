"""cgrad.nn.penalty: L1/L2 penalties over parameters, values, gradients
(formula, central differences, second derivative), exclude_bias, errors."""
import numpy as np
import pytest

import cgrad
from cgrad.autograd import gradcheck
from cgrad.nn.modules.module import Module
from cgrad.nn.parameter import Parameter
from cgrad.nn.penalty import l1_penalty, l2_penalty
from oracle import assert_close


class Net(Module):
    def __init__(self, rng, dtype=cgrad.float64):
        super().__init__()
        self.weight = Parameter(cgrad.tensor(rng.standard_normal((3, 4)), dtype=dtype))
        self.bias = Parameter(cgrad.tensor(rng.standard_normal(3), dtype=dtype))
        self.inner = Module()
        self.inner.kernel = Parameter(cgrad.tensor(rng.standard_normal((2, 2, 2)), dtype=dtype))


def arrays(net):
    return [p.detach().numpy() for p in net.parameters()]


def test_values_over_a_module(rng):
    net = Net(rng)
    a = arrays(net)
    assert len(a) == 3
    assert_close("l1", l1_penalty(net).item(), sum(np.abs(x).sum() for x in a), 1e-14, 1e-14)
    assert_close("l2 (sum p^2, no 1/2)", l2_penalty(net, weight=0.3).item(),
                 0.3 * sum((x ** 2).sum() for x in a), 1e-14, 1e-14)
    # exclude_bias drops the 1-D bias
    assert_close("l2 without biases", l2_penalty(net, exclude_bias=True).item(),
                 (a[0] ** 2).sum() + (a[2] ** 2).sum(), 1e-14, 1e-14)
    assert_close("l1 without biases", l1_penalty(net, weight=2.0, exclude_bias=True).item(),
                 2.0 * (np.abs(a[0]).sum() + np.abs(a[2]).sum()), 1e-14, 1e-14)


def test_gradients_are_the_formulas(rng):
    net = Net(rng)
    loss = l2_penalty(net, weight=0.05) + l1_penalty(net, weight=0.01, exclude_bias=True)
    loss.backward()
    w, b, k = net.weight, net.bias, net.inner.kernel
    assert_close("d/dw", w.grad.numpy(), 0.1 * w.detach().numpy() + 0.01 * np.sign(w.detach().numpy()), 1e-15, 1e-14)
    assert_close("d/db (no l1 on the bias)", b.grad.numpy(), 0.1 * b.detach().numpy(), 1e-15, 1e-14)
    assert_close("d/dk", k.grad.numpy(), 0.1 * k.detach().numpy() + 0.01 * np.sign(k.detach().numpy()), 1e-15, 1e-14)


def test_l2_half_weight_is_coupled_weight_decay(rng):
    # l2_penalty(weight=wd/2) adds exactly wd * p to the gradient, as SGD's weight_decay=wd
    p = cgrad.tensor(rng.standard_normal((4, 5)), dtype=cgrad.float64, requires_grad=True)
    wd = 1e-2
    l2_penalty([p], weight=wd / 2).backward()
    assert_close("wd * p", p.grad.numpy(), wd * p.detach().numpy(), 1e-17, 1e-14)


def test_gradcheck_and_second_derivative(rng):
    a = cgrad.tensor(rng.standard_normal((2, 3)), dtype=cgrad.float64, requires_grad=True)
    b = cgrad.tensor(rng.standard_normal(3), dtype=cgrad.float64, requires_grad=True)
    assert gradcheck(lambda a, b: l2_penalty([a, b], weight=0.7), (a, b))
    assert gradcheck(lambda a, b: l1_penalty([a, b], weight=0.7), (a, b))
    (g,) = cgrad.autograd.grad(l2_penalty(a, weight=0.5), [a], create_graph=True)
    (h,) = cgrad.autograd.grad(g.sum(), [a])
    assert_close("H 1 of 0.5 sum a^2", h.numpy(), np.ones((2, 3)), 0, 0)


def test_inputs_accepted(rng):
    net = Net(rng)
    ref = l2_penalty(net).item()
    assert l2_penalty(list(net.parameters())).item() == ref
    assert l2_penalty(net.parameters()).item() == ref  # a generator
    assert l2_penalty(net.named_parameters()).item() == ref
    assert l1_penalty(net.weight).item() == np.abs(net.weight.detach().numpy()).sum()
    empty = l2_penalty([])
    assert empty.shape == () and empty.item() == 0.0
    f32 = Net(rng, cgrad.float32)
    assert l2_penalty(f32).dtype is cgrad.float32


def test_matches_the_torch_idiom(torch, rng):
    lin = torch.nn.Linear(4, 3).double()
    ref = sum(p.pow(2).sum() for p in lin.parameters()).item()
    ref1 = sum(p.abs().sum() for p in lin.parameters()).item()
    ps = [cgrad.tensor(p.detach().numpy(), dtype=cgrad.float64) for p in lin.parameters()]
    assert_close("torch idiom l2", l2_penalty(ps).item(), ref, 1e-14, 1e-13)
    assert_close("torch idiom l1", l1_penalty(ps).item(), ref1, 1e-14, 1e-13)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="weight must be a finite number >= 0, got -1"):
        l2_penalty([cgrad.ones(2)], weight=-1)
    with pytest.raises(ValueError, match="nan"):
        l1_penalty([cgrad.ones(2)], weight=float("nan"))
    with pytest.raises(TypeError, match="parameter 1 is a str"):
        l1_penalty([cgrad.ones(2), "w"])
    with pytest.raises(TypeError, match="parameter 0 has dtype"):
        l2_penalty([cgrad.tensor([1, 2])])
    with pytest.raises(TypeError, match="expected a Module, a Tensor or an iterable"):
        l2_penalty(3.0)
