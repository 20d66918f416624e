"""cgrad.policy.GradientPolicies: mask, freeze, scale, noise, per-group clip, tags, explain."""
import math

import numpy as np
import pytest

import cgrad
from cgrad.policy import GradientPolicies


class TinyModel:
    """Anything with named_parameters() is a model for the policies."""

    def __init__(self):
        self.enc_w = cgrad.tensor([[1.0, -2.0], [-0.5, 3.0]], requires_grad=True)
        self.enc_b = cgrad.tensor([0.1, -0.1], requires_grad=True)
        self.head_w = cgrad.tensor([[2.0, -1.0]], requires_grad=True)

    def named_parameters(self):
        return [("enc.weight", self.enc_w), ("enc.bias", self.enc_b), ("head.weight", self.head_w)]

    def backward(self):
        for _, p in self.named_parameters():
            p.grad = None
        x = cgrad.tensor([[1.0, 2.0]])
        h = x @ self.enc_w.t() + self.enc_b
        (h @ self.head_w.t()).sum().backward()


def grads(m):
    return {n: p.grad.numpy().copy() if p.grad is not None else None for n, p in m.named_parameters()}


def test_mask_lets_gradient_through_only_where_the_weight_is_positive():
    m = TinyModel()
    m.backward()
    before = grads(m)
    GradientPolicies(m).mask("enc.weight", lambda p: p > 0).apply()
    after = grads(m)
    np.testing.assert_array_equal(after["enc.weight"], before["enc.weight"] * (m.enc_w.detach().numpy() > 0))
    np.testing.assert_array_equal(after["head.weight"], before["head.weight"])


def test_freeze_drops_the_gradient_and_later_rules_skip_it():
    m = TinyModel()
    m.backward()
    report = GradientPolicies(m).freeze("enc.*").scale("*", 2.0).apply()
    g = grads(m)
    assert g["enc.weight"] is None and g["enc.bias"] is None
    assert report.rules[0]["params"] == 2 and report.rules[1]["params"] == 1


def test_scale_and_tags_and_module_targets():
    m = TinyModel()
    m.backward()
    before = grads(m)
    pol = GradientPolicies(m)
    pol.tag([m.enc_w, m.enc_b], "encoder")
    pol.scale("encoder", 0.5)
    pol.apply()
    g = grads(m)
    np.testing.assert_allclose(g["enc.weight"], 0.5 * before["enc.weight"])
    np.testing.assert_allclose(g["enc.bias"], 0.5 * before["enc.bias"])
    np.testing.assert_allclose(g["head.weight"], before["head.weight"])
    GradientPolicies().scale(m, 3.0).apply()  # a module target, no names needed
    np.testing.assert_allclose(grads(m)["head.weight"], 3 * before["head.weight"])


def test_noise_is_reproducible_with_a_seed_and_has_the_right_scale():
    m = TinyModel()
    outs = []
    for _ in range(2):
        m.backward()
        GradientPolicies(m).noise("*", std=0.1, seed=7).apply()
        outs.append(grads(m))
    for k in outs[0]:
        np.testing.assert_array_equal(outs[0][k], outs[1][k])
    big = cgrad.zeros(200, 200, requires_grad=True)
    big.grad = cgrad.zeros(200, 200)
    GradientPolicies().noise(big, std=0.1, seed=1).apply()
    assert abs(float(big.grad.numpy().std()) - 0.1) < 0.005


def test_clip_norm_on_a_device_copies_nothing_back_until_the_report_is_read(monkeypatch):
    """A clip_norm rule over device gradients leaves the group norm there:
    apply() copies nothing back, reading report.rules copies it once; the
    numbers and the gradients are the cpu's."""
    from device_util import host, record_copies_back

    got = {}
    for dev in ("cpu", "cuda"):
        m = TinyModel()
        m.backward()
        if dev == "cuda":  # the same gradients, on device parameters
            for name, p in m.named_parameters():
                q = p.detach().to(dev).requires_grad_()
                q.grad = p.grad.to(dev)
                setattr(m, {"enc.weight": "enc_w", "enc.bias": "enc_b", "head.weight": "head_w"}[name], q)
        pol = GradientPolicies(m).clip_norm("enc.*", max_norm=0.5).clip_norm("head.*", max_norm=100)
        copies = record_copies_back(monkeypatch)
        report = pol.apply()
        assert copies == []
        rules = report.rules
        assert len(copies) == (2 if dev == "cuda" else 0) and all(c == (2,) for c in copies)
        assert report.rules is rules and len(copies) == (2 if dev == "cuda" else 0)
        got[dev] = ([(r["total_norm"], r["clipped"], r["clip_coef"]) for r in rules],
                    [host(p.grad) for _, p in m.named_parameters()])
        monkeypatch.undo()
    (c_rules, c_grads), (d_rules, d_grads) = got["cpu"], got["cuda"]
    assert [r[1] for r in d_rules] == [True, False] == [r[1] for r in c_rules]
    for a, b in zip(c_rules, d_rules):
        assert b[0] == pytest.approx(a[0], rel=1e-12) and b[2] == pytest.approx(a[2], rel=1e-12)
    for a, b in zip(c_grads, d_grads):
        np.testing.assert_allclose(b, a, rtol=1e-12)


def test_clip_norm_clips_only_its_group():
    m = TinyModel()
    m.backward()
    before = grads(m)
    report = GradientPolicies(m).clip_norm("enc.*", max_norm=0.5).apply()
    enc_norm = math.sqrt(float((before["enc.weight"] ** 2).sum() + (before["enc.bias"] ** 2).sum()))
    entry = report.rules[0]
    assert entry["clipped"] and entry["total_norm"] == pytest.approx(enc_norm)
    g = grads(m)
    got = math.sqrt(float((g["enc.weight"] ** 2).sum() + (g["enc.bias"] ** 2).sum()))
    assert got == pytest.approx(0.5, rel=1e-5)
    np.testing.assert_array_equal(g["head.weight"], before["head.weight"])


def test_explain_lists_rules_in_order_with_their_targets():
    m = TinyModel()
    pol = GradientPolicies(m)
    pol.tag(m.enc_w, "encoder")
    pol.mask("encoder", lambda p: p > 0).scale("*", 0.1).freeze("head.*")
    lines = pol.explain(m.enc_w)
    assert "'enc.weight'" in lines[0] and "encoder" in lines[0]
    assert lines[1].startswith("  1. mask by") and "'encoder'" in lines[1]
    assert lines[2].startswith("  2. scale by 0.1") and len(lines) == 3
    assert "freeze" in pol.explain(m.head_w)[2]
    assert "no rule applies" in GradientPolicies(m).explain(m.enc_b)[1]


class FakeOptimizer:
    def __init__(self):
        self.pre = []

    def register_step_pre_hook(self, hook):
        self.pre.append(hook)
        return hook

    def step(self):
        for h in self.pre:
            h(self, (), {})


def test_attach_runs_before_each_step():
    m = TinyModel()
    opt = FakeOptimizer()
    pol = GradientPolicies(m).freeze("head.weight")
    pol.attach(opt)
    m.backward()
    opt.step()
    assert m.head_w.grad is None and pol.last_report.rules[0]["params"] == 1


def test_bad_input():
    m = TinyModel()
    pol = GradientPolicies(m)
    with pytest.raises(TypeError):
        GradientPolicies(object())
    with pytest.raises(TypeError, match="target"):
        pol.scale(3, 2.0)
    with pytest.raises(ValueError, match="factor"):
        pol.scale("*", float("nan"))
    with pytest.raises(ValueError, match="std"):
        pol.noise("*", -1.0)
    with pytest.raises(ValueError, match="max_norm"):
        pol.clip_norm("*", 0)
    with pytest.raises(ValueError, match="not a tag"):
        GradientPolicies().scale("enc.*", 2.0)
    with pytest.raises(TypeError, match="callable"):
        pol.mask("*", 5)
    m.backward()
    with pytest.raises(ValueError, match="shape"):
        GradientPolicies(m).mask("enc.bias", lambda p: cgrad.ones(3)).apply()
    with pytest.raises(TypeError, match="register_step_pre_hook"):
        pol.attach(object())


def test_sparse_gradients_scale_and_clip_but_refuse_mask():
    emb = cgrad.nn.Embedding(10, 3, sparse=True)
    emb(cgrad.tensor([1, 4, 4])).sum().backward()
    dense = emb.weight.grad.to_dense().numpy().copy()
    report = GradientPolicies(emb).scale("*", 2.0).clip_norm("*", max_norm=1.0).apply()
    assert emb.weight.grad.is_sparse
    got = emb.weight.grad.to_dense().numpy()
    norm = float(np.sqrt(((2 * dense) ** 2).sum()))
    assert report.rules[1]["total_norm"] == pytest.approx(norm)
    np.testing.assert_allclose(got, 2 * dense / (norm + 1e-6), rtol=1e-5)
    with pytest.raises(NotImplementedError, match="dense gradient"):
        GradientPolicies(emb).mask("*", lambda p: p > 0).apply()
