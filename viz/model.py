"""In-memory model of one run: every recorded step, in NumPy buffers that
grow by doubling (amortised O(1) appends, views without copies).

No Qt here: the model is filled from decoded chunks (``decode_delta`` runs in
the source's worker thread) and read by the panels and the alert rules.

Per-layer gradient norms are kept as float32 log10 values with sentinels, so
that the heatmap can reduce bins with a plain ``max`` and still keep a dead
layer, an exploding layer and a missing row apart:

    LOG_MISSING (-inf)   no row for this layer at this step
    LOG_ZERO    (-3e38)  gradient norm exactly 0 (dead layer / no gradient)
    finite               log10(grad norm)
    LOG_NONFINITE (+inf) NaN/Inf gradient elements, or an overflowing norm

``max`` then ranks them missing < zero < finite < non-finite, which is the
order a person looking for trouble wants to see inside a downsampled bin.
"""
from dataclasses import dataclass, field

import numpy as np

LOG_MISSING = np.float32(-np.inf)
LOG_ZERO = np.float32(-3e38)
LOG_NONFINITE = np.float32(np.inf)

# Scalar step columns of the run format (docs/run_format.md), dtype in memory.
STEP_COLUMNS = {
    "time": np.float64,
    "loss": np.float64,
    "grad_norm": np.float64,
    "grad_norm_clipped": np.float64,
    "clip_max_norm": np.float64,
    "clip_coef": np.float64,
    "clipped": np.bool_,
    "loss_scale": np.float64,
    "skipped": np.bool_,
    "nonfinite": np.int64,
}

# Per-layer matrices kept in memory, dtype; shape (capacity, n_layers).
LAYER_COLUMNS = {
    "layer_log": np.float32,          # log10 grad norm with the sentinels above
    "layer_grad_max": np.float32,     # max |g| over finite elements
    "layer_nonfinite": np.int32,      # NaN/Inf elements
    "layer_update_ratio": np.float32,  # ||dw|| / ||w||, NaN when unknown
}

_MIN_CAPACITY = 1024


@dataclass
class Chunk:
    """Decoded steps of one poll, ready to be copied into a RunModel."""
    step: np.ndarray                          # (n,) int64, increasing
    columns: dict                             # name -> (n,) per STEP_COLUMNS
    lr: np.ndarray                            # (n, n_groups) float64
    layers: dict                              # name -> (n, n_layers) per LAYER_COLUMNS
    events: list = field(default_factory=list)
    new_layers: list = field(default_factory=list)
    log_range: tuple = (np.inf, -np.inf)      # finite min / max of layer_log

    def __len__(self):
        return int(self.step.shape[0])


def _column(steps, name, n):
    """One column of RunDelta.steps (a dict of arrays or a structured array)."""
    try:
        values = steps[name]
    except (KeyError, ValueError, IndexError):
        return None
    return np.asarray(values).reshape(n)


def _as_float(values, n):
    """float64 copy; NULL (None / object) becomes NaN."""
    if values is None:
        return np.full(n, np.nan)
    if values.dtype == object:
        return np.array([np.nan if v is None else float(v) for v in values])
    return values.astype(np.float64)


def encode_log_norms(grad_norm, nonfinite):
    """log10 of per-layer norms with the sentinels (see module docstring).

    grad_norm: (n, L) float, NaN where the layer has no row.
    nonfinite: (n, L) count of NaN/Inf elements, or None.
    """
    norm = np.asarray(grad_norm, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(norm).astype(np.float32)   # 0 -> -inf, NaN/neg -> NaN, inf -> inf
    out[out == -np.inf] = LOG_ZERO
    nan = np.isnan(out)
    if nan.any():
        out[nan] = np.where(norm[nan] < 0, LOG_NONFINITE, LOG_MISSING)
    if nonfinite is not None:
        counts = np.asarray(nonfinite)
        out[counts > 0] = LOG_NONFINITE        # NaN counts (missing rows) compare False
    return out


def decode_delta(delta, n_groups):
    """RunDelta (cgrad.monitor.reader) -> Chunk. Pure NumPy, thread-safe.

    The expensive part of taking new data in (log10 over every layer cell)
    happens here so the source can run it off the GUI thread.
    """
    steps = delta.steps
    raw_step = np.asarray(steps["step"]).ravel() if _has(steps, "step") else np.zeros(0)
    n = int(raw_step.size)
    step = raw_step.astype(np.int64)
    columns = {}
    for name, dtype in STEP_COLUMNS.items():
        values = _column(steps, name, n) if n else None
        if dtype is np.float64:
            columns[name] = _as_float(values, n)
        elif values is None:
            columns[name] = np.zeros(n, dtype)
        else:
            columns[name] = np.nan_to_num(_as_float(values, n), nan=0.0).astype(dtype)
    lr = np.asarray(delta.lr, dtype=np.float64) if n else np.zeros((0, n_groups))
    lr = lr.reshape(n, -1) if lr.size else np.full((n, max(n_groups, 0)), np.nan)

    grad_norm = _matrix(getattr(delta, "layer_grad_norm", None), n)
    nonfinite = _matrix(getattr(delta, "layer_nonfinite", None), n)
    n_layers = grad_norm.shape[1]
    log = encode_log_norms(grad_norm, nonfinite)
    finite = log[(log > LOG_ZERO) & (log < LOG_NONFINITE)]
    log_range = (float(finite.min()), float(finite.max())) if finite.size else (np.inf, -np.inf)
    counts = _matrix(nonfinite, n, n_layers)
    layers = {
        "layer_log": log,
        "layer_grad_max": _matrix(getattr(delta, "layer_grad_max", None), n, n_layers).astype(np.float32),
        "layer_nonfinite": np.where(counts > 0, counts, 0).astype(np.int32),  # NaN: no row
        "layer_update_ratio": _matrix(
            getattr(delta, "layer_update_ratio", None), n, n_layers).astype(np.float32),
    }
    return Chunk(step=step, columns=columns, lr=lr, layers=layers,
                 events=list(getattr(delta, "events", None) or []),
                 new_layers=list(getattr(delta, "new_layers", None) or []),
                 log_range=log_range)


def _has(steps, name):
    if isinstance(steps, dict):
        return name in steps
    names = getattr(getattr(steps, "dtype", None), "names", None)
    return bool(names) and name in names


def _matrix(values, n, n_layers=None):
    if values is None:
        return np.full((n, n_layers or 0), np.nan)
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return np.full((n, n_layers if n_layers is not None else 0), np.nan)
    arr = arr.reshape(n, -1)
    if n_layers is not None and arr.shape[1] != n_layers:
        return np.full((n, n_layers), np.nan)
    return arr


class RunModel:
    """Every step of one run in growable buffers.

    Views (``model.loss``, ``model.layer_log``...) cover the ``n`` rows held
    and are invalidated by the next ``append`` that has to grow the buffers.
    """

    def __init__(self, layers=(), n_groups=0, meta=None, path=None):
        self.meta = dict(meta or {})
        self.path = path
        self.layers = [dict(layer) for layer in layers]
        self.n_groups = int(n_groups)
        self.events = []
        self.n = 0
        self._cap = 0
        self._step = np.zeros(0, np.int64)
        self._cols = {k: np.zeros(0, t) for k, t in STEP_COLUMNS.items()}
        self._lr = np.zeros((0, self.n_groups))
        self._layer = {k: np.zeros((0, len(self.layers)), t) for k, t in LAYER_COLUMNS.items()}
        # finite log10 range seen so far (heatmap colour levels)
        self.log_min = np.inf
        self.log_max = -np.inf

    # ------------------------------------------------------------ reading
    @property
    def name(self):
        return self.meta.get("name") or (str(self.path) if self.path else "run")

    @property
    def n_layers(self):
        return len(self.layers)

    @property
    def layer_names(self):
        return [layer.get("name", f"layer {i}") for i, layer in enumerate(self.layers)]

    @property
    def steps(self):
        return self._step[:self.n]

    @property
    def lr(self):
        return self._lr[:self.n]

    def __getattr__(self, name):
        # column views: model.loss, model.grad_norm, model.layer_log, ...
        d = self.__dict__
        if name in STEP_COLUMNS and "_cols" in d:
            return d["_cols"][name][:d["n"]]
        if name in LAYER_COLUMNS and "_layer" in d:
            return d["_layer"][name][:d["n"]]
        raise AttributeError(name)

    @property
    def last_step(self):
        return int(self._step[self.n - 1]) if self.n else -1

    def row_of_step(self, step):
        """Row holding ``step``, or of the nearest recorded step."""
        if self.n == 0:
            raise IndexError("the run holds no steps yet")
        steps = self.steps
        i = int(np.searchsorted(steps, step))
        if i >= self.n:
            return self.n - 1
        if i > 0 and step - steps[i - 1] < steps[i] - step:
            return i - 1
        return i

    def step_stride(self):
        """Typical distance between recorded steps (>= 1)."""
        if self.n < 2:
            return 1
        cached = self.__dict__.get("_stride")
        if cached is not None and cached[0] == self.n:
            return cached[1]      # rows never change: the same rows, the same stride
        tail = self.steps[-min(self.n, 1001):]
        stride = max(1, int(np.median(np.diff(tail))))
        self._stride = (self.n, stride)
        return stride

    def rows_in(self, x0, x1):
        """Row slice [i0, i1) of the steps with x0 <= step <= x1."""
        steps = self.steps
        return int(np.searchsorted(steps, x0, "left")), int(np.searchsorted(steps, x1, "right"))

    # ------------------------------------------------------------ writing
    def _reserve(self, need):
        if need <= self._cap:
            return
        cap = max(_MIN_CAPACITY, self._cap)
        while cap < need:
            cap *= 2

        def grow(arr):
            shape = (cap,) + arr.shape[1:]
            out = np.empty(shape, arr.dtype)
            out[:self.n] = arr[:self.n]
            return out

        self._step = grow(self._step)
        self._cols = {k: grow(v) for k, v in self._cols.items()}
        self._lr = grow(self._lr)
        self._layer = {k: grow(v) for k, v in self._layer.items()}
        self._cap = cap

    def _add_layers(self, new_layers):
        known = {layer.get("layer_id", i) for i, layer in enumerate(self.layers)}
        added = [dict(layer) for layer in new_layers if layer.get("layer_id") not in known]
        if not added:
            return
        self.layers.extend(sorted(added, key=lambda layer: layer.get("layer_id", 0)))
        fill = {"layer_log": LOG_MISSING, "layer_grad_max": np.nan,
                "layer_nonfinite": 0, "layer_update_ratio": np.nan}
        for k, arr in self._layer.items():
            out = np.full((arr.shape[0], len(self.layers)), fill[k], arr.dtype)
            out[:, :arr.shape[1]] = arr
            self._layer[k] = out

    def _set_groups(self, n_groups):
        if n_groups <= self._lr.shape[1]:
            return
        out = np.full((self._lr.shape[0], n_groups), np.nan)
        out[:, :self._lr.shape[1]] = self._lr
        self._lr = out
        self.n_groups = n_groups

    def append(self, chunk):
        """Copy a decoded chunk in; returns the row range (start, end) added.

        Steps at or before the last one held are dropped, so a source that
        re-reads a file after an error cannot duplicate rows.
        """
        self._add_layers(chunk.new_layers)
        self.events.extend(chunk.events)
        keep = chunk.step > self.last_step
        if not keep.any():
            return self.n, self.n
        if not keep.all():
            keep_idx = np.flatnonzero(keep)
        else:
            keep_idx = slice(None)
        m = int(np.count_nonzero(keep))
        self._set_groups(chunk.lr.shape[1])
        start, end = self.n, self.n + m
        self._reserve(end)
        self._step[start:end] = chunk.step[keep_idx]
        for k in STEP_COLUMNS:
            self._cols[k][start:end] = chunk.columns[k][keep_idx]
        self._lr[start:end] = np.nan
        self._lr[start:end, :chunk.lr.shape[1]] = chunk.lr[keep_idx]
        for k, arr in self._layer.items():
            src = chunk.layers[k][keep_idx]
            width = min(src.shape[1], arr.shape[1])
            if width < arr.shape[1]:
                arr[start:end] = LOG_MISSING if k == "layer_log" else (0 if k == "layer_nonfinite" else np.nan)
            arr[start:end, :width] = src[:, :width]
        self.n = end
        self.log_min = min(self.log_min, chunk.log_range[0])
        self.log_max = max(self.log_max, chunk.log_range[1])
        return start, end

    # ------------------------------------------------------------ helpers
    def log_levels(self):
        """(lo, hi) decades that cover every finite log10 norm seen."""
        if not np.isfinite(self.log_min):
            return -8.0, 1.0
        lo, hi = np.floor(self.log_min), np.ceil(self.log_max)
        if hi <= lo:
            hi = lo + 1.0
        return float(lo), float(hi)

    def events_of(self, kinds):
        kinds = set(kinds)
        return [e for e in self.events if e.get("kind") in kinds]
