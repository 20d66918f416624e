"""A multi-level max table of the layer x step matrix, so that the heatmap of
any view is binned in O(bins x layers), not O(steps x layers).

Level k holds, per layer, the max of the rows whose step lies in the block
[a * B_k, (a + 1) * B_k) of absolute steps, B_k = base * 2**k (a power of
two). Blocks are aligned to step 0, not to the first row, so a bin grid
whose start and width are whole blocks of a level reads that level and
nothing else: each bin is the max of width / B_k consecutive blocks, equal
to the max of its rows (max is exact). Empty blocks hold LOG_MISSING (-inf),
so a bin with no row reads as missing, and the sentinels of viz.model keep
their order (missing < zero < finite < non-finite) as in a direct binning:
one non-finite or one-step spike survives every level.

A run only grows at its end: ``update`` recomputes the last block of every
level and the new ones. No Qt here.
"""
import math

import numpy as np

from .model import LOG_MISSING

# A view uses the pyramid when its bins hold at least this many blocks of a
# level: bins then get at most 1/BLOCKS_PER_BIN wider than the view's own
# (never more bins than pixel columns), and a bin reads <= 2 * this blocks.
BLOCKS_PER_BIN = 8
MIN_BASE = 4        # steps in a block of level 0 (at least; see MaxPyramid)
MAX_BLOCKS_PER_ROW = 4   # level 0 holds at most this many blocks a row (+ 4096)


def view_grid(x0, x1, max_bins, min_width=1, base=MIN_BASE):
    """(start, width, n_bins, block) of the heatmap bins for [x0, x1).

    At most ``max_bins`` bins of ``width`` steps from ``start``; ``block``
    is the pyramid block size the grid is made of (start and width are
    multiples of it), or 0 when the bins are too narrow for a level of
    ``base``-step blocks and are binned from the rows themselves (then the
    grid is viz.downsample.bin_grid's)."""
    lo = math.floor(x0)
    hi = math.ceil(x1)
    span = max(hi - lo, 1)
    bins = max(int(max_bins), 1)
    width = max(int(math.ceil(min_width)), -(-span // bins))
    block = 0
    if width >= BLOCKS_PER_BIN * base:
        block = base << ((width // (BLOCKS_PER_BIN * base)).bit_length() - 1)
        lo = (lo // block) * block
        span = max(hi - lo, 1)
        width = max(width, -(-span // bins))
        width = -(-width // block) * block
    n_bins = max(1, -(-span // width))
    return float(lo), float(width), int(n_bins), int(block)


def _block_max(steps, values, block, first_abs):
    """(m, L) max per block for the blocks from absolute index ``first_abs``
    through the one holding the last row, from all their rows (``steps``
    sorted; empty blocks -inf). A new array: a level may keep it."""
    i0 = int(np.searchsorted(steps, first_abs * block, "left"))
    ids = steps[i0:] // block
    last_abs = int(ids[-1]) if ids.size else first_abs
    m = last_abs - first_abs + 1
    if not ids.size:
        return np.full((m, values.shape[1]), LOG_MISSING, values.dtype)
    starts = np.flatnonzero(np.diff(ids, prepend=ids[0] - 1))
    maxima = max_per_group(values[i0:], starts)
    if starts.size == m:
        return maxima                    # no block without rows: the maxima as they are
    out = np.full((m, values.shape[1]), LOG_MISSING, values.dtype)
    out[ids[starts] - first_abs] = maxima
    return out


def max_per_group(rows, starts):
    """max over rows[starts[g]:starts[g+1]] (the last to the end) for every g."""
    m = rows.shape[0]
    counts = np.diff(np.append(starts, m))
    k = int(counts[0])
    if counts.size > 1 and k > 1 and (counts[:-1] == k).all():
        # every step recorded: equal groups, a reshape is ~4x faster than reduceat
        full = counts.size - 1 if counts[-1] < k else counts.size
        out = np.empty((counts.size, rows.shape[1]), rows.dtype)
        out[:full] = rows[:full * k].reshape(full, k, rows.shape[1]).max(axis=1)
        if full < counts.size:
            out[full] = rows[full * k:].max(axis=0)
        return out
    return np.maximum.reduceat(rows, starts, axis=0)


class _Level:
    """Blocks of one level: absolute block ``offset + i`` at row i of ``data``
    (a buffer that grows by doubling, ``count`` rows in use)."""

    def __init__(self, block, offset, n_cols, dtype):
        self.block = block
        self.offset = offset
        self.count = 0
        self.data = np.empty((16, n_cols), dtype)

    def write(self, first_abs, rows):
        """Blocks first_abs.. become ``rows``; the level ends after them."""
        i = first_abs - self.offset
        need = i + rows.shape[0]
        if self.count == 0 and i == 0:
            self.data = rows                 # a first write: its blocks, no copy
            self.count = need
            return
        if need > self.data.shape[0]:
            cap = self.data.shape[0]
            while cap < need:
                cap *= 2
            grown = np.empty((cap, self.data.shape[1]), self.data.dtype)
            grown[:self.count] = self.data[:self.count]
            self.data = grown
        self.data[i:need] = rows
        self.count = need

    def take(self, first_abs, n):
        """Blocks first_abs .. first_abs + n - 1, -inf outside the level
        (a view of the level where it holds them all: read only)."""
        i0 = first_abs - self.offset
        if i0 >= 0 and i0 + n <= self.count:
            return self.data[i0:i0 + n]
        out = np.empty((n, self.data.shape[1]), self.data.dtype)
        a, b = max(i0, 0), min(i0 + n, self.count)
        if b <= a:
            out[:] = LOG_MISSING
            return out
        out[:a - i0] = LOG_MISSING
        out[a - i0:b - i0] = self.data[a:b]
        out[b - i0:] = LOG_MISSING
        return out

    @property
    def last_abs(self):
        return self.offset + self.count - 1


class MaxPyramid:
    """The max table of one run's (steps, values), kept up to date with
    ``update`` and read with ``fill`` (see module doc).

    ``source`` identifies the rows (the RunModel): rows once seen must not
    change, which RunModel.append guarantees. Fewer rows than last time (a
    replay rewound), another source or another number of columns rebuild it.
    """

    def __init__(self):
        self.clear()

    def clear(self):
        self._source = None
        self._rows = 0
        self._n_cols = -1
        self._levels = []
        self.base = MIN_BASE
        self.rebuilds = 0

    @property
    def blocks(self):
        """Block sizes of the levels held, finest first."""
        return [level.block for level in self._levels]

    def update(self, source, steps, values, stride=1):
        """Covers rows [0, len(steps)) of ``steps`` (sorted int) and ``values``
        ((n, L), reduced with max). ``stride``: the typical step distance;
        a rebuild makes level 0 at least MIN_BASE strides wide (a run recorded
        every 100 steps would otherwise hold mostly empty blocks)."""
        n = int(steps.shape[0])
        n_cols = int(values.shape[1])
        base = self.base
        if source is not self._source or n_cols != self._n_cols or n < self._rows:
            base = MIN_BASE << max(0, (int(stride) - 1).bit_length())
        if n:
            # a jump of the step counter would make mostly empty blocks: coarser
            # ones keep level 0 within MAX_BLOCKS_PER_ROW blocks a row
            span = int(steps[-1]) - int(steps[0]) + 1
            allowed = MAX_BLOCKS_PER_ROW * n + 4096
            if span // base > allowed:
                base = max(base, 1 << (-(-span // allowed) - 1).bit_length())
        if (source is not self._source or n_cols != self._n_cols or n < self._rows
                or base != self.base):
            self.rebuilds += 1
            self._source, self._n_cols, self._rows, self._levels = source, n_cols, 0, []
            self.base = base
        if n == self._rows or n == 0:
            return
        if not self._levels:
            self._levels = [_Level(self.base, int(steps[0]) // self.base, n_cols, values.dtype)]
        level = self._levels[0]
        first = int(steps[self._rows]) // level.block     # the first block new rows touch
        if self._rows:
            first = min(first, level.last_abs)           # the last block may take more rows
        level.write(first, _block_max(steps, values, level.block, first))
        self._rows = n
        k = 0
        while self._levels[k].count > 1:
            below = self._levels[k]
            first //= 2
            if k + 1 == len(self._levels):
                block = below.block * 2
                self._levels.append(_Level(block, int(steps[0]) // block, n_cols, values.dtype))
            up = self._levels[k + 1]
            # a level made just now is written from its first block
            first = min(first, up.last_abs) if up.count else up.offset
            last = below.last_abs // 2
            pairs = below.take(2 * first, 2 * (last - first + 1))
            up.write(first, np.maximum(pairs[0::2], pairs[1::2]))
            k += 1
        del self._levels[k + 1:]

    def fill(self, image, start, width, block, first_bin=0):
        """Writes bins first_bin.. of ``image`` ((n_bins, L)) for the grid
        (start, width) of view_grid, made of ``block``-step blocks."""
        n_bins = image.shape[0]
        if first_bin >= n_bins:
            return
        if not self._levels:
            image[first_bin:] = LOG_MISSING
            return
        blocks = self.blocks
        if block < blocks[0] or block % blocks[0] or block & (block - 1):
            raise ValueError(f"block {block} is not a level of this pyramid (levels {blocks})")
        # past the top level the run fits in one block of the top: it is the coarsest
        level = self._levels[blocks.index(block) if block in blocks else -1]
        per_bin = int(width) // level.block
        a0 = int(start) // level.block + first_bin * per_bin
        # bins wholly inside the level reduce a view of it, bins wholly
        # outside are missing, the (at most two) over its ends are padded
        i0 = a0 - level.offset
        total = n_bins - first_bin
        b_in = min(total, -(i0 // per_bin) if i0 < 0 else 0)     # first bin from block >= 0
        b_out = min(total, max(b_in, (level.count - i0) // per_bin))
        out = image[first_bin:]
        if b_out > b_in:
            rows = level.data[i0 + b_in * per_bin:i0 + b_out * per_bin]
            np.max(rows.reshape(b_out - b_in, per_bin, -1), axis=1, out=out[b_in:b_out])
        out[:b_in] = LOG_MISSING
        out[b_out:] = LOG_MISSING
        for b in {b_in - 1, b_out}:
            if 0 <= b < total:
                out[b] = level.take(a0 + b * per_bin, per_bin).max(axis=0)
