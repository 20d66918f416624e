"""Shared fixtures for the cgrad Python tests (run from the repo root:
``python -m pytest tests/python``). PyTorch is optional: tests that compare
with it take the ``torch`` fixture, which skips when it is not installed."""
import os

import numpy as np
import pytest

import device_util  # noqa: F401  (before cgrad: chooses the "cuda" device for the run)
import cgrad


def pytest_configure(config):
    # The tests use tiny tensors: one torch thread is faster, and on a busy
    # 2-core machine OpenMP spin-waiting makes multi-threaded torch crawl.
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def pytest_report_header(config):
    try:
        import torch
        oracle = f"torch {torch.__version__} + float64 central differences"
    except ImportError:
        oracle = "float64 central differences only (torch not installed)"
    cuda = "reference device (NumPy)" if os.environ.get("CGRAD_CUDA_REFERENCE") == "1" else "GPU (CuPy)"
    return [f"cgrad: {getattr(cgrad, '__file__', '?')}", f"oracle: {oracle}", f"'cuda' runs on: {cuda}"]


@pytest.fixture(autouse=True)
def _isolated_state():
    """Same RNG state for every test; grad mode restored even if a test fails."""
    cgrad.manual_seed(0)
    yield
    if not cgrad.is_grad_enabled():
        if hasattr(cgrad, "set_grad_enabled"):
            cgrad.set_grad_enabled(True)
        pytest.fail("test left grad mode disabled")
    from cgrad import autograd

    if autograd.is_anomaly_enabled():
        autograd.set_detect_anomaly(False)
        pytest.fail("test left anomaly mode on")
    if autograd.is_check_mode_enabled():
        autograd.set_check_mode(False)
        pytest.fail("test left check mode on")


@pytest.fixture
def torch():
    """The torch module, or skip the test when PyTorch is not installed."""
    try:  # ImportError too: a broken torch install should skip, not error
        import torch
    except ImportError as e:
        pytest.skip(f"PyTorch not available: {e}")
    return torch


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def qtbot(qtbot):
    """pytest-qt's qtbot, holding every widget given to addWidget until the
    test's teardown, then deleting the ones it closed from here.

    pytest-qt keeps weak references only: once a test's locals are gone, a
    shown widget lives on through its reference cycles alone, until the
    collector frees it (and sip deletes it), which may be from inside one of
    its own paint handlers while pytest-qt processes events after the test:
    a crash. (Only for tests that take qtbot, which import pytest-qt.)"""
    from PyQt6 import QtCore

    held = []
    add = qtbot.addWidget

    def add_widget(widget, **kwargs):
        held.append(widget)
        add(widget, **kwargs)

    qtbot.addWidget = qtbot.add_widget = add_widget
    yield qtbot
    # pytest-qt closed them and asked for their deletion (deleteLater)
    # before this teardown; it happens now, at a safe point
    QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
    held.clear()
