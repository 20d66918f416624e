"""Hook handles and the full backward hook of nn.Module.

A full backward hook sees the gradients w.r.t. a module's tensor inputs and
outputs. As PyTorch's BackwardHook does, the module's tensor inputs and its
tensor outputs are each passed through an identity Function: the output one
runs first in backward and stashes grad_output; the input one then has
grad_input, calls the user hooks and hands their replacement on."""
import itertools

from cgrad._core import Function, Tensor, is_grad_enabled

__all__ = ["RemovableHandle", "BackwardHook"]

_ids = itertools.count()


class RemovableHandle:
    """remove() unregisters the hook from every dict it was put in; also a
    context manager that removes it on exit."""

    def __init__(self, *hooks_dicts):
        self.hooks_dicts = hooks_dicts
        self.id = next(_ids)

    def remove(self):
        for d in self.hooks_dicts:
            d.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


class _InputHookFn(Function):
    # grad_input materialized, grad_output not: an input that needs no grad
    # (or got none) is seen as zeros, an unused output as None (PyTorch)
    @staticmethod
    def forward(ctx, state, *tensors):
        ctx.state = state
        ctx.mark_non_differentiable(*[t for t in tensors if not t.requires_grad])
        return tensors

    @staticmethod
    def backward(ctx, *grad_inputs):
        grads = ctx.state.run_user_hooks(grad_inputs)
        needs = ctx.needs_input_grad[1:]
        return (None,) + tuple(g if n else None for g, n in zip(grads, needs))


class _OutputHookFn(Function):
    @staticmethod
    def forward(ctx, state, *tensors):
        ctx.state = state
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(*[t for t in tensors if not t.requires_grad])
        return tensors

    @staticmethod
    def backward(ctx, *grad_outputs):
        grads = ctx.state.got_grad_outputs(grad_outputs)
        needs = ctx.needs_input_grad[1:]
        return (None,) + tuple(g if n else None for g, n in zip(grads, needs))


def _pack_with_none(indices, values, size):
    res = [None] * size
    for i, v in zip(indices, values):
        res[i] = v
    return tuple(res)


class BackwardHook:
    """One forward call's state: which positions of args/outputs are
    tensors, and the grad_output stashed until grad_input is known."""

    def __init__(self, module, user_hooks, user_pre_hooks):
        self.module = module
        self.user_hooks = user_hooks
        self.user_pre_hooks = user_pre_hooks
        self.grad_outputs = None
        self.n_inputs = 0
        self.input_tensors_index = None
        self.n_outputs = 0
        self.output_tensors_index = None

    @staticmethod
    def _apply_on_tensors(fn_cls, state, args):
        idx = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        tensors = [args[i] for i in idx]
        if not (is_grad_enabled() and any(t.requires_grad for t in tensors)):
            return args, None
        new = fn_cls.apply(state, *tensors)
        out = list(args)
        for i, t in zip(idx, new):
            out[i] = t
        return tuple(out), idx

    def setup_input_hook(self, args):
        res, idx = self._apply_on_tensors(_InputHookFn, self, args)
        self.n_inputs = len(args)
        self.input_tensors_index = idx
        return res

    def setup_output_hook(self, result):
        is_tuple = isinstance(result, tuple)
        outs = result if is_tuple else (result,)
        res, idx = self._apply_on_tensors(_OutputHookFn, self, outs)
        self.n_outputs = len(outs)
        self.output_tensors_index = idx
        return res if is_tuple else res[0]

    def got_grad_outputs(self, grads):
        """Output side of backward: run pre-hooks, stash grad_output, and
        call the hooks here when no input requires grad."""
        self.grad_outputs = _pack_with_none(self.output_tensors_index, grads, self.n_outputs)
        for hook in list(self.user_pre_hooks):
            res = hook(self.module, self.grad_outputs)
            if res is None:
                continue
            if not isinstance(res, tuple):
                res = (res,)
            if len(res) != len(self.grad_outputs):
                raise RuntimeError(f"Backward pre hook returned an invalid number of grad_output, "
                                   f"got {len(res)}, but expected {len(self.grad_outputs)}")
            self.grad_outputs = res
        if self.input_tensors_index is None:
            grad_inputs = (None,) * self.n_inputs
            for hook in list(self.user_hooks):
                res = hook(self.module, grad_inputs, self.grad_outputs)
                if res is not None and not (isinstance(res, tuple) and all(r is None for r in res)):
                    raise RuntimeError("Backward hook for Modules where no input requires gradient "
                                       "should always return None or None for all gradients.")
            self.grad_outputs = None
            return grads
        return tuple(self.grad_outputs[i] for i in self.output_tensors_index)

    def run_user_hooks(self, grads):
        """Input side of backward: the hooks see (grad_input, grad_output)
        and may return a replacement grad_input."""
        if self.grad_outputs is None:
            # the gradient reached the inputs without passing the outputs
            # (e.g. a double backward): nothing to report
            return grads
        res = _pack_with_none(self.input_tensors_index, grads, self.n_inputs)
        for hook in list(self.user_hooks):
            out = hook(self.module, res, self.grad_outputs)
            if out is None:
                continue
            if not isinstance(out, tuple):
                out = (out,)
            if len(out) != len(res):
                raise RuntimeError(f"Backward hook returned an invalid number of grad_input, "
                                   f"got {len(out)}, but expected {len(res)}")
            for i, g in enumerate(out):
                if g is not None and not isinstance(g, Tensor):
                    raise TypeError(f"Backward hook returned {type(g).__name__} for grad_input[{i}]; "
                                    f"expected a Tensor or None")
            res = out
        self.grad_outputs = None
        return tuple(res[i] for i in self.input_tensors_index)
