"""cgrad.optim (placeholder from the sched branch: only the LR schedulers; the lead merges it away)."""
from cgrad.optim import lr_scheduler
