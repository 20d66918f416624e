"""cgrad.optim: optimizers with fused C updates, PyTorch's API and numerics.

The built-ins accept PyTorch's foreach= and fused= keywords (kept in the
param groups) and ignore them: every step is one fused C loop per
parameter either way."""
from cgrad.optim.optimizer import Optimizer, required
from cgrad.optim.report import StepReport, TensorStats, tensor_stats
from cgrad.optim.sgd import SGD
from cgrad.optim.adam import Adam
from cgrad.optim.adamw import AdamW
from cgrad.optim.rmsprop import RMSprop
from cgrad.optim.adagrad import Adagrad
from cgrad.optim.sparse_adam import SparseAdam
from cgrad.optim import lr_scheduler
from cgrad.optim.precision import PrecisionSchedule, PrecisionEvent
from cgrad.optim.guard import UpdateGuard, GuardDecision

__all__ = ["Optimizer", "required", "StepReport", "TensorStats", "tensor_stats", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "SparseAdam", "lr_scheduler", "PrecisionSchedule", "PrecisionEvent", "UpdateGuard", "GuardDecision"]
