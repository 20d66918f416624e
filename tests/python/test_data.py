"""cgrad.utils.data: TensorDataset, DataLoader (batching, drop_last,
zero-copy unshuffled batches, reproducible shuffling, resume), collation and
the errors."""
import numpy as np
import pytest

import cgrad
from cgrad.utils.data import DataLoader, Dataset, TensorDataset, default_collate


def make(n=10, rng=None):
    rng = rng or np.random.default_rng(0)
    return rng.standard_normal((n, 3)), np.arange(n, dtype=np.int64)


def rows(batches, k=1):
    return np.concatenate([b[k].numpy() for b in batches])


def test_unshuffled_batches_cover_the_data_in_order():
    X, y = make(10)
    loader = DataLoader((X, y), batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 == len(batches)
    assert [b[0].shape for b in batches] == [(4, 3), (4, 3), (2, 3)]
    assert all(isinstance(b, list) and len(b) == 2 for b in batches)
    assert batches[0][0].dtype is cgrad.float64 and batches[0][1].dtype is cgrad.int64
    np.testing.assert_array_equal(rows(batches), y)
    np.testing.assert_array_equal(rows(batches, 0), X)


def test_drop_last():
    X, y = make(10)
    loader = DataLoader((X, y), batch_size=4, drop_last=True)
    assert len(loader) == 2
    np.testing.assert_array_equal(rows(list(loader)), y[:8])
    assert len(DataLoader((X, y), batch_size=5, drop_last=True)) == 2
    assert len(DataLoader((X, y), batch_size=20, drop_last=True)) == 0
    assert len(DataLoader((X, y), batch_size=20)) == 1


def test_unshuffled_batches_are_zero_copy_views():
    X, y = make(10)
    loader = DataLoader((X, y), batch_size=4)
    xb, yb = list(loader)[1]
    assert np.shares_memory(xb.numpy(), X) and np.shares_memory(yb.numpy(), y)
    X[5, 0] = 123.0  # the batch is a view of the caller's array
    assert xb.numpy()[1, 0] == 123.0
    t = cgrad.tensor(X)
    (tb,) = [b for b in DataLoader(t, batch_size=3)][1:2]
    assert tb.data_ptr() == t.data_ptr() + 3 * 3 * 8


def test_single_array_yields_tensors():
    X, _ = make(7)
    batches = list(DataLoader(X, batch_size=3))
    assert all(isinstance(b, cgrad.Tensor) for b in batches)
    np.testing.assert_array_equal(np.concatenate([b.numpy() for b in batches]), X)


def test_shuffle_with_seed_is_a_reproducible_permutation_per_epoch():
    X, y = make(50)
    a = DataLoader((X, y), batch_size=8, shuffle=True, seed=7)
    b = DataLoader((X, y), batch_size=8, shuffle=True, seed=7)
    e1a, e2a = rows(list(a)), rows(list(a))
    e1b, e2b = rows(list(b)), rows(list(b))
    np.testing.assert_array_equal(e1a, e1b)
    np.testing.assert_array_equal(e2a, e2b)
    assert sorted(e1a) == list(range(50)) and sorted(e2a) == list(range(50))
    assert not np.array_equal(e1a, e2a)  # a new order each epoch
    assert not np.array_equal(e1a, np.arange(50))
    c = DataLoader((X, y), batch_size=8, shuffle=True, seed=8)
    assert not np.array_equal(rows(list(c)), e1a)
    # the features follow their labels
    for xb, yb in DataLoader((X, y), batch_size=8, shuffle=True, seed=7):
        np.testing.assert_array_equal(xb.numpy(), X[yb.numpy()])


def test_resume_continues_the_same_order():
    X, y = make(30)
    a = DataLoader((X, y), batch_size=4, shuffle=True, seed=3)
    list(a)
    state = a.state_dict()
    expected = rows(list(a))
    b = DataLoader((X, y), batch_size=4, shuffle=True, seed=3)
    b.load_state_dict(state)
    np.testing.assert_array_equal(rows(list(b)), expected)
    with pytest.raises(ValueError, match="seed 3"):
        DataLoader((X, y), shuffle=True, seed=4).load_state_dict(state)


def test_shuffle_without_seed_follows_cgrads_generator():
    X, y = make(40)
    cgrad.manual_seed(11)
    first = rows(list(DataLoader((X, y), batch_size=8, shuffle=True)))
    cgrad.manual_seed(11)
    state = cgrad.get_rng_state()
    again = rows(list(DataLoader((X, y), batch_size=8, shuffle=True)))
    cgrad.set_rng_state(state)
    third = rows(list(DataLoader((X, y), batch_size=8, shuffle=True)))
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, third)
    assert sorted(first) == list(range(40))


def test_tensor_dataset_and_other_dtypes():
    ds = TensorDataset(np.arange(6, dtype=np.int32), np.ones((6, 2), np.float16), cgrad.zeros(6))
    assert len(ds) == 6
    a, b, c = ds[2]
    assert a.dtype is cgrad.int64 and a.item() == 2
    assert b.dtype is cgrad.float32 and b.shape == (2,)
    assert c.shape == ()
    ro = np.arange(4.0)
    ro.setflags(write=False)
    (xb,) = next(iter(DataLoader((ro,), batch_size=4)))
    np.testing.assert_array_equal(xb.numpy(), ro)


def test_mismatched_lengths_raise_naming_them():
    with pytest.raises(ValueError, match=r"size mismatch.*\[10, 9\]"):
        DataLoader((np.zeros((10, 2)), np.zeros(9)))
    with pytest.raises(ValueError, match=r"\[3, 4\]"):
        TensorDataset(cgrad.zeros(3), cgrad.zeros(4))


def test_bad_arguments():
    X, y = make(5)
    for bs in (0, -1, 2.5, None, True):
        with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got {bs!r}"):
            DataLoader((X, y), batch_size=bs)
    with pytest.raises(ValueError, match="seed must be None or an integer >= 0, got -1"):
        DataLoader((X, y), seed=-1)
    with pytest.raises(TypeError, match="dataset must be"):
        DataLoader(42)
    with pytest.raises(TypeError, match="dtype <U1"):
        DataLoader((np.array(["a", "b"]),))
    with pytest.raises(ValueError, match="0-d"):
        TensorDataset(np.float64(1.0))
    with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
        DataLoader((X, y)).load_state_dict({"epoch": -2})


class Squares(Dataset):
    def __len__(self):
        return 7

    def __getitem__(self, i):
        return {"x": np.array([i, i * i], dtype=np.float64), "i": i, "w": 0.5 * i}


def test_map_style_dataset_is_collated():
    batches = list(DataLoader(Squares(), batch_size=3, shuffle=True, seed=0))
    assert [b["x"].shape for b in batches] == [(3, 2), (3, 2), (1, 2)]
    ids = np.concatenate([b["i"].numpy() for b in batches])
    assert sorted(ids) == list(range(7))
    for b in batches:
        np.testing.assert_array_equal(b["x"].numpy()[:, 1], b["i"].numpy() ** 2)
        assert b["w"].dtype is cgrad.float64
    # a custom collate_fn receives the list of samples
    sizes = list(DataLoader(Squares(), batch_size=4, collate_fn=len))
    assert sizes == [4, 3]


def test_default_collate_like_torch(torch):
    samples = [(np.array([1.0, 2.0]), 3, 0.5), (np.array([4.0, 5.0]), 6, 1.5)]
    ours = default_collate(samples)
    from torch.utils.data import default_collate as tcollate
    ref = tcollate(samples)
    assert isinstance(ours, list) and len(ours) == len(ref)
    for a, r in zip(ours, ref):
        np.testing.assert_array_equal(a.numpy(), r.numpy())
        assert str(a.dtype).split(".")[-1] == str(r.dtype).split(".")[-1]


def test_empty_dataset():
    loader = DataLoader((np.zeros((0, 3)),), batch_size=4, shuffle=True)
    assert len(loader) == 0 and list(loader) == []


def test_training_loop_with_batches_is_differentiable():
    X, y = make(12)
    w = cgrad.zeros(3, dtype=cgrad.float64, requires_grad=True)
    for xb, yb in DataLoader((X, y.astype(np.float64)), batch_size=5, shuffle=True, seed=1):
        loss = ((xb @ w - yb) ** 2).mean()
        loss.backward()
    assert w.grad is not None and w.grad.shape == (3,)
