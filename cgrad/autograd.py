"""cgrad.autograd: the functional gradient API (PyTorch names)."""
from cgrad._core import Function, FunctionCtx, once_differentiable
from cgrad._core import OverrideCtx, override_backward
from cgrad._core import autograd_grad as grad
from cgrad._grad_mode import enable_grad, no_grad, set_grad_enabled
from cgrad._gradcheck import GradcheckError, gradcheck, gradgradcheck
from cgrad._observe import EntryGradient, GradientStats, observe_backward, record_gradient_stats
from cgrad._check_mode import is_check_mode_enabled, set_check_mode
from cgrad._anomaly import anomaly_report, detect_anomaly, is_anomaly_enabled, set_detect_anomaly

__all__ = ["override_backward", "OverrideCtx", "Function", "FunctionCtx", "once_differentiable", "grad", "backward", "no_grad", "enable_grad", "set_grad_enabled", "gradcheck",
           "gradgradcheck", "GradcheckError", "detect_anomaly", "set_detect_anomaly",
           "is_anomaly_enabled", "anomaly_report", "set_check_mode", "is_check_mode_enabled",
           "observe_backward", "record_gradient_stats", "EntryGradient", "GradientStats"]


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False):
    """Accumulate gradients of tensors into the leaves' .grad."""
    from cgrad._core import Tensor

    if isinstance(tensors, Tensor):
        tensors = [tensors]
        grad_tensors = [grad_tensors]
    elif grad_tensors is None:
        grad_tensors = [None] * len(tensors)
    if len(grad_tensors) != len(tensors):
        raise ValueError(f"got {len(grad_tensors)} grad_tensors for {len(tensors)} tensors")
    n = len(tensors)
    for i, (t, g) in enumerate(zip(tensors, grad_tensors)):
        last = i == n - 1
        keep = True if not last else (create_graph if retain_graph is None else retain_graph)
        t.backward(g, retain_graph=keep, create_graph=create_graph)
