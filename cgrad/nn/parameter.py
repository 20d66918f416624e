"""nn.Parameter: a Tensor that a Module registers as one of its parameters."""
from cgrad import _core
from cgrad._core import Tensor

__all__ = ["Parameter"]


def _rebuild_parameter(data, requires_grad):
    return Parameter(data, requires_grad)


class Parameter(Tensor):
    """Parameter(data=None, requires_grad=True): a leaf sharing data's
    storage; assigning one to a Module attribute registers it. Hashes by
    identity, so parameters work as dict keys (optimizer state)."""

    def __new__(cls, data=None, requires_grad=True):
        if data is None:
            data = _core.empty(0)
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter: data must be a cgrad.Tensor, got {type(data).__name__}")
        if requires_grad and not data.is_floating_point():
            raise TypeError(f"Parameter: only floating tensors can require gradients, got dtype {data.dtype}")
        return Tensor._make_subclass(cls, data, requires_grad)

    def __init__(self, data=None, requires_grad=True):
        pass  # everything happened in __new__ (Tensor.__init__ refuses to run)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    __hash__ = Tensor.__hash__

    def __reduce_ex__(self, protocol):
        return (_rebuild_parameter, (self.detach().clone(), self.requires_grad))

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        result = Parameter(self.detach().clone(), self.requires_grad)
        if self.grad is not None:
            result.grad = self.grad.clone()
        memo[id(self)] = result
        return result
