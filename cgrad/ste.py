"""Straight-through and surrogate-gradient primitives.

Each op's backward deliberately differs from the derivative of its forward
(round has zero derivative almost everywhere; a quantizer is trained as if it
were the identity). Each declares the smooth *surrogate* whose derivative its
backward implements, and ``cgrad.autograd.gradcheck`` evaluates the
surrogates while taking finite differences, so a correct STE passes the check
and a wrong backward still fails it.

    q = cgrad.ste.quantize(w, bits=4)       # forward: 16 levels in [-1, 1]
    q.sum().backward()                      # backward: 1 inside [-1, 1], 0 outside
"""
import threading

from cgrad.autograd import Function

__all__ = ["round", "sign", "clamp", "quantize", "surrogate_mode", "StraightThrough"]

_state = threading.local()


class surrogate_mode:
    """Used by gradcheck's finite differences. The first forward pass inside
    (the base point x0) records, per straight-through call, hard(x0) and
    surrogate(x0); every later pass (after start_pass()) returns
    hard(x0) + surrogate(x) - surrogate(x0): the hard value where the check
    runs, moving as the surrogate moves. Its derivative is exactly what the
    straight-through backward claims: f'(hard(x0)) * surrogate'(x0)."""

    def __enter__(self):
        self._prev = getattr(_state, "mode", None)
        self.bases = []
        self.recording = True
        self.k = 0
        _state.mode = self
        return self

    def __exit__(self, *exc):
        _state.mode = self._prev
        return False

    def start_pass(self):
        self.recording = False
        self.k = 0

    def value(self, cls, x, params):
        if self.recording:
            h0, s0 = cls.hard(x, *params), cls.surrogate(x, *params)
            self.bases.append((h0, s0))
            return h0
        if self.k >= len(self.bases):
            raise RuntimeError("gradcheck: the function made more straight-through calls than at the base point")
        h0, s0 = self.bases[self.k]
        self.k += 1
        return h0 + (cls.surrogate(x, *params) - s0)


class StraightThrough(Function):
    """Base: subclasses define hard(x, *p), surrogate(x, *p) and
    backward_mask(x, *p) (the surrogate's derivative, None for ones)."""

    deliberate_mismatch = True

    @staticmethod
    def hard(x, *params):
        raise NotImplementedError

    @staticmethod
    def surrogate(x, *params):
        raise NotImplementedError

    @staticmethod
    def backward_mask(x, *params):
        return None

    @classmethod
    def call(cls, x, *params):
        mode = getattr(_state, "mode", None)
        if mode is not None:
            return mode.value(cls, x, params)
        return cls.apply(x, *params)

    @classmethod
    def forward(cls, ctx, x, *params):
        ctx.params = params
        mask = cls.backward_mask(x, *params)
        if mask is not None:
            ctx.save_for_backward(mask)
        ctx.has_mask = mask is not None
        return cls.hard(x, *params)

    @classmethod
    def backward(cls, ctx, g):
        if ctx.has_mask:
            (mask,) = ctx.saved_tensors
            g = g * mask
        return (g,) + (None,) * len(ctx.params)


class _Round(StraightThrough):
    hard = staticmethod(lambda x: x.round())
    surrogate = staticmethod(lambda x: x * 1.0)


class _Sign(StraightThrough):
    # sign forward, hardtanh surrogate: gradient 1 inside [-1, 1]
    hard = staticmethod(lambda x: x.sign())
    surrogate = staticmethod(lambda x: x.clamp(-1.0, 1.0))
    backward_mask = staticmethod(lambda x: ((x >= -1.0) & (x <= 1.0)).to(x.dtype))


class _Clamp(StraightThrough):
    # clamp forward, identity surrogate: the gradient passes everywhere
    hard = staticmethod(lambda x, lo, hi: x.clamp(lo, hi))
    surrogate = staticmethod(lambda x, lo, hi: x * 1.0)


def _quantize_hard(x, bits, lo, hi):
    levels = (1 << bits) - 1
    scale = (hi - lo) / levels
    return ((x.clamp(lo, hi) - lo) / scale).round() * scale + lo


class _Quantize(StraightThrough):
    # uniform quantizer, clamp surrogate: gradient 1 inside [lo, hi]
    hard = staticmethod(_quantize_hard)
    surrogate = staticmethod(lambda x, bits, lo, hi: x.clamp(lo, hi))
    backward_mask = staticmethod(lambda x, bits, lo, hi: ((x >= lo) & (x <= hi)).to(x.dtype))


def round(x):  # noqa: A001
    """round(x) forward (half to even), gradient of ones."""
    return _Round.call(x)


def sign(x):
    """sign(x) forward, gradient 1 where |x| <= 1 (hardtanh surrogate)."""
    return _Sign.call(x)


def clamp(x, min, max):  # noqa: A002
    """clamp forward, gradient passed through unchanged everywhere."""
    if not min < max:
        raise ValueError(f"ste.clamp: min {min} must be below max {max}")
    return _Clamp.call(x, float(min), float(max))


def quantize(x, bits=8, min=-1.0, max=1.0):  # noqa: A002
    """Uniform quantization to 2**bits levels over [min, max]; gradient 1
    inside the range and 0 outside (straight-through with clipping)."""
    if not isinstance(bits, int) or not 1 <= bits <= 24:
        raise ValueError(f"ste.quantize: bits must be an int in [1, 24], got {bits!r}")
    if not min < max:
        raise ValueError(f"ste.quantize: min {min} must be below max {max}")
    return _Quantize.call(x, bits, float(min), float(max))
