"""Peak downsampling for drawing: the layer x step heatmap (max per bin),
its colour codes, and the curves (min and max per pixel column).

The heatmap is one ImageItem whose columns are bins of steps. A bin holds
the max of its cells, and the sentinels of viz.model rank missing < zero <
finite < non-finite, so a single NaN step or a one-step explosion survives
any zoom level. A curve keeps, per bin, the rows of its min and its max
(peak_line). PeakBinCache and PeakLineCache keep the bins between frames:
a run only grows at its end, so a live update recomputes the last bin and
the new ones, and an unchanged view recomputes nothing. The heatmap's bins
come from a multi-level max table (viz.pyramid), so a zoom re-bins from
O(pixels x layers) values.
No Qt here.
"""
import math

import numpy as np

from .model import LOG_ZERO
from .pyramid import MaxPyramid, max_per_group, view_grid

# uint8 codes of the heatmap image; the panel's lookup table gives colours.
CODE_MISSING = 0
CODE_ZERO = 1
CODE_FIRST = 2          # lowest finite decade
CODE_LAST = 253         # highest finite decade
CODE_NONFINITE = 255
N_FINITE_CODES = CODE_LAST - CODE_FIRST + 1


def search(x, value, side="left"):
    """np.searchsorted(x, value, side) without converting an integer ``x``
    to float first (NumPy does that for a float value: O(n) per call)."""
    if x.dtype.kind in "iu":
        value = math.ceil(value) if side == "left" else math.floor(value)
        info = np.iinfo(x.dtype)
        value = x.dtype.type(min(max(value, info.min), info.max))
    return int(np.searchsorted(x, value, side))


def bin_grid(x0, x1, max_bins, min_width=1):
    """(start, width, n_bins) of the bins peak_bins uses for [x0, x1)."""
    x0 = float(np.floor(x0))
    x1 = float(np.ceil(x1))
    span = max(x1 - x0, 1.0)
    width = max(float(min_width), float(np.ceil(span / max(int(max_bins), 1))))
    n_bins = max(1, int(np.ceil(span / width)))
    return x0, width, n_bins


def peak_bins(steps, values, x0, x1, max_bins, min_width=1):
    """Max-reduce the rows of ``values`` whose step lies in [x0, x1).

    steps: (n,) increasing int; values: (n, L) float32 log10 norms.
    Returns (image (n_bins, L) float32, start, width): bin b covers steps
    [start + b*width, start + (b+1)*width). Empty bins read as missing (-inf).
    """
    start, width, n_bins = bin_grid(x0, x1, max_bins, min_width)
    return bin_rows(steps, values, start, width, n_bins), start, width


def bin_rows(steps, values, start, width, n_bins):
    """The (n_bins, L) peak bins of the grid (start, width) from the rows
    themselves: O(rows in range x L). Empty bins are missing (-inf)."""
    image = np.full((n_bins, values.shape[1]), -np.inf, np.float32)
    _fill_bins(image, steps, values, start, width, 0)
    return image


def _fill_bins(image, steps, values, start, width, first_bin):
    """Writes bins first_bin.. of ``image`` (already -inf there) from the rows
    that fall in them."""
    n_bins = image.shape[0]
    if first_bin >= n_bins or values.shape[1] == 0:
        return
    i0 = search(steps, start + first_bin * width)
    i1 = search(steps, start + n_bins * width)
    if i1 <= i0:
        return
    rows = values[i0:i1]
    bin_of_row = ((steps[i0:i1] - start) // width).astype(np.int64)
    # first row of every non-empty bin (rows are sorted by step)
    starts = np.flatnonzero(np.diff(bin_of_row, prepend=-1))
    image[bin_of_row[starts]] = max_per_group(rows, starts)


class PeakBinCache:
    """The heatmap's peak bins for a view that is redrawn again and again.

    Bins come from a MaxPyramid (viz.pyramid) of the rows, so a new zoom
    level or width costs O(bins x layers), on the grid of view_grid (bins of
    whole pyramid blocks, at most 1/8 wider than bin_grid's; bin_grid's own
    when the view is so narrow that the rows are binned directly).

    A run only ever grows at its end, so for the same data source and the
    same bin grid (start, width) every bin before the one holding the last
    row seen is final: a live update recomputes only the last bin and the
    new ones, and a repaint with nothing new costs nothing. ``source`` is any
    object that identifies the rows (the RunModel); rows already seen must
    not change, which RunModel.append guarantees.
    """

    def __init__(self):
        self.pyramid = MaxPyramid()
        self.clear()

    def clear(self, keep_pyramid=False):
        """Forgets the bins (and the pyramid unless ``keep_pyramid``)."""
        self._key = None
        self._image = None
        self._rows = 0      # rows of ``steps`` the cached bins have seen
        self.rebuilds = 0   # recomputations of every bin (for tests and the benchmark)
        self._codes = None
        self._codes_key = None
        self._unchanged = 0  # leading bins of the image not recomputed since _codes was made
        if not keep_pyramid:
            self.pyramid.clear()

    def grid(self, x0, x1, max_bins, min_width=1):
        """(start, width, n_bins, block) that ``bins`` uses (view_grid)."""
        return view_grid(x0, x1, max_bins, min_width, self.pyramid.base)

    def bins(self, source, steps, values, x0, x1, max_bins, min_width=1):
        """(image, start, width): bin_rows(steps, values, start, width, n_bins)
        for the grid (start, width, n_bins) of ``grid(x0, x1, max_bins, min_width)``.
        min_width: the typical step distance (the narrowest bin)."""
        self.pyramid.update(source, steps, values, stride=min_width)
        start, width, n_bins, block = self.grid(x0, x1, max_bins, min_width)
        n = int(steps.shape[0])
        key = (start, width, values.shape[1])
        same = (self._key is not None and self._key[0] is source and self._key[1:] == key
                and n >= self._rows)
        image = np.full((n_bins, values.shape[1]), -np.inf, np.float32)
        if same and self._rows:
            # bins before the one of the last row seen cannot receive rows
            last = int((steps[self._rows - 1] - start) // width)
            keep = max(0, min(last, n_bins, self._image.shape[0]))
            if n == self._rows and n_bins <= self._image.shape[0] and last < n_bins:
                keep = n_bins   # nothing new in range: every bin is final
            image[:keep] = self._image[:keep]
        else:
            self.rebuilds += 1
            keep = 0
        self._unchanged = min(self._unchanged, keep)
        if block:
            self.pyramid.fill(image, start, width, block, keep)
        else:
            _fill_bins(image, steps, values, start, width, keep)
        self._key = (source,) + key
        self._image = image
        self._rows = n
        return image, start, width

    def codes(self, cols, lo, hi):
        """encode(image[:, cols], lo, hi) of the image ``bins`` returned last;
        the bins it kept from the call before keep their codes (a live
        update encodes the last bin and the new ones)."""
        image = self._image
        key = (self._key, np.asarray(cols).tobytes(), lo, hi)
        keep = 0
        if key == self._codes_key:
            keep = min(self._unchanged, image.shape[0], self._codes.shape[0])
        out = np.empty((image.shape[0], len(cols)), np.uint8)
        if keep:
            out[:keep] = self._codes[:keep]
        out[keep:] = encode(image[keep:][:, cols], lo, hi)
        self._codes, self._codes_key, self._unchanged = out, key, image.shape[0]
        return out


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


# ------------------------------------------------------------------ curves
def peak_line(x, y, x0, x1, max_bins, min_width=1):
    """A curve through [x0, x1) with at most two points per bin.

    x: (n,) increasing steps; y: (n,) values (+-inf and NaN are gaps). Each
    bin of bin_grid(x0, x1, max_bins, min_width) keeps the rows holding its
    min and its max, in step order, at their own steps, so a one-step spike
    stays; the first and the last row in range are kept as well, and when
    there are no more rows than two per bin the rows are returned as they are. Bins with no finite value are a
    NaN (a gap). Returns float64 (xs, ys).
    """
    return PeakLineCache().line(None, x, y, x0, x1, max_bins, min_width)


def _finite_or_nan(values):
    out = np.array(values, dtype=np.float64)
    out[~np.isfinite(out)] = np.nan
    return out


def _bin_starts(xs, start, width):
    """(bin ids, first row, row count) of the non-empty bins of sorted ``xs``:
    a search per bin edge, not a division per row."""
    b0 = int((xs[0] - start) // width)
    b1 = int((xs[-1] - start) // width)
    edges = start + np.arange(b0, b1 + 2, dtype=np.float64) * width
    if xs.dtype.kind in "iu":
        edges = np.ceil(edges).astype(xs.dtype)   # exact: steps and edges are whole numbers
    pos = np.searchsorted(xs, edges, "left")
    counts = np.diff(pos)
    full = counts > 0
    return np.arange(b0, b1 + 1, dtype=np.int64)[full], pos[:-1][full], counts[full]


def _peak_pairs(xs, ys, start, width):
    """(bin ids, x pairs (m, 2), y pairs (m, 2)) of the non-empty bins.
    xs: sorted steps (any dtype); ys: float64 with NaN gaps."""
    bins, starts, counts = _bin_starts(xs, start, width)
    finite = np.isfinite(ys)
    hi = np.where(finite, ys, -np.inf)
    lo = np.where(finite, ys, np.inf)
    i_max, i_min = _arg_extremes(hi, lo, starts, counts)
    first = np.minimum(i_max, i_min)
    second = np.maximum(i_max, i_min)
    px = np.stack([xs[first], xs[second]], axis=1).astype(np.float64)
    py = np.stack([ys[first], ys[second]], axis=1)
    return bins, px, py


def _arg_extremes(hi, lo, starts, counts):
    """Row of the max of ``hi`` and of the min of ``lo`` in every bin (the
    first such row)."""
    m = hi.shape[0]
    nb = starts.size
    k = int(counts[1]) if nb > 2 else 0
    if nb > 2 and k > 1 and (counts[1:-1] == k).all():
        # every step recorded: the inner bins are equal, a reshape does them
        a, b = int(starts[1]), int(starts[-1])
        i_max = np.empty(nb, np.int64)
        i_min = np.empty(nb, np.int64)
        inner = np.arange(a, b, k)
        i_max[1:-1] = inner + hi[a:b].reshape(-1, k).argmax(axis=1)
        i_min[1:-1] = inner + lo[a:b].reshape(-1, k).argmin(axis=1)
        i_max[0], i_min[0] = int(hi[:a].argmax()), int(lo[:a].argmin())
        i_max[-1], i_min[-1] = b + int(hi[b:].argmax()), b + int(lo[b:].argmin())
        return i_max, i_min
    owner = np.repeat(np.arange(nb), counts)
    rows = np.arange(m)
    i_max = np.minimum.reduceat(np.where(hi == np.maximum.reduceat(hi, starts)[owner], rows, m),
                                starts)
    i_min = np.minimum.reduceat(np.where(lo == np.minimum.reduceat(lo, starts)[owner], rows, m),
                                starts)
    return i_max, i_min


class PeakLineCache:
    """peak_line for one curve redrawn again and again (see PeakBinCache:
    same grid and a grown source recompute only the last bin and new ones)."""

    def __init__(self):
        self.clear()

    def clear(self):
        self._key = None
        self._rows = 0
        self._bins = np.zeros(0, np.int64)
        self._px = np.zeros((0, 2))
        self._py = np.zeros((0, 2))
        self.rebuilds = 0

    def line(self, source, x, y, x0, x1, max_bins, min_width=1):
        start, width, n_bins = bin_grid(x0, x1, max_bins, min_width)
        end = start + n_bins * width
        i0 = search(x, start)
        i1 = search(x, end)
        if i1 - i0 <= 2 * n_bins:
            # no more rows than points drawn: the rows themselves
            self._key = None
            return np.asarray(x[i0:i1], dtype=np.float64), _finite_or_nan(y[i0:i1])
        n = int(x.shape[0])
        key = (start, width)
        keep = 0
        if (source is not None and self._key is not None and self._key[0] is source
                and self._key[1:] == key and n >= self._rows and self._rows):
            last = int((x[self._rows - 1] - start) // width)
            keep = int(np.searchsorted(self._bins, last, "left"))   # bins before it are final
        else:
            self.rebuilds += 1
        if keep:
            r0 = search(x, start + self._bins[keep - 1] * width + width)
        else:
            r0 = i0
        r0 = max(r0, i0)
        bins, px, py = _peak_pairs(np.asarray(x[r0:i1]), _finite_or_nan(y[r0:i1]), start, width)
        keep_bins = self._bins[:keep]
        inside = keep_bins < n_bins
        self._bins = np.concatenate([keep_bins[inside], bins])
        self._px = np.concatenate([self._px[:keep][inside], px])
        self._py = np.concatenate([self._py[:keep][inside], py])
        self._key = (source,) + key
        self._rows = n
        # the first and the last row as they are: autorange sees the data's own ends
        return (np.concatenate([[x[i0]], self._px.ravel(), [x[i1 - 1]]]).astype(np.float64),
                np.concatenate([_finite_or_nan(y[i0:i0 + 1]), self._py.ravel(),
                                _finite_or_nan(y[i1 - 1:i1])]))
