"""The heatmap's multi-level max table (viz.pyramid): bins read from it equal
a direct binning of every row, for any view, with zero, missing and
non-finite cells and one-step spikes; a live append extends it to exactly
what a rebuild makes."""
import numpy as np
import pytest

from cgrad.viz import downsample as ds
from cgrad.viz import pyramid as pm
from cgrad.viz.model import LOG_MISSING, LOG_NONFINITE, LOG_ZERO


def random_run(rng, n, n_layers, stride=1):
    """Increasing steps with gaps, log norms with every sentinel."""
    steps = np.cumsum(rng.integers(1, 2 * stride + 1, n)) + int(rng.integers(0, 500))
    values = rng.normal(-2.0, 1.0, (n, n_layers)).astype(np.float32)
    values[rng.random((n, n_layers)) < 0.05] = LOG_ZERO
    values[rng.random((n, n_layers)) < 0.01] = LOG_NONFINITE
    values[rng.random((n, n_layers)) < 0.03] = LOG_MISSING
    return steps.astype(np.int64), values


def pyramid_bins(pyramid, x0, x1, max_bins, stride=1):
    start, width, n_bins, block = pm.view_grid(x0, x1, max_bins, stride, pyramid.base)
    image = np.full((n_bins, pyramid._n_cols), 7.0, np.float32)   # every bin must be written
    pyramid.fill(image, start, width, block)
    return image, start, width, n_bins, block


@pytest.mark.parametrize("seed", range(6))
def test_pyramid_bins_equal_a_direct_binning_of_every_row(seed):
    rng = np.random.default_rng(seed)
    stride = [1, 1, 3, 10, 1, 2][seed]
    n, n_layers = int(rng.integers(2_000, 30_000)), int(rng.integers(1, 9))
    steps, values = random_run(rng, n, n_layers, stride)
    pyramid = pm.MaxPyramid()
    pyramid.update("run", steps, values, stride)
    used = set()
    for _ in range(40):
        x0 = float(rng.uniform(steps[0] - 300, steps[-1]))
        x1 = float(rng.uniform(x0 + 1, steps[-1] + 300))
        max_bins = int(np.exp(rng.uniform(0, np.log(1500))))      # every zoom level
        start, width, n_bins, block = pm.view_grid(x0, x1, max_bins, stride, pyramid.base)
        if not block:
            continue
        used.add(block)
        got, *_ = pyramid_bins(pyramid, x0, x1, max_bins, stride)
        want = ds.bin_rows(steps, values, start, width, n_bins)
        assert np.array_equal(got, want), (x0, x1, max_bins, block)
    assert len(used) >= 3     # several levels were read


def test_a_one_step_spike_and_single_cells_survive_every_level():
    n, n_layers = 100_000, 4
    steps = np.arange(n)
    values = np.full((n, n_layers), -2.0, np.float32)
    values[:, 1] = LOG_ZERO                         # a dead layer
    values[77_777, 0] = 3.0                          # a one-step explosion
    values[50_001, 2] = LOG_NONFINITE                # one NaN step
    values[:, 3] = LOG_MISSING
    values[12_345, 3] = -1.0                         # one recorded cell in an empty layer
    pyramid = pm.MaxPyramid()
    pyramid.update("run", steps, values)
    for max_bins in (37, 300, 857, 1600, 3000):
        image, start, width, n_bins, block = pyramid_bins(pyramid, 0, n, max_bins)
        assert block and n_bins <= max_bins
        codes = ds.encode(image, -3.0, 4.0)
        spike = int((77_777 - start) // width)
        assert image[spike, 0] == 3.0 and (np.delete(image[:, 0], spike) == -2.0).all()
        assert (codes[:, 1] == ds.CODE_ZERO).all()
        nan_bin = int((50_001 - start) // width)
        assert codes[nan_bin, 2] == ds.CODE_NONFINITE
        assert np.count_nonzero(codes[:, 2] == ds.CODE_NONFINITE) == 1
        cell = int((12_345 - start) // width)
        assert image[cell, 3] == -1.0 and (np.delete(codes[:, 3], cell) == ds.CODE_MISSING).all()


@pytest.mark.parametrize("seed", range(4))
def test_appends_extend_the_pyramid_to_what_a_rebuild_makes(seed):
    rng = np.random.default_rng(100 + seed)
    stride = [1, 4, 1, 25][seed]
    steps, values = random_run(rng, 20_000, 3, stride)
    grown = pm.MaxPyramid()
    cuts = sorted(set(rng.integers(1, steps.size, 12).tolist())) + [steps.size]
    for cut in [1, 2] + cuts:                        # single rows, small and large chunks
        grown.update("run", steps[:cut], values[:cut], stride)
        fresh = pm.MaxPyramid()
        fresh.update("run", steps[:cut], values[:cut], stride)
        assert grown.blocks == fresh.blocks, cut
        for a, b in zip(grown._levels, fresh._levels):
            assert (a.offset, a.count) == (b.offset, b.count), cut
            assert np.array_equal(a.data[:a.count], b.data[:b.count]), cut
    assert grown.rebuilds == 1
    assert fresh._levels[-1].count == 1              # the top level holds the whole run


def test_view_grid_is_whole_blocks_close_to_the_pixel_grid():
    rng = np.random.default_rng(7)
    for _ in range(500):
        x0 = float(rng.uniform(-50, 1e6))
        x1 = x0 + float(rng.uniform(0.5, 3e6))
        max_bins = int(rng.integers(1, 4000))
        stride = int(rng.choice([1, 2, 7, 100]))
        base = pm.MIN_BASE << int(rng.integers(0, 4))
        start, width, n_bins, block = pm.view_grid(x0, x1, max_bins, stride, base)
        plain = ds.bin_grid(x0, x1, max_bins, stride)
        assert 1 <= n_bins <= max_bins                          # never more bins than pixels
        assert start <= x0 and start + n_bins * width >= x1      # the whole view
        if block:
            assert block >= base and block & (block - 1) == 0
            assert start % block == 0 and width % block == 0
            assert width >= plain[1] and width <= plain[1] * (1 + 1 / pm.BLOCKS_PER_BIN) + 1
            assert width // block <= 2 * pm.BLOCKS_PER_BIN + 1
        else:
            assert (start, width, n_bins) == plain


def test_rebuilt_for_another_source_fewer_rows_or_new_layers():
    rng = np.random.default_rng(3)
    steps, values = random_run(rng, 5_000, 3)
    p = pm.MaxPyramid()
    p.update("a", steps, values)
    p.update("a", steps, values)
    assert p.rebuilds == 1
    p.update("b", steps, values)                       # another run
    p.update("b", steps[:3_000], values[:3_000])       # a replay rewound
    wider = np.concatenate([values, values[:, :1]], axis=1)
    p.update("b", steps, wider)                         # a layer appeared
    assert p.rebuilds == 4
    image, start, width, n_bins, _ = pyramid_bins(p, steps[0], steps[-1] + 1, 100)
    assert np.array_equal(image, ds.bin_rows(steps, wider, start, width, n_bins))


def test_sparse_steps_get_coarser_blocks_and_bad_blocks_are_refused():
    steps = np.arange(0, 1_000_000, 100)                 # recorded every 100 steps
    values = np.linspace(-3, 1, steps.size, dtype=np.float32)[:, None]
    p = pm.MaxPyramid()
    p.update("run", steps, values, stride=100)
    assert p.base >= 100 * pm.MIN_BASE // 2 and p._levels[0].count <= steps.size
    image, start, width, n_bins, block = pyramid_bins(p, 0, 1_000_000, 50, stride=100)
    assert block >= p.base
    assert np.array_equal(image, ds.bin_rows(steps, values, start, width, n_bins))
    with pytest.raises(ValueError, match="block 12"):
        p.fill(np.zeros((4, 1), np.float32), 0.0, 48.0, 12)


def test_bin_cache_zooms_without_rebuilding_the_pyramid():
    rng = np.random.default_rng(5)
    steps, values = random_run(rng, 60_000, 5)
    cache = ds.PeakBinCache()
    lo, hi = float(steps[0]), float(steps[-1]) + 1
    for k in range(6):                                  # zoom in 1.5x a time, then a pan
        half = (hi - lo) / 2 / 1.5 ** k
        mid = (lo + hi) / 2 + (k == 5) * half / 3
        x0, x1 = mid - half, mid + half
        image, start, width = cache.bins("run", steps, values, x0, x1, 800)
        _, _, n_bins, _ = cache.grid(x0, x1, 800)
        assert np.array_equal(image, ds.bin_rows(steps, values, start, width, n_bins))
    assert cache.pyramid.rebuilds == 1


def test_a_jump_of_the_step_counter_keeps_the_pyramid_small():
    rng = np.random.default_rng(11)
    steps = np.arange(20_000, dtype=np.int64)
    values = rng.normal(-2, 1, (20_000, 3)).astype(np.float32)
    values[19_999, 1] = LOG_NONFINITE
    steps[15_000:] += 10**12                          # a resumed run that counts samples
    p = pm.MaxPyramid()
    p.update("run", steps[:10_000], values[:10_000])
    p.update("run", steps, values)                    # the jump arrives with an append
    level0 = p._levels[0]
    assert level0.count <= pm.MAX_BLOCKS_PER_ROW * steps.size + 4096
    assert sum(lv.data.nbytes for lv in p._levels) < 50 * values.nbytes
    assert p.rebuilds == 2 and p.base >= 10**12 // (pm.MAX_BLOCKS_PER_ROW * steps.size + 4096)
    for x0, x1, max_bins in [(0, 10**12 + 20_000, 900), (10**12, 10**12 + 5_000, 3),
                             (-5, 10**13, 50)]:
        start, width, n_bins, block = pm.view_grid(x0, x1, max_bins, 1, p.base)
        want = ds.bin_rows(steps, values, start, width, n_bins)
        if block:
            got, *_ = pyramid_bins(p, x0, x1, max_bins)
            assert np.array_equal(got, want), (x0, x1)
    cache = ds.PeakBinCache()
    image, start, width = cache.bins("run", steps, values, 0, 10**12 + 20_000, 900)
    assert (ds.encode(image, -6, 2) == ds.CODE_NONFINITE).sum() == 1
