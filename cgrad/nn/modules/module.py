"""nn.Module: the base class of every layer (PyTorch's semantics and names)."""
import contextlib
import warnings
from collections import OrderedDict, namedtuple

from cgrad import _core
from cgrad._core import Tensor
from cgrad._grad_mode import no_grad
from cgrad.nn.parameter import Parameter
from cgrad._devices import device as _device
from cgrad.nn.modules._hooks import BackwardHook, RemovableHandle
from cgrad.nn.modules._utils import factory_device

__all__ = ["Module"]


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


def _addindent(s, num_spaces):
    lines = s.split("\n")
    if len(lines) == 1:
        return s
    first = lines.pop(0)
    return first + "\n" + "\n".join(" " * num_spaces + line for line in lines)


def _check_name(kind, name):
    if not isinstance(name, str):
        raise TypeError(f"{kind} name should be a string. Got {type(name).__name__}")
    if name == "":
        raise KeyError(f'{kind} name can\'t be empty string ""')
    if "." in name:
        raise KeyError(f'{kind} name can\'t contain ".", got: {name}')


def _parse_to(args, kwargs):
    """(dtype, device) from Module.to's arguments: to(dtype), to(device),
    to(device, dtype), to(tensor), or keywords. device comes back as a
    normalised spec string ('cpu' or 'cuda:0') or None."""
    dtype = kwargs.pop("dtype", None)
    device = kwargs.pop("device", None)
    kwargs.pop("non_blocking", None)
    kwargs.pop("memory_format", None)
    if kwargs:
        raise TypeError(f"to() got unexpected keyword arguments {sorted(kwargs)}")
    if len(args) > 2:
        raise TypeError(f"to() takes at most 2 positional arguments (device, dtype), got {len(args)}")
    for a in args:
        if isinstance(a, _core.dtype):
            dtype = a
        elif isinstance(a, Tensor):
            dtype, device = a.dtype, a.device
        elif isinstance(a, (str, _device)) or (isinstance(a, int) and not isinstance(a, bool)):
            device = a
        else:
            raise TypeError(f"to() expects a dtype, a device (str, int or cgrad.device) or a Tensor, "
                            f"got {a!r}")
    if dtype is not None:
        if not isinstance(dtype, _core.dtype):
            raise TypeError(f"to(): dtype must be a cgrad dtype, got {dtype!r}")
        if dtype not in (_core.float32, _core.float64, _core.float16):
            raise TypeError(f"nn.Module.to only accepts floating point dtypes, but got desired dtype={dtype}")
    if device is not None:
        device = factory_device("to()", device)
    return dtype, device


class Module:
    """Base class for all neural-network modules. Assigning a Parameter, a
    Module or (through register_buffer) a Tensor to an attribute registers
    it, so parameters(), state_dict(), to() and train() reach it."""

    training: bool
    _version = 1

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise TypeError(f"{type(self).__name__}.__init__() got unexpected arguments "
                            f"{args!r} {kwargs!r}")
        sa = object.__setattr__
        sa(self, "training", True)
        sa(self, "_parameters", OrderedDict())
        sa(self, "_buffers", OrderedDict())
        sa(self, "_non_persistent_buffers_set", set())
        sa(self, "_modules", OrderedDict())
        sa(self, "_forward_pre_hooks", OrderedDict())
        sa(self, "_forward_pre_hooks_with_kwargs", OrderedDict())
        sa(self, "_forward_hooks", OrderedDict())
        sa(self, "_forward_hooks_with_kwargs", OrderedDict())
        sa(self, "_forward_hooks_always_called", OrderedDict())
        sa(self, "_backward_hooks", OrderedDict())
        sa(self, "_backward_pre_hooks", OrderedDict())
        sa(self, "_backward_overrides", OrderedDict())

    # ------------------------------------------------------------ forward
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args, **kwargs):
        if not (self._forward_pre_hooks or self._forward_hooks or self._backward_hooks
                or self._backward_pre_hooks or self._backward_overrides):
            return self.forward(*args, **kwargs)
        for hid, hook in list(self._forward_pre_hooks.items()):
            if hid in self._forward_pre_hooks_with_kwargs:
                res = hook(self, args, kwargs)
                if res is not None:
                    if not (isinstance(res, tuple) and len(res) == 2):
                        raise RuntimeError(f"forward pre-hook must return None or a tuple of "
                                           f"(new_args, new_kwargs), but got {res!r}.")
                    args, kwargs = res
            else:
                res = hook(self, args)
                if res is not None:
                    args = res if isinstance(res, tuple) else (res,)
        bw_hook = None
        if self._backward_hooks or self._backward_pre_hooks:
            bw_hook = BackwardHook(self, list(self._backward_hooks.values()),
                                   list(self._backward_pre_hooks.values()))
            args = bw_hook.setup_input_hook(args)
        try:
            result = self._forward_in_scope(args, kwargs)
        except Exception:
            # always_call hooks still run (with output None), then the error propagates
            for hid, hook in list(self._forward_hooks.items()):
                if hid in self._forward_hooks_always_called:
                    try:
                        if hid in self._forward_hooks_with_kwargs:
                            hook(self, args, kwargs, None)
                        else:
                            hook(self, args, None)
                    except Exception as e:  # noqa: BLE001 - the forward's error wins
                        warnings.warn(f"forward hook with always_call=True raised an exception that was "
                                      f"ignored: {e!r}")
            raise
        for hid, hook in list(self._forward_hooks.items()):
            if hid in self._forward_hooks_with_kwargs:
                res = hook(self, args, kwargs, result)
            else:
                res = hook(self, args, result)
            if res is not None:
                result = res
        if bw_hook is not None:
            result = bw_hook.setup_output_hook(result)
        return result

    def _forward_in_scope(self, args, kwargs):
        """forward, inside this module's backward overrides."""
        if not self._backward_overrides:
            return self.forward(*args, **kwargs)
        with contextlib.ExitStack() as stack:
            for op, fn in list(self._backward_overrides.values()):
                stack.enter_context(_core.override_backward(op, fn))
            return self.forward(*args, **kwargs)

    # ------------------------------------------------------------ hooks
    @staticmethod
    def _add_hook(hooks, hook, prepend, *flag_dicts):
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        handle = RemovableHandle(hooks, *flag_dicts)
        hooks[handle.id] = hook
        for d in flag_dicts:
            d[handle.id] = True
        if prepend:
            hooks.move_to_end(handle.id, last=False)
        return handle

    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """hook(module, args) -> None or new args (a single value is wrapped
        in a tuple); with_kwargs: hook(module, args, kwargs) -> None or
        (args, kwargs). Runs before forward."""
        flags = (self._forward_pre_hooks_with_kwargs,) if with_kwargs else ()
        handle = self._add_hook(self._forward_pre_hooks, hook, prepend, *flags)
        handle.hooks_dicts = (self._forward_pre_hooks, self._forward_pre_hooks_with_kwargs)
        return handle

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False, always_call=False):
        """hook(module, args, output) -> None or a replacement output;
        with_kwargs: hook(module, args, kwargs, output). Runs after forward;
        with always_call also when forward raised (output None)."""
        flags = ((self._forward_hooks_with_kwargs,) if with_kwargs else ()) + \
            ((self._forward_hooks_always_called,) if always_call else ())
        handle = self._add_hook(self._forward_hooks, hook, prepend, *flags)
        handle.hooks_dicts = (self._forward_hooks, self._forward_hooks_with_kwargs,
                              self._forward_hooks_always_called)
        return handle

    def register_full_backward_hook(self, hook, prepend=False):
        """hook(module, grad_input, grad_output) -> None or a replacement
        grad_input, called when the gradients w.r.t. the module's tensor
        inputs are known. grad_input/grad_output are tuples with one entry
        per positional argument/output: None for non-tensors and outputs
        that got no gradient, zeros for tensor inputs that need none (as
        PyTorch)."""
        return self._add_hook(self._backward_hooks, hook, prepend)

    def register_full_backward_pre_hook(self, hook, prepend=False):
        """hook(module, grad_output) -> None or a replacement grad_output,
        called when the gradients w.r.t. the module's outputs are known."""
        return self._add_hook(self._backward_pre_hooks, hook, prepend)

    def register_backward_hook(self, hook):
        raise NotImplementedError("register_backward_hook (the deprecated non-full hook) is not "
                                  "supported: use register_full_backward_hook")

    def override_backward(self, op_name, fn):
        """Makes cgrad.autograd.override_backward(op_name, fn) active while
        this module's forward runs (child modules included): ops named
        op_name recorded there get fn as their derivative. Returns a handle;
        remove() ends it (graphs already recorded keep the override)."""
        _core.override_backward(op_name, fn)  # validates op_name and fn now
        handle = RemovableHandle(self._backward_overrides)
        self._backward_overrides[handle.id] = (op_name, fn)
        return handle

    # ------------------------------------------------------------ registration
    def register_buffer(self, name, tensor, persistent=True):
        """A tensor that is state but not a parameter (running statistics):
        saved in state_dict when persistent, converted by to()."""
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        _check_name("buffer", name)
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"attribute '{name}' already exists")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' "
                            f"(cgrad Tensor or None required)")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def register_parameter(self, name, param):
        """Adds a Parameter (or None) under name."""
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign parameter before Module.__init__() call")
        _check_name("parameter", name)
        if hasattr(self, name) and name not in self._parameters:
            raise KeyError(f"attribute '{name}' already exists")
        if param is None:
            self._parameters[name] = None
            return
        if not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter '{name}' "
                            f"(cgrad.nn.Parameter or None required)")
        if param.grad_fn is not None:
            raise ValueError(f"Cannot assign non-leaf Tensor to parameter '{name}'. Model parameters "
                             f"must be created explicitly. To express '{name}' as a function of "
                             f"another Tensor, compute the value in the forward() method.")
        self._parameters[name] = param

    def add_module(self, name, module):
        """Adds a child module (or None) under name."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        if "_modules" not in self.__dict__:
            raise AttributeError("cannot assign module before Module.__init__() call")
        _check_name("module", name)
        if hasattr(self, name) and name not in self._modules:
            raise KeyError(f"attribute '{name}' already exists")
        self._modules[name] = module

    register_module = add_module

    def get_submodule(self, target):
        """The submodule at the dotted path target ('' is self)."""
        if target == "":
            return self
        mod = self
        for item in target.split("."):
            if not hasattr(mod, item):
                raise AttributeError(f"{mod._get_name()} has no attribute `{item}`")
            mod = getattr(mod, item)
            if not isinstance(mod, Module):
                raise AttributeError(f"`{item}` is not an nn.Module")
        return mod

    def get_parameter(self, target):
        mod_path, _, name = target.rpartition(".")
        mod = self.get_submodule(mod_path)
        if name not in mod._parameters:
            raise AttributeError(f"{mod._get_name()} has no parameter `{name}`")
        return mod._parameters[name]

    def get_buffer(self, target):
        mod_path, _, name = target.rpartition(".")
        mod = self.get_submodule(mod_path)
        if name not in mod._buffers:
            raise AttributeError(f"{mod._get_name()} has no buffer `{name}`")
        return mod._buffers[name]

    # ------------------------------------------------------------ attributes
    def __getattr__(self, name):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __setattr__(self, name, value):
        def remove_from(*stores):
            for s in stores:
                if name in s:
                    if isinstance(s, dict):
                        del s[name]
                    else:
                        s.discard(name)

        d = self.__dict__
        params = d.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            remove_from(d, self._buffers, self._modules, self._non_persistent_buffers_set)
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                                f"(cgrad.nn.Parameter or None expected)")
            self.register_parameter(name, value)
        else:
            modules = d.get("_modules")
            if isinstance(value, Module):
                if modules is None:
                    raise AttributeError("cannot assign module before Module.__init__() call")
                remove_from(d, self._parameters, self._buffers, self._non_persistent_buffers_set)
                modules[name] = value
            elif modules is not None and name in modules:
                if value is not None:
                    raise TypeError(f"cannot assign '{type(value).__name__}' as child module '{name}' "
                                    f"(cgrad.nn.Module or None expected)")
                modules[name] = value
            else:
                buffers = d.get("_buffers")
                if buffers is not None and name in buffers:
                    if value is not None and not isinstance(value, Tensor):
                        raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                                        f"(cgrad.Tensor or None expected)")
                    buffers[name] = value
                else:
                    object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                self._non_persistent_buffers_set.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        keys = list(super().__dir__()) + list(self._parameters) + list(self._modules) + list(self._buffers)
        return sorted(k for k in set(keys) if not k[0].isdigit())

    # ------------------------------------------------------------ iteration
    def _named_members(self, get_members, prefix="", recurse=True, remove_duplicate=True):
        memo = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse \
            else [(prefix, self)]
        for module_prefix, module in modules:
            for k, v in get_members(module):
                if v is None or (remove_duplicate and id(v) in memo):
                    continue
                if remove_duplicate:
                    memo.add(id(v))
                yield (module_prefix + ("." if module_prefix else "") + k, v)

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(dotted name, Parameter) pairs; a parameter shared by two modules
        is listed once (unless remove_duplicate=False)."""
        yield from self._named_members(lambda m: m._parameters.items(), prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        yield from self._named_members(lambda m: m._buffers.items(), prefix, recurse, remove_duplicate)

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_children(self):
        memo = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in memo:
                memo.add(id(m))
                yield name, m

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """(dotted name, module) for self and every descendant, depth first."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is None:
                continue
            sub = prefix + ("." if prefix else "") + name
            yield from m.named_modules(memo, sub, remove_duplicate)

    # ------------------------------------------------------------ modes
    def train(self, mode=True):
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be boolean, got {mode!r}")
        self.training = mode
        for m in self.children():
            m.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Drops (or zeroes in place) every parameter's .grad."""
        for p in self.parameters():
            g = p.grad
            if g is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                if g.requires_grad:
                    g = g.detach()
                    p.grad = g
                with no_grad():
                    g.zero_()

    def apply(self, fn):
        """fn(module) on every submodule (children first) and then self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------ dtype and device
    def _apply(self, fn):
        """Replaces every parameter's data, its gradient and every buffer by
        fn of it. Parameters keep their identity (the .data setter), so
        optimizers and hooks that hold them see the new data; a gradient is
        converted with its parameter (PyTorch's Module._apply)."""
        for m in self.children():
            m._apply(fn)
        with no_grad():
            for name, p in self._parameters.items():
                if p is None:
                    continue
                g = p.grad
                new = fn(p.data)
                new_g = None if g is None else fn(g)
                if new is not p.data:
                    p.data = new  # drops a gradient that no longer fits (device, dtype)
                if new_g is not None and (p.grad is None or new_g is not g):
                    p.grad = new_g
            for k, b in self._buffers.items():
                if b is not None:
                    self._buffers[k] = fn(b)
        return self

    def to(self, *args, **kwargs):
        """to(device), to(dtype), to(device, dtype), to(tensor) or keywords
        device=/dtype=: moves every parameter and buffer to device and casts
        the floating ones to dtype, in place. Parameter objects (and so an
        optimizer's references) stay the same; their gradients move and are
        cast with them (row-sparse ones and row-sparse buffers included).
        Returns self."""
        dtype, device = _parse_to(args, dict(kwargs))
        if dtype is None and device is None:
            return self

        def convert(t):
            if device is not None and t.device != device:
                t = t.to(device)
            if dtype is not None and t.is_floating_point() and t.dtype != dtype:
                t = t.to(dtype)
            return t

        return self._apply(convert)

    def double(self):
        return self.to(_core.float64)

    def float(self):
        return self.to(_core.float32)

    def half(self):
        """float16 parameters and floating buffers (they compute on 'cuda';
        pair with cgrad.amp.MasterWeights and GradScaler to train)."""
        return self.to(_core.float16)

    def type(self, dst_type):
        return self.to(dst_type)

    def cpu(self):
        """Moves every parameter and buffer to the cpu (in place; returns self)."""
        return self.to("cpu")

    def cuda(self, device=None):
        """Moves every parameter and buffer to 'cuda' (in place; returns
        self). device: None, an index (0) or a 'cuda' spec."""
        if device is None:
            return self.to("cuda")
        if isinstance(device, int) and not isinstance(device, bool):
            return self.to(device)
        if _device(device).type != "cuda":
            raise ValueError(f"cuda(): device must be a 'cuda' device or an index, got {device!r}")
        return self.to(device)

    # ------------------------------------------------------------ state dict
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = b if keep_vars else b.detach()

    def state_dict(self, *args, destination=None, prefix="", keep_vars=False):
        """An OrderedDict name -> tensor (detached unless keep_vars) of every
        parameter and persistent buffer, with PyTorch's dotted key names."""
        if args:  # PyTorch's deprecated positional form (destination, prefix, keep_vars)
            destination = args[0]
            if len(args) > 1:
                prefix = args[1]
            if len(args) > 2:
                keep_vars = args[2]
        if destination is None:
            destination = OrderedDict()
        self._save_to_state_dict(destination, prefix, keep_vars)
        for name, m in self._modules.items():
            if m is not None:
                m.state_dict(destination=destination, prefix=prefix + name + ".", keep_vars=keep_vars)
        return destination

    def _load_from_state_dict(self, state_dict, prefix, missing_keys, error_msgs):
        local = [(k, v) for k, v in self._parameters.items() if v is not None]
        local += [(k, v) for k, v in self._buffers.items()
                  if v is not None and k not in self._non_persistent_buffers_set]
        for name, param in local:
            key = prefix + name
            if key not in state_dict:
                missing_keys.append(key)
                continue
            value = state_dict[key]
            if not isinstance(value, Tensor):
                error_msgs.append(f'While copying the parameter named "{key}", expected cgrad.Tensor '
                                  f'from checkpoint but received {type(value).__name__}')
                continue
            if tuple(value.shape) != tuple(param.shape):
                error_msgs.append(f"size mismatch for {key}: copying a param with shape "
                                  f"{tuple(value.shape)} from checkpoint, the shape in current model "
                                  f"is {tuple(param.shape)}.")
                continue
            try:
                with no_grad():
                    if value.dtype != param.dtype:
                        value = value.to(param.dtype)
                    param.copy_(value)
            except Exception as e:  # noqa: BLE001 - reported with the key, as PyTorch does
                error_msgs.append(f'While copying the parameter named "{key}", whose dimensions in the '
                                  f'model are {tuple(param.shape)} and whose dimensions in the checkpoint '
                                  f'are {tuple(value.shape)}, an exception occurred : {e}.')

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Copies state_dict's tensors into the parameters and buffers in
        place. Returns (missing_keys, unexpected_keys); with strict, either
        list being non-empty raises RuntimeError. A shape mismatch always
        raises, naming the key and both shapes."""
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict).__name__}.")
        if assign:
            raise NotImplementedError("load_state_dict(assign=True) is not supported")
        missing, error_msgs = [], []
        expected = set()

        def load(module, prefix):
            module._load_from_state_dict(state_dict, prefix, missing, error_msgs)
            for k, v in module._parameters.items():
                if v is not None:
                    expected.add(prefix + k)
            for k, v in module._buffers.items():
                if v is not None and k not in module._non_persistent_buffers_set:
                    expected.add(prefix + k)
            for name, child in module._modules.items():
                if child is not None:
                    load(child, prefix + name + ".")

        load(self, "")
        unexpected = [k for k in state_dict.keys() if k not in expected]
        if strict:
            if unexpected:
                error_msgs.insert(0, "Unexpected key(s) in state_dict: {}. ".format(
                    ", ".join(f'"{k}"' for k in unexpected)))
            if missing:
                error_msgs.insert(0, "Missing key(s) in state_dict: {}. ".format(
                    ", ".join(f'"{k}"' for k in missing)))
        if error_msgs:
            raise RuntimeError("Error(s) in loading state_dict for {}:\n\t{}".format(
                type(self).__name__, "\n\t".join(error_msgs)))
        return _IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------ repr
    def _get_name(self):
        return type(self).__name__

    def extra_repr(self):
        """One line (or several) shown inside this module's repr."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({k}): " + _addindent(repr(m), 2) for k, m in self._modules.items()]
        lines = extra_lines + child_lines
        s = self._get_name() + "("
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                s += extra_lines[0]
            else:
                s += "\n  " + "\n  ".join(lines) + "\n"
        return s + ")"


