"""cgrad.utils.data: datasets and a DataLoader with torch.utils.data's names.

    loader = DataLoader((X, y), batch_size=32, shuffle=True, seed=0)
    for xb, yb in loader:      # cgrad tensors
        ...

Arrays (NumPy or cgrad) are wrapped once, without a copy, as cgrad tensors.
Unshuffled batches are views of those tensors (zero-copy slices of the
caller's arrays); shuffled batches are gathered with index_select.

Shuffling order: with seed=s, epoch e uses the permutation of
numpy.random.default_rng((s, e)), a pure function of (seed, epoch), so a run
resumed with load_state_dict({'epoch': e, ...}) sees the same batches. With
seed=None each epoch draws cgrad.randperm from cgrad's global generator
(cgrad.manual_seed / get_rng_state control it, as torch.manual_seed controls
torch's DataLoader)."""
import numbers

import numpy as np

from cgrad import _core
from cgrad._core import Tensor

__all__ = ["Dataset", "TensorDataset", "DataLoader", "default_collate"]

# NumPy dtypes without a cgrad counterpart, widened on the way in
_WIDEN = {"i": np.int64, "u": np.int64, "f": np.float32}


def _as_tensor(a, what):
    """A cgrad tensor over a (NumPy arrays shared when their dtype is
    supported; other integer / float dtypes widened to int64 / float32)."""
    if isinstance(a, Tensor):
        return a
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{what}: cannot batch an array of dtype {arr.dtype}")
    if arr.dtype not in (np.float32, np.float64, np.int64, np.bool_):
        arr = arr.astype(_WIDEN[arr.dtype.kind])
    if arr.ndim == 0:
        raise ValueError(f"{what}: a 0-d array has no samples to batch")
    if not (arr.flags.writeable and arr.flags.aligned and arr.dtype.isnative):
        arr = np.array(arr)  # from_numpy shares only writeable, aligned, native memory
    return _core.from_numpy(arr)


class Dataset:
    """A map-style dataset: __getitem__(i) for 0 <= i < len(self)."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")


class TensorDataset(Dataset):
    """Samples are the rows (dim 0) of several arrays or tensors of the same
    length: dataset[i] == tuple(t[i] for t in tensors)."""

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset: expected at least one array or tensor")
        self.tensors = tuple(_as_tensor(t, f"TensorDataset: argument {i}") for i, t in enumerate(tensors))
        for i, t in enumerate(self.tensors):
            if t.ndim == 0:
                raise ValueError(f"TensorDataset: argument {i} is 0-d and has no samples")
        lengths = [t.shape[0] for t in self.tensors]
        if len(set(lengths)) != 1:
            raise ValueError(f"TensorDataset: size mismatch between tensors: lengths (dim 0) are "
                             f"{lengths}; every array must have the same number of samples")

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return self.tensors[0].shape[0]


def default_collate(batch):
    """Stacks a list of samples into a batch as torch's default_collate:
    tensors / arrays stacked on a new dim 0, numbers into a 1-D tensor,
    tuples and lists element-wise (a list), dicts key-wise."""
    first = batch[0]
    if isinstance(first, Tensor):
        return _core.stack(batch, 0)
    if isinstance(first, np.ndarray) or isinstance(first, np.generic):
        return _as_tensor(np.stack([np.asarray(b) for b in batch]), "default_collate")
    if isinstance(first, bool):
        return _core.tensor(batch, dtype=_core.bool_)
    if isinstance(first, numbers.Integral):
        return _core.tensor(batch, dtype=_core.int64)
    if isinstance(first, numbers.Real):
        return _core.tensor(batch, dtype=_core.float64)  # torch: Python floats -> float64
    if isinstance(first, dict):
        return {k: default_collate([b[k] for b in batch]) for k in first}
    if isinstance(first, (tuple, list)):
        n = len(first)
        if any(len(b) != n for b in batch):
            raise ValueError(f"default_collate: samples have different lengths "
                             f"{sorted(set(len(b) for b in batch))}")
        return [default_collate([b[i] for b in batch]) for i in range(n)]
    if isinstance(first, str):
        return list(batch)
    raise TypeError(f"default_collate: cannot batch samples of type {type(first).__name__}")


class DataLoader:
    """Batches of a dataset as cgrad tensors.

    dataset: a Dataset (TensorDataset batches are sliced, others collated
      item by item with collate_fn), a tuple/list of arrays or tensors (a
      TensorDataset; batches are lists, as torch's), or one array/tensor
      (batches are tensors).
    batch_size: samples per batch; the last batch is smaller unless drop_last.
    shuffle, seed: see the module docstring for the (reproducible) order.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None,
                 collate_fn=None):
        self._single = False
        if isinstance(dataset, (tuple, list)):
            dataset = TensorDataset(*dataset)
        elif isinstance(dataset, (Tensor, np.ndarray)):
            dataset = TensorDataset(dataset)
            self._single = True
        elif not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise TypeError(f"DataLoader: dataset must be a Dataset with __len__, arrays or tensors, "
                            f"got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"DataLoader: seed must be None or an integer >= 0, got {seed!r}")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"DataLoader: collate_fn must be callable, got {type(collate_fn).__name__}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = None if seed is None else int(seed)
        self.collate_fn = collate_fn
        self.epoch = 0  # epochs started so far

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self, n):
        """The epoch's sample order (int64 NumPy array), or None for 0..n-1."""
        if not self.shuffle:
            return None
        if self.seed is None:
            return _core.randperm(n).numpy() if n else np.zeros(0, np.int64)
        return np.random.default_rng((self.seed, self.epoch)).permutation(n).astype(np.int64)

    def __iter__(self):
        n = len(self.dataset)
        order = self._order(n)
        self.epoch += 1
        fast = isinstance(self.dataset, TensorDataset) and self.collate_fn is None
        for b in range(len(self)):
            start, stop = b * self.batch_size, min((b + 1) * self.batch_size, n)
            if fast:
                tensors = self.dataset.tensors
                if order is None:
                    batch = [t.narrow(0, start, stop - start) for t in tensors]
                else:
                    index = _core.from_numpy(order[start:stop].copy())
                    on = {}  # the index, once per device the dataset's tensors live on
                    for t in tensors:
                        if t.device not in on:
                            on[t.device] = index.to(t.device)
                    batch = [t.index_select(0, on[t.device]) for t in tensors]
                yield batch[0] if self._single else batch
            else:
                ids = range(start, stop) if order is None else order[start:stop].tolist()
                samples = [self.dataset[i] for i in ids]
                yield (self.collate_fn or default_collate)(samples)

    def state_dict(self):
        """Where the shuffling stands: with a seed, epoch e's order is a pure
        function of (seed, e), so loading this resumes the same order."""
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state):
        if not isinstance(state, dict) or "epoch" not in state:
            raise ValueError(f"DataLoader.load_state_dict: expected a dict with 'epoch', got {state!r}")
        epoch = state["epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"DataLoader.load_state_dict: epoch must be an integer >= 0, got {epoch!r}")
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"DataLoader.load_state_dict: the state was saved with seed {state['seed']!r}, "
                             f"this loader has seed {self.seed!r}")
        self.epoch = int(epoch)
