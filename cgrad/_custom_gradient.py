"""@cgrad.custom_gradient: TensorFlow's form of a custom gradient.

    @cgrad.custom_gradient
    def leaky(x, slope=0.2):
        y = cgrad.where(x > 0, x, x * slope)
        def grad_fn(dy):
            return cgrad.where(x > 0, dy, dy * slope), None
        return y, grad_fn

grad_fn receives one gradient per output and returns one gradient (or None)
per argument of the call: positional arguments first, then keyword
arguments in the order they were passed (trailing Nones for arguments left
at their defaults are ignored). Unlike TensorFlow, keyword tensor
arguments get their gradients too. With ``custom_gradient(variables=[w])``
grad_fn is called as ``grad_fn(*dys, variables=[w])`` and returns
``(argument_grads, variable_grads)``; the variables' gradients flow into them
as if the function had taken them as inputs.

The forward runs without recording (like Function.forward); grad_fn runs
inside the backward, recorded when create_graph=True."""
import functools

from cgrad._core import Tensor
from cgrad.autograd import Function

__all__ = ["custom_gradient"]


def _as_tuple(x):
    if x is None:
        return (None,)
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


class _CustomGradient(Function):
    @staticmethod
    def forward(ctx, spec, *values):
        fn, n_args, kw_names, variables = spec
        args = values[:n_args]
        kwargs = dict(zip(kw_names, values[n_args:n_args + len(kw_names)]))
        result = fn(*args, **kwargs)
        if not (isinstance(result, tuple) and len(result) == 2 and callable(result[1])):
            raise TypeError(f"custom_gradient function {fn.__name__} must return (output, grad_fn)")
        out, grad_fn = result
        ctx.grad_fn = grad_fn
        ctx.spec = spec
        return out

    @staticmethod
    def backward(ctx, *grad_outputs):
        fn, n_args, kw_names, variables = ctx.spec
        n_expected = n_args + len(kw_names)
        if variables:
            result = ctx.grad_fn(*grad_outputs, variables=list(variables))
            if not (isinstance(result, (tuple, list)) and len(result) == 2):
                raise TypeError(f"{fn.__name__}'s grad_fn was given variables and must return "
                                "(argument_grads, variable_grads)")
            arg_grads, var_grads = _as_tuple(result[0]), _as_tuple(result[1])
            if len(var_grads) != len(variables):
                raise ValueError(f"{fn.__name__}'s grad_fn returned {len(var_grads)} variable gradients "
                                 f"for {len(variables)} variables")
        else:
            arg_grads, var_grads = _as_tuple(ctx.grad_fn(*grad_outputs)), ()
        if len(arg_grads) > n_expected and all(g is None for g in arg_grads[n_expected:]):
            arg_grads = arg_grads[:n_expected]  # Nones for defaults not passed: fine
        if len(arg_grads) != n_expected:
            names = [f"arg {i}" for i in range(n_args)] + list(kw_names)
            raise ValueError(f"{fn.__name__}'s grad_fn returned {len(arg_grads)} gradients for "
                             f"{n_expected} arguments ({', '.join(names)})")
        return (None,) + tuple(arg_grads) + tuple(var_grads)


def custom_gradient(f=None, *, variables=None):
    """Decorator (see the module docstring). Usable bare or as
    ``custom_gradient(variables=[...])``."""
    if f is None:
        return lambda fn: custom_gradient(fn, variables=variables)
    variables = tuple(variables or ())
    for i, v in enumerate(variables):
        if not isinstance(v, Tensor):
            raise TypeError(f"custom_gradient: variables[{i}] is {type(v).__name__}, not a Tensor")

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        spec = (f, len(args), tuple(kwargs), variables)
        return _CustomGradient.apply(spec, *args, *kwargs.values(), *variables)

    return wrapper
