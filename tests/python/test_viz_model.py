"""The monitor's Qt-free parts: the run model, heatmap peak bins and codes,
the alert rules, and packaging (cgrad.viz, the cgrad-monitor script)."""
import os
import tomllib
from types import SimpleNamespace

import numpy as np
import pytest

from cgrad.viz import downsample as ds
from cgrad.viz.alerts import AlertEngine, AlertRules
from cgrad.viz.model import (LOG_MISSING, LOG_NONFINITE, LOG_ZERO, RunModel, decode_delta,
                             encode_log_norms)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_delta(first, n, n_layers=4, norm=None, layer=None, nonfinite=None, groups=1):
    steps = np.arange(first, first + n)
    norm = np.full(n, 0.5) if norm is None else np.asarray(norm, dtype=np.float64)
    layer = np.full((n, n_layers), 0.1) if layer is None else np.asarray(layer, dtype=np.float64)
    nonfinite = np.zeros((n, n_layers)) if nonfinite is None else nonfinite
    cols = {"step": steps, "time": steps * 0.1, "loss": 1.0 / (1 + steps),
            "grad_norm": norm, "grad_norm_clipped": np.minimum(norm, 1.0),
            "clip_max_norm": np.ones(n), "clip_coef": np.minimum(1.0, 1.0 / norm),
            "clipped": (norm > 1).astype(np.int64), "loss_scale": np.full(n, np.nan),
            "skipped": np.zeros(n, np.int64), "nonfinite": nonfinite.sum(axis=1).astype(np.int64)}
    return SimpleNamespace(
        steps=cols, lr=np.tile(np.linspace(1e-3, 2e-3, groups), (n, 1)),
        layer_grad_norm=layer, layer_grad_max=layer, layer_nonfinite=nonfinite,
        layer_update_ratio=layer * 1e-3, layer_weight_norm=np.ones_like(layer),
        events=[], new_layers=[] if first else [
            {"layer_id": i, "name": f"l{i}", "kind": "param"} for i in range(n_layers)])


def model_from(*deltas, rules=None):
    model = RunModel()
    engine = AlertEngine(rules)
    for d in deltas:
        start, end = model.append(decode_delta(d, 1))
        engine.update(model, start, end)
    return model, engine


# ------------------------------------------------------------------ model
def test_log_norm_sentinels_keep_missing_zero_finite_nonfinite_apart():
    norm = np.array([[np.nan, 0.0, 100.0, np.inf, 1e-3]])
    nonfinite = np.array([[np.nan, 0, 0, 0, 2]])
    out = encode_log_norms(norm, nonfinite)
    assert out[0, 0] == LOG_MISSING
    assert out[0, 1] == LOG_ZERO
    assert out[0, 2] == pytest.approx(2.0)
    assert out[0, 3] == LOG_NONFINITE
    assert out[0, 4] == LOG_NONFINITE          # finite norm, but NaN/Inf elements
    # the max of a bin ranks them missing < zero < finite < non-finite
    assert LOG_MISSING < LOG_ZERO < -300 and 300 < LOG_NONFINITE


def test_model_grows_by_doubling_and_keeps_every_step():
    model = RunModel()
    caps = []
    for first in range(0, 5000, 700):
        model.append(decode_delta(make_delta(first, 700), 1))
        caps.append(model._cap)
    assert model.n == 5600
    assert np.array_equal(model.steps, np.arange(5600))
    assert np.allclose(model.loss, 1.0 / (1 + np.arange(5600)))
    assert sorted(set(caps)) == [1024, 2048, 4096, 8192]
    assert model.layer_log.shape == (5600, 4)
    assert model.lr.shape == (5600, 1)


def test_model_drops_steps_it_already_holds():
    model = RunModel()
    model.append(decode_delta(make_delta(0, 10), 1))
    assert model.append(decode_delta(make_delta(5, 10), 1)) == (10, 15)
    assert np.array_equal(model.steps, np.arange(15))


def test_model_row_lookup_and_stride():
    model = RunModel()
    d = make_delta(0, 50)
    d.steps["step"] = np.arange(0, 500, 10)
    model.append(decode_delta(d, 1))
    assert model.step_stride() == 10
    assert model.row_of_step(42) == 4
    assert model.row_of_step(46) == 5
    assert model.row_of_step(10_000) == 49
    assert model.rows_in(100, 200) == (10, 21)
    # the stride follows new rows (it is kept only while the rows are the same)
    d = make_delta(0, 2_000)
    d.steps["step"] = np.arange(500, 500 + 2_000 * 3, 3)
    model.append(decode_delta(d, 1))
    assert model.step_stride() == 3


def test_model_accepts_layers_added_later():
    model = RunModel()
    model.append(decode_delta(make_delta(0, 5, n_layers=2), 1))
    d = make_delta(5, 5, n_layers=3)
    d.new_layers = [{"layer_id": 2, "name": "late", "kind": "param"}]
    model.append(decode_delta(d, 1))
    assert model.layer_names == ["l0", "l1", "late"]
    assert (model.layer_log[:5, 2] == LOG_MISSING).all()
    assert np.allclose(model.layer_log[5:, 2], -1.0)


# ------------------------------------------------------------------ peak bins
def test_peak_bins_keep_a_one_step_spike_and_a_single_nan_cell():
    n = 100_000
    layer = np.full((n, 3), 1e-2)
    layer[77_777, 1] = 1e3                     # one-step explosion
    nonfinite = np.zeros((n, 3))
    nonfinite[12_345, 2] = 1                   # one NaN cell
    layer[:, 0] = 0.0                          # dead layer
    model = RunModel()
    model.append(decode_delta(make_delta(0, n, n_layers=3, layer=layer, nonfinite=nonfinite), 1))
    image, start, width = ds.peak_bins(model.steps, model.layer_log, 0, n, 500)
    assert image.shape == (500, 3) and width == 200 and start == 0
    codes = ds.encode(image, *model.log_levels())
    assert (codes[:, 0] == ds.CODE_ZERO).all()
    spike_bin = 77_777 // 200
    assert codes[spike_bin, 1] == ds.CODE_LAST
    assert (np.delete(codes[:, 1], spike_bin) < ds.CODE_LAST).all()
    assert codes[12_345 // 200, 2] == ds.CODE_NONFINITE
    assert np.count_nonzero(codes[:, 2] == ds.CODE_NONFINITE) == 1


def test_peak_bins_leave_unrecorded_steps_missing():
    steps = np.array([0, 1, 2, 10, 11])
    values = np.zeros((5, 1), np.float32)
    image, start, width = ds.peak_bins(steps, values, 0, 12, 12)
    codes = ds.encode(image, -1.0, 1.0)
    assert width == 1 and image.shape == (12, 1)
    assert list(np.flatnonzero(codes[:, 0] != ds.CODE_MISSING)) == [0, 1, 2, 10, 11]


def test_encode_maps_levels_to_the_finite_code_range():
    image = np.array([[-3.0], [0.0], [3.0], [-np.inf], [np.inf]], np.float32)
    image[3] = LOG_ZERO
    codes = ds.encode(image, -3.0, 3.0)[:, 0]
    assert list(codes) == [ds.CODE_FIRST, (ds.CODE_FIRST + ds.CODE_LAST) // 2 + 1,
                           ds.CODE_LAST, ds.CODE_ZERO, ds.CODE_NONFINITE]


# ------------------------------------------------------------------ alerts
def test_spike_alert_against_running_median():
    norm = np.full(300, 0.5)
    norm[150] = 6.0          # 12x the median
    norm[200] = 4.0          # 8x: below k=10
    _, engine = model_from(make_delta(0, 300, norm=norm))
    spikes = [a for a in engine.alerts if a.kind == "spike"]
    assert [a.step for a in spikes] == [150]
    assert "12.0x" in spikes[0].message
    # a smaller k catches the second one too
    _, engine = model_from(make_delta(0, 300, norm=norm), rules=AlertRules(spike_k=5))
    assert [a.step for a in engine.alerts if a.kind == "spike"] == [150, 200]


def test_dead_layer_alert_needs_m_consecutive_steps():
    layer = np.full((200, 3), 0.1)
    layer[10:40, 1] = 0.0          # 30 steps: too short for M=50
    layer[100:, 2] = 1e-12         # 100 steps below eps
    _, engine = model_from(make_delta(0, 200, n_layers=3, layer=layer))
    dead = [a for a in engine.alerts if a.kind == "dead_layer"]
    assert [(a.layer_id, a.step, a.end_step) for a in dead] == [(2, 100, 199)]


def test_nonfinite_alert_per_stretch_names_first_layer():
    nonfinite = np.zeros((100, 3))
    nonfinite[20:23, 2] = 1
    nonfinite[60, 0] = 5
    _, engine = model_from(make_delta(0, 100, n_layers=3, nonfinite=nonfinite))
    bad = [a for a in engine.alerts if a.kind == "nonfinite"]
    assert [(a.step, a.end_step, a.layer_id) for a in bad] == [(20, 22, 2), (60, 60, 0)]
    assert "l2" in bad[0].message


def test_alerts_are_the_same_whatever_the_chunking():
    rng = np.random.default_rng(0)
    n = 900
    norm = rng.uniform(0.4, 0.6, n)
    norm[[100, 333, 334, 800]] = 20.0
    layer = rng.uniform(0.05, 0.2, (n, 4))
    layer[200:420, 3] = 0.0
    nonfinite = np.zeros((n, 4))
    nonfinite[495:510, 1] = 2
    whole = make_delta(0, n, layer=layer, norm=norm, nonfinite=nonfinite)
    _, one = model_from(whole)
    pieces = []
    for a, b in ((0, 1), (1, 250), (250, 500), (500, 505), (505, n)):
        d = make_delta(a, b - a, layer=layer[a:b], norm=norm[a:b], nonfinite=nonfinite[a:b])
        pieces.append(d)
    _, many = model_from(*pieces)

    def key(engine):
        return sorted((a.kind, a.step, a.end_step, a.layer_id) for a in engine.alerts)

    assert key(one) == key(many)
    kinds = {a.kind for a in one.alerts}
    assert kinds == {"spike", "dead_layer", "nonfinite"}


@pytest.mark.parametrize("kw", [{"spike_k": 0}, {"spike_window": 0}, {"dead_steps": 2.5},
                                {"dead_eps": -1.0}])
def test_alert_rules_reject_bad_values(kw):
    name = next(iter(kw))
    with pytest.raises(ValueError, match=name):
        AlertRules(**kw)


# ------------------------------------------------------------------ packaging
def test_pyproject_installs_viz_as_cgrad_viz_and_lists_every_subpackage():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    setuptools_cfg = project["tool"]["setuptools"]
    assert setuptools_cfg["package-dir"]["cgrad.viz"] == "viz"
    assert project["project"]["scripts"]["cgrad-monitor"] == "cgrad.viz.app:main"
    assert "pytest-qt" in " ".join(project["project"]["optional-dependencies"]["test"])
    viz_extra = " ".join(project["project"]["optional-dependencies"]["viz"])
    assert "PyQt6" in viz_extra and "pyqtgraph" in viz_extra
    on_disk = {"cgrad.viz"}
    for root, dirs, files in os.walk(os.path.join(REPO, "cgrad")):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
        if "__init__.py" in files:
            on_disk.add(os.path.relpath(root, REPO).replace(os.sep, "."))
    missing = on_disk - set(setuptools_cfg["packages"])
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
