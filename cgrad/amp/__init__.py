"""cgrad.amp: loss scaling for mixed precision (float32 now)."""
from cgrad.amp.grad_scaler import GradScaler

__all__ = ["GradScaler"]
