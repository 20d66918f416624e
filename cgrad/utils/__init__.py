"""cgrad.utils: training utilities outside the tensor core (torch.utils names)."""
from cgrad.utils import data

__all__ = ["data"]
