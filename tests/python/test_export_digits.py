"""examples/c/data/digits.bin is what tools/export_digits.py writes from
scikit-learn's bundled digits (byte for byte), holds the split that
examples/train_digits.py uses, and decodes to the numbers that
tests/c/test_digits.c checks on the C side."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "c" / "data" / "digits.bin"


def load_tool():
    spec = importlib.util.spec_from_file_location("export_digits", ROOT / "tools" / "export_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool():
    pytest.importorskip("sklearn")
    return load_tool()


def test_committed_file_is_the_export(tool):
    assert DATA.read_bytes() == tool.encode(*tool.split_digits())


def test_script_writes_the_same_file(tool, tmp_path):
    out = tmp_path / "digits.bin"
    assert tool.main(["--out", str(out)]) == 0
    assert out.read_bytes() == DATA.read_bytes()


def test_layout_and_split(tool):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    blob = DATA.read_bytes()
    assert blob[:8] == b"CGDIGITS"
    assert int.from_bytes(blob[8:12], "little") == 1
    x_train, x_test, y_train, y_test, n_classes = tool.decode(blob)
    assert (x_train.shape, x_test.shape, n_classes) == ((1347, 64), (450, 64), 10)
    assert len(blob) == 28 + (1347 + 450) * 65
    digits = load_digits()
    # examples/train_digits.py's split (before its standardisation).
    ref = train_test_split(digits.data, digits.target, test_size=0.25, random_state=0,
                           stratify=digits.target)
    np.testing.assert_array_equal(x_train, ref[0])
    np.testing.assert_array_equal(x_test, ref[1])
    np.testing.assert_array_equal(y_train, ref[2])
    np.testing.assert_array_equal(y_test, ref[3])
    # The constants tests/c/test_digits.c checks.
    assert np.bincount(y_train).tolist() == [133, 136, 133, 137, 136, 136, 136, 134, 131, 135]
    assert np.bincount(y_test).tolist() == [45, 46, 44, 46, 45, 46, 45, 45, 43, 45]
    assert y_train[:10].tolist() == [7, 3, 6, 6, 7, 6, 7, 9, 2, 9]
    assert y_test[:10].tolist() == [2, 0, 4, 9, 4, 1, 2, 4, 6, 7]
    assert int(x_train.sum()) == 421005 and int(x_test.sum()) == 140713


def test_decode_rejects_bad_files(tool):
    blob = DATA.read_bytes()
    with pytest.raises(ValueError, match="magic"):
        tool.decode(b"XXDIGITS" + blob[8:])
    with pytest.raises(ValueError, match="version 2"):
        tool.decode(blob[:8] + (2).to_bytes(4, "little") + blob[12:])
    with pytest.raises(ValueError, match="116832 bytes"):
        tool.decode(blob[:-1])
