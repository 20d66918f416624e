"""cgrad.device: where a tensor lives ('cpu', or 'cuda' with index 0)."""


class device:
    """A device spec as in PyTorch: ``device('cuda')``, ``device('cuda:0')``,
    ``device('cpu')``. Compares equal to its string forms, so
    ``t.device == 'cuda'`` works."""

    __slots__ = ("type", "index")

    def __init__(self, type, index=None):
        if isinstance(type, device):
            type, index = type.type, type.index
        spec = str(type)
        kind, sep, idx = spec.partition(":")
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"unknown device type {kind!r}; expected 'cpu' or 'cuda'")
        if sep:
            if index is not None:
                raise ValueError(f"device {spec!r} already has an index; got index={index!r} too")
            if not idx.isdigit():
                raise ValueError(f"invalid device index in {spec!r}")
            index = int(idx)
        if index is not None and (not isinstance(index, int) or index < 0):
            raise ValueError(f"device index must be a non-negative int, got {index!r}")
        if kind == "cuda" and index is None:
            index = 0
        object.__setattr__(self, "type", kind)
        object.__setattr__(self, "index", index)

    def __setattr__(self, name, value):
        raise AttributeError("device is immutable")

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        if self.index is None:
            return f"device(type={self.type!r})"
        return f"device(type={self.type!r}, index={self.index})"

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = device(other)
            except ValueError:
                return False
        if not isinstance(other, device):
            return NotImplemented
        return self.type == other.type and (self.index or 0) == (other.index or 0)

    def __hash__(self):
        return hash((self.type, self.index or 0))
