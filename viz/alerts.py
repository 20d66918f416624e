"""Alert rules evaluated on the recorded data, with no change to training code.

- spike: global grad norm (pre-clip) above k x the median of the previous
  ``window`` finite norms (needs ``min_history`` of them first);
- dead layer: a layer's grad norm below ``eps`` (0 included) for ``steps``
  consecutive recorded steps, one alert per such stretch;
- non-finite: any step with NaN/Inf gradient elements, an infinite global
  norm or loss, one alert per consecutive stretch (naming the first layer).

The engine is incremental: ``update(model, start, end)`` looks at the rows
just appended and carries the state it needs across calls. No Qt here.
"""
import warnings
from dataclasses import dataclass

import numpy as np

from .model import LOG_NONFINITE


@dataclass
class AlertRules:
    spike_k: float = 10.0
    spike_window: int = 100
    spike_min_history: int = 20
    dead_eps: float = 1e-8
    dead_steps: int = 50

    def __post_init__(self):
        if not self.spike_k > 0:
            raise ValueError(f"spike_k must be > 0, got {self.spike_k!r}")
        for name in ("spike_window", "spike_min_history", "dead_steps"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.dead_eps > 0:
            raise ValueError(f"dead_eps must be > 0, got {self.dead_eps!r}")


@dataclass
class Alert:
    kind: str            # 'spike' | 'dead_layer' | 'nonfinite'
    step: int            # first step of the condition
    end_step: int        # last step seen in the condition so far
    message: str
    layer_id: int = None
    value: float = None

    def describe(self):
        span = f"step {self.step}" if self.end_step == self.step else \
            f"steps {self.step}-{self.end_step}"
        return f"{span}: {self.message}"


class AlertEngine:
    def __init__(self, rules=None):
        self.rules = rules or AlertRules()
        self.alerts = []
        self._dead_run = None        # (L,) consecutive below-eps rows per layer
        self._dead_open = {}         # layer_id -> open Alert
        self._nonfinite_open = None  # open non-finite Alert
        self._last_row = -1

    def update(self, model, start, end):
        """Evaluate rows [start, end) of ``model``; returns the new alerts.

        Open alerts (a stretch still going on) get their ``end_step``
        extended in place.
        """
        if end <= start:
            return []
        new = []
        new += self._spikes(model, start, end)
        new += self._dead_layers(model, start, end)
        new += self._nonfinite(model, start, end)
        new.sort(key=lambda a: a.step)
        self.alerts.extend(new)
        self._last_row = end - 1
        return new

    # ---------------------------------------------------------------- spike
    def _spikes(self, model, start, end):
        r = self.rules
        norm = model.grad_norm
        lo = max(0, start - r.spike_window)
        hist = norm[lo:end].astype(np.float64)
        hist[~np.isfinite(hist)] = np.nan
        if hist.size <= 1:
            return []
        pad = r.spike_window - (start - lo)
        padded = np.concatenate([np.full(pad, np.nan), hist])
        # windows[i] = the spike_window norms before row start + i
        windows = np.lib.stride_tricks.sliding_window_view(padded, r.spike_window)[:end - start]
        count = np.count_nonzero(~np.isnan(windows), axis=1)
        ok = count >= r.spike_min_history
        if not ok.any():
            return []
        median = np.full(end - start, np.nan)
        full = ok & (count == r.spike_window)     # the common case: no NaN inside
        partial = ok & ~full
        if full.any():
            median[full] = np.median(windows[full], axis=1)
        if partial.any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                median[partial] = np.nanmedian(windows[partial], axis=1)
        current = norm[start:end]
        hit = ok & np.isfinite(current) & (median > 0) & (current > r.spike_k * median)
        steps = model.steps
        out = []
        for i in np.flatnonzero(hit):
            ratio = current[i] / median[i]
            out.append(Alert("spike", int(steps[start + i]), int(steps[start + i]),
                             f"grad norm {current[i]:.4g} is {ratio:.1f}x the running "
                             f"median {median[i]:.4g} (k={r.spike_k:g})",
                             value=float(current[i])))
        return out

    # ----------------------------------------------------------- dead layer
    def _dead_layers(self, model, start, end):
        r = self.rules
        n_layers = model.n_layers
        if n_layers == 0:
            return []
        if self._dead_run is None or self._dead_run.shape[0] != n_layers:
            old = self._dead_run
            self._dead_run = np.zeros(n_layers, np.int64)
            if old is not None:
                self._dead_run[:old.shape[0]] = old[:n_layers]
        below_all = model.layer_log[start:end] < np.float32(np.log10(r.dead_eps))
        # only layers that are below now or were at the end of the last chunk
        cols = np.flatnonzero(below_all.any(axis=0) | (self._dead_run > 0))
        if cols.size == 0:
            return []
        below = below_all[:, cols]
        carry = self._dead_run[cols]
        m = end - start
        idx = np.arange(1, m + 1)[:, None]
        # run length at each row: rows since the last row that was not below
        last_reset = np.maximum.accumulate(np.where(below, 0, idx), axis=0)
        run = np.where(last_reset == 0, carry[None, :] + idx, idx - last_reset)
        steps = model.steps[start:end]
        out = []
        names = model.layer_names
        fire_rows, fire_cols = np.nonzero(run == r.dead_steps)
        for row, c in zip(fire_rows, fire_cols):
            layer = int(cols[c])
            first_row = start + row - r.dead_steps + 1
            first = int(model.steps[max(first_row, 0)])
            alert = Alert("dead_layer", first, int(steps[row]),
                          f"layer {names[layer]} grad norm below {r.dead_eps:g} "
                          f"for {r.dead_steps}+ steps", layer_id=layer)
            self._dead_open[layer] = alert
            out.append(alert)
        # extend or close the open stretches
        col_of = {int(layer): c for c, layer in enumerate(cols)}
        for layer, alert in list(self._dead_open.items()):
            if layer not in col_of:
                del self._dead_open[layer]
                continue
            col = run[:, col_of[layer]]
            still = np.flatnonzero(col >= r.dead_steps)
            if still.size:
                alert.end_step = max(alert.end_step, int(steps[still[-1]]))
            if col[-1] < r.dead_steps:
                del self._dead_open[layer]
        self._dead_run[:] = 0
        self._dead_run[cols] = run[-1]
        return out

    # ------------------------------------------------------------ non-finite
    def _nonfinite(self, model, start, end):
        bad = (model.nonfinite[start:end] > 0) | np.isinf(model.grad_norm[start:end]) \
            | np.isinf(model.loss[start:end])
        layer_bad = model.layer_log[start:end] == LOG_NONFINITE
        if layer_bad.size:
            bad |= layer_bad.any(axis=1)
        steps = model.steps[start:end]
        names = model.layer_names
        m = end - start
        good = np.flatnonzero(~bad)

        def stretch_end(i):
            k = int(np.searchsorted(good, i))
            j = int(good[k]) if k < good.size else m
            return int(steps[j - 1])

        was_open = self._nonfinite_open is not None
        if was_open and bad[0]:
            self._nonfinite_open.end_step = stretch_end(0)
        prev = np.concatenate([[was_open], bad[:-1]])
        out = []
        for i in np.flatnonzero(bad & ~prev):
            layers = np.flatnonzero(layer_bad[i]) if layer_bad.size else []
            if len(layers):
                where = f"first in layer {names[layers[0]]}" + (
                    f" (+{len(layers) - 1} more)" if len(layers) > 1 else "")
            else:
                where = "in the global norm / loss"
            count = int(model.nonfinite[start + i])
            out.append(Alert("nonfinite", int(steps[i]), stretch_end(i),
                             f"non-finite gradients ({count} elements), {where}",
                             layer_id=int(layers[0]) if len(layers) else None))
        if bad[-1]:
            if out:  # else the stretch that was open goes on
                self._nonfinite_open = out[-1]
        else:
            self._nonfinite_open = None
        return out
