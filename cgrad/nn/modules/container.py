"""Sequential, ModuleList, ModuleDict."""
import operator
from collections import OrderedDict

from cgrad.nn.modules.module import Module, _addindent

__all__ = ["Sequential", "ModuleList", "ModuleDict"]


def _check_module(container, where, m):
    if not isinstance(m, Module):
        raise TypeError(f"{container}: {where} must be a Module, got {type(m).__name__} ({m!r})")
    return m


def _norm_index(container, idx, n):
    try:
        idx = operator.index(idx)
    except TypeError:
        raise TypeError(f"{container} indices must be integers or slices, not {type(idx).__name__}") from None
    if not -n <= idx < n:
        raise IndexError(f"index {idx} is out of range for {container} of length {n}")
    return idx % n


class Sequential(Module):
    """Sequential(*modules) or Sequential(OrderedDict(name=module)): calls
    the modules in order, each on the previous one's output."""

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for key, m in args[0].items():
                self.add_module(key, _check_module("Sequential", f"entry {key!r}", m))
        else:
            for i, m in enumerate(args):
                self.add_module(str(i), _check_module("Sequential", f"argument {i}", m))

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return self.__class__(OrderedDict(list(self._modules.items())[idx]))
        keys = list(self._modules)
        return self._modules[keys[_norm_index("Sequential", idx, len(keys))]]

    def __setitem__(self, idx, module):
        keys = list(self._modules)
        key = keys[_norm_index("Sequential", idx, len(keys))]
        setattr(self, key, _check_module("Sequential", f"item {idx}", module))

    def __delitem__(self, idx):
        keys = list(self._modules)
        if isinstance(idx, slice):
            for key in keys[idx]:
                delattr(self, key)
        else:
            delattr(self, keys[_norm_index("Sequential", idx, len(keys))])
        # PyTorch renumbers so that indexing stays contiguous
        items = list(self._modules.items())
        self._modules.clear()
        for i, (_, m) in enumerate(items):
            self._modules[str(i)] = m

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __add__(self, other):
        if not isinstance(other, Sequential):
            raise TypeError(f"add operator supports only Sequential, got {type(other).__name__}")
        ret = Sequential()
        for m in self:
            ret.append(m)
        for m in other:
            ret.append(m)
        return ret

    def append(self, module):
        self.add_module(str(len(self)), _check_module("Sequential.append", "module", module))
        return self

    def extend(self, sequential):
        for m in sequential:
            self.append(m)
        return self

    def insert(self, index, module):
        _check_module("Sequential.insert", "module", module)
        n = len(self._modules)
        if not -n <= index <= n:
            raise IndexError(f"Index out of range: {index} for Sequential of length {n}")
        if index < 0:
            index += n
        mods = list(self._modules.values())
        mods.insert(index, module)
        self._modules.clear()
        for i, m in enumerate(mods):
            self._modules[str(i)] = m
        return self

    def pop(self, key):
        v = self[key]
        del self[key]
        return v

    def forward(self, input):
        for m in self:
            input = m(input)
        return input


class ModuleList(Module):
    """A list of modules whose parameters the owner sees; no forward."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return self.__class__(list(self._modules.values())[idx])
        return self._modules[str(_norm_index("ModuleList", idx, len(self)))]

    def __setitem__(self, idx, module):
        idx = _norm_index("ModuleList", idx, len(self))
        setattr(self, str(idx), _check_module("ModuleList", f"item {idx}", module))

    def __delitem__(self, idx):
        if isinstance(idx, slice):
            for k in range(len(self._modules))[idx]:
                delattr(self, str(k))
        else:
            delattr(self, str(_norm_index("ModuleList", idx, len(self))))
        mods = list(self._modules.values())
        self._modules.clear()
        for i, m in enumerate(mods):
            self._modules[str(i)] = m

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __iadd__(self, modules):
        return self.extend(modules)

    def __add__(self, other):
        combined = ModuleList()
        for m in list(self) + list(other):
            combined.append(m)
        return combined

    def append(self, module):
        self.add_module(str(len(self)), _check_module("ModuleList.append", "module", module))
        return self

    def extend(self, modules):
        if isinstance(modules, Module) and not isinstance(modules, (ModuleList, Sequential)):
            raise TypeError(f"ModuleList.extend should be called with an iterable, but got "
                            f"{type(modules).__name__}")
        try:
            items = list(modules)
        except TypeError:
            raise TypeError(f"ModuleList.extend should be called with an iterable, but got "
                            f"{type(modules).__name__}") from None
        offset = len(self)
        for i, m in enumerate(items):
            self.add_module(str(offset + i), _check_module("ModuleList", f"item {i}", m))
        return self

    def insert(self, index, module):
        _check_module("ModuleList.insert", "module", module)
        mods = list(self._modules.values())
        mods.insert(index, module)
        self._modules.clear()
        for i, m in enumerate(mods):
            self._modules[str(i)] = m

    def pop(self, key):
        v = self[key]
        del self[key]
        return v

    def __repr__(self):
        # consecutive equal children are shown once, as PyTorch does: (0-2): 3 x Linear(...)
        reprs = [repr(m) for m in self]
        if not reprs:
            return self._get_name() + "()"
        groups, start = [], 0
        for i in range(1, len(reprs) + 1):
            if i == len(reprs) or reprs[i] != reprs[start]:
                groups.append((start, i))
                start = i
        lines = []
        for s, e in groups:
            body = _addindent(reprs[s], 2)
            if e - s == 1:
                lines.append(f"({s}): {body}")
            else:
                lines.append(f"({s}-{e - 1}): {e - s} x {body}")
        return self._get_name() + "(\n  " + "\n  ".join(lines) + "\n)"

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList has no forward: iterate over it and call its modules")


class ModuleDict(Module):
    """An ordered dict of modules whose parameters the owner sees."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, _check_module("ModuleDict", f"item {key!r}", module))

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def clear(self):
        self._modules.clear()

    def pop(self, key):
        v = self[key]
        del self[key]
        return v

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()

    def update(self, modules):
        if hasattr(modules, "keys") and hasattr(modules, "__getitem__"):
            pairs = [(k, modules[k]) for k in modules.keys()]
        else:
            pairs = []
            for j, m in enumerate(modules):
                if not isinstance(m, (tuple, list)) or len(m) != 2:
                    raise ValueError(f"ModuleDict update sequence element #{j} should be a "
                                     f"(key, module) pair, got {m!r}")
                pairs.append(tuple(m))
        for k, m in pairs:
            self[k] = m

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict has no forward: index it and call its modules")
