"""Fields of a result whose values may still be on a device.

clip_grad_norm_ on a device leaves its norm and coefficient there, and
clip_grad_value_ / clip_grad_agc_ their counts (a copy back would make the
host wait for the GPU every step, which PyTorch does not). The ClipResult
a clip records, and the StepReport that picks it up, hold PENDING in
those fields until one is read: the first read resolves them
all (one copy back) through the owner's _resolve(), which sets every
pending field before it forgets its source, so a concurrent reader sees
either PENDING (and resolves too: same values) or the value.
"""

PENDING = type("Pending", (), {"__repr__": lambda self: "<pending on the device>"})()


class Resolved:
    """A dataclass field (``clipped: bool = Resolved(False)``) read through
    the owner's _resolve() while it holds PENDING. Without a default the
    field has none (the dataclass then requires it)."""

    _NO_DEFAULT = object()

    def __init__(self, default=_NO_DEFAULT):
        self.default = default

    def __set_name__(self, owner, name):
        self.slot = "_v_" + name

    def __get__(self, obj, objtype=None):
        if obj is None:  # the dataclass asks for the default
            if self.default is Resolved._NO_DEFAULT:
                raise AttributeError(self.slot[3:])
            return self.default
        v = obj.__dict__[self.slot]
        if v is PENDING:
            obj._resolve()
            v = obj.__dict__[self.slot]
        return v

    def __set__(self, obj, value):
        obj.__dict__[self.slot] = value
