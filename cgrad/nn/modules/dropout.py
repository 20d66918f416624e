"""Dropout."""
from cgrad.nn import functional as F
from cgrad.nn.modules._utils import check_input
from cgrad.nn.modules.module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """Zeroes each element with probability p in training mode and scales
    the rest by 1 / (1 - p); the identity in eval mode."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, input):
        return F.dropout(check_input("Dropout", input), self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"
