"""cgrad.nn.utils: gradient clipping (PyTorch's torch.nn.utils names)."""
from cgrad.nn.utils import clip_grad
from cgrad.nn.utils.clip_grad import (
    ClipResult, adaptive_clip_grad_, clip_grad_agc_, clip_grad_norm_, clip_grad_value_,
    clip_grads_with_norm_, get_total_norm, last_clip_result,
)

__all__ = ["clip_grad", "ClipResult", "adaptive_clip_grad_", "clip_grad_agc_",
           "clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm",
           "last_clip_result"]
