"""cgrad.amp: mixed precision: dynamic loss scaling (GradScaler) and
float32 master weights for float16 models (MasterWeights)."""
from cgrad.amp.grad_scaler import GradScaler
from cgrad.amp.master import MasterWeights

__all__ = ["GradScaler", "MasterWeights"]
