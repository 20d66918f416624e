"""Peak (max) downsampling of the layer x step heatmap, and its colour codes.

Curves use pyqtgraph's own peak mode; the heatmap is one ImageItem whose
columns are bins of steps. A bin holds the max of its cells, and the
sentinels of viz.model rank missing < zero < finite < non-finite, so a
single NaN step or a one-step explosion survives any zoom level.
No Qt here.
"""
import numpy as np

from .model import LOG_ZERO

# uint8 codes of the heatmap image; the panel's lookup table gives colours.
CODE_MISSING = 0
CODE_ZERO = 1
CODE_FIRST = 2          # lowest finite decade
CODE_LAST = 253         # highest finite decade
CODE_NONFINITE = 255
N_FINITE_CODES = CODE_LAST - CODE_FIRST + 1


def peak_bins(steps, values, x0, x1, max_bins, min_width=1):
    """Max-reduce the rows of ``values`` whose step lies in [x0, x1).

    steps: (n,) increasing int; values: (n, L) float32 log10 norms.
    Returns (image (n_bins, L) float32, start, width): bin b covers steps
    [start + b*width, start + (b+1)*width). Empty bins read as missing (-inf).
    """
    n_layers = values.shape[1]
    x0 = float(np.floor(x0))
    x1 = float(np.ceil(x1))
    span = max(x1 - x0, 1.0)
    width = max(float(min_width), float(np.ceil(span / max(int(max_bins), 1))))
    n_bins = max(1, int(np.ceil(span / width)))
    i0 = int(np.searchsorted(steps, x0, "left"))
    i1 = int(np.searchsorted(steps, x0 + n_bins * width, "left"))
    image = np.full((n_bins, n_layers), -np.inf, np.float32)
    if i1 <= i0 or n_layers == 0:
        return image, x0, width
    rows = values[i0:i1]
    bin_of_row = ((steps[i0:i1] - x0) // width).astype(np.int64)
    # first row of every non-empty bin (rows are sorted by step)
    starts = np.flatnonzero(np.diff(bin_of_row, prepend=-1))
    image[bin_of_row[starts]] = _max_per_bin(rows, starts)
    return image, x0, width


def _max_per_bin(rows, starts):
    """max over rows[starts[b]:starts[b+1]] for every b."""
    m = rows.shape[0]
    counts = np.diff(np.append(starts, m))
    k = int(counts[0])
    if counts.size > 1 and k > 1 and (counts[:-1] == k).all():
        # every step recorded: equal bins, a reshape is ~4x faster than reduceat
        full = counts.size - 1 if counts[-1] < k else counts.size
        out = np.empty((counts.size, rows.shape[1]), rows.dtype)
        out[:full] = rows[:full * k].reshape(full, k, rows.shape[1]).max(axis=1)
        if full < counts.size:
            out[full] = rows[full * k:].max(axis=0)
        return out
    return np.maximum.reduceat(rows, starts, axis=0)


def encode(image, lo, hi):
    """float32 log10 image with sentinels -> uint8 codes (see CODE_*)."""
    codes = np.empty(image.shape, np.uint8)
    finite = np.isfinite(image) & (image > LOG_ZERO)
    scale = (N_FINITE_CODES - 1) / max(hi - lo, 1e-12)
    scaled = np.clip((image[finite] - lo) * scale, 0, N_FINITE_CODES - 1)
    codes[finite] = CODE_FIRST + np.rint(scaled).astype(np.uint8)
    codes[image == -np.inf] = CODE_MISSING
    codes[(image <= LOG_ZERO) & (image > -np.inf)] = CODE_ZERO
    codes[image == np.inf] = CODE_NONFINITE
    codes[np.isnan(image)] = CODE_MISSING
    return codes
