"""cgrad.nn: neural-network building blocks (functional ops for now)."""
from cgrad.nn import functional

__all__ = ["functional"]
