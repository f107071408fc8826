"""Folders of IDX files, the format of MNIST and Fashion-MNIST (LeCun's: a big-endian magic number that
gives the element type and the number of dimensions, the dimensions, then the uint8 values).

A folder holds the four standard files `IDX_FILES` (``train-images-idx3-ubyte.gz``, …; each gzipped
or not), as Zalando's Fashion-MNIST and Debian's ``dataset-fashion-mnist`` package ship them.
`read_folder` reads all four as uint8 arrays, `train_label_counts` only the training labels (so
`samlib.data.train_size` needs no images). Each file's magic number and size are checked, and images
and labels must agree; every problem raises one `DataError` that names the file, says what was expected
and how to get the files. `samlib.data` turns the arrays into a `samlib.data.Data`.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from samlib.validate import DataError

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions
LABELS_MAGIC = 0x00000801  # uint8, 1 dimension
FILE_LIST = ", ".join(f"{stem}.gz" for stem in IDX_FILES.values())  #: the four files, as messages name them

HOW_TO_GET = (
    "To get them: for Fashion-MNIST `apt-get install dataset-fashion-mnist` (then "
    "`dpkg -L dataset-fashion-mnist` shows the folder, /usr/share/datasets/fashion-mnist); for MNIST "
    "download the four .gz files into one folder. Pass that folder as `idx:<folder>` or as data_dir."
)


def has_idx_files(root: Path) -> bool:
    """Whether `root` is a folder holding all four IDX files (each gzipped or not)."""
    return root.is_dir() and not _missing(root)


def _missing(root: Path) -> list[str]:
    return [f"{stem}.gz" for stem in IDX_FILES.values()
            if not (root / f"{stem}.gz").is_file() and not (root / stem).is_file()]


def read_folder(folder: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) as stored in the four IDX files of `folder`: uint8 images
    (N, H, W) and labels (N,); one label per image and the same image size in both splits."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(
            f"IDX folder {str(root)!r} does not exist or is not a folder; expected a folder with "
            f"{FILE_LIST}. {HOW_TO_GET}"
        )
    x_train, x_train_path = read_idx(root, IDX_FILES["x_train"], IMAGES_MAGIC)
    y_train, y_train_path = read_idx(root, IDX_FILES["y_train"], LABELS_MAGIC)
    x_test, x_test_path = read_idx(root, IDX_FILES["x_test"], IMAGES_MAGIC)
    y_test, y_test_path = read_idx(root, IDX_FILES["y_test"], LABELS_MAGIC)
    for x, x_path, y, y_path in (
        (x_train, x_train_path, y_train, y_train_path),
        (x_test, x_test_path, y_test, y_test_path),
    ):
        if len(x) != len(y):
            raise DataError(
                f"IDX count mismatch: {x_path} holds {len(x)} images but {y_path} holds {len(y)} labels; "
                f"expected one label per image. {HOW_TO_GET}"
            )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"IDX image size mismatch: {x_train_path} has {x_train.shape[1:]} images but {x_test_path} "
            f"has {x_test.shape[1:]}; expected both splits of the same data set. {HOW_TO_GET}"
        )
    return x_train, y_train, x_test, y_test


def train_label_counts(folder: str | os.PathLike[str]) -> np.ndarray:
    """Training images per class of the IDX folder `folder` (the classes present, in class order), from
    its train-labels file alone; the folder must hold all four files."""
    root = Path(folder).expanduser()
    missing = _missing(root)
    if not root.is_dir() or missing:
        what = ("does not exist or is not a folder" if not root.is_dir()
                else f"lacks {', '.join(missing)} (or the same without .gz)")
        raise DataError(f"IDX folder {str(root)!r} {what}; expected a folder with {FILE_LIST}. {HOW_TO_GET}")
    counts = np.bincount(read_idx(root, IDX_FILES["y_train"], LABELS_MAGIC)[0])
    return counts[counts > 0]


def read_idx(root: Path, stem: str, magic: int) -> tuple[np.ndarray, Path]:
    """Parse one uint8 IDX file `stem` (or `stem`.gz) in `root`; checks magic and size. Returns the
    array and the path read."""
    gz, raw = root / f"{stem}.gz", root / stem
    path = gz if gz.is_file() else raw
    if not path.is_file():
        raise DataError(f"missing IDX file {gz} (or {raw.name}) in {root}. {HOW_TO_GET}")
    try:
        blob = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"cannot read IDX file {path}: {e}; expected a valid gzip file. {HOW_TO_GET}"
        ) from e
    dims, header = _header(path, blob, magic)
    kind = "images" if len(dims) == 3 else "labels"
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(blob) != expected:
        what = "truncated" if len(blob) < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {what}: {len(blob)} bytes, expected {expected} for {kind} of shape {dims}; "
            f"re-download it. {HOW_TO_GET}"
        )
    return np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(dims), path


def _header(path: Path, blob: bytes, magic: int) -> tuple[tuple[int, ...], int]:
    """The dimensions a file's header gives and the header's length in bytes; checks the magic number."""
    ndim = magic & 0xFF
    kind = "images" if ndim == 3 else "labels"
    header = 4 + 4 * ndim
    if len(blob) < 4:
        raise DataError(
            f"IDX file {path} is truncated: {len(blob)} bytes, not even the magic number. {HOW_TO_GET}"
        )
    (found,) = struct.unpack(">I", blob[:4])
    if found != magic:
        raise DataError(
            f"IDX file {path} has magic number 0x{found:08x}; expected 0x{magic:08x} (uint8 {kind}, "
            f"{ndim}-D). Is it the right file? {HOW_TO_GET}"
        )
    if len(blob) < header:
        raise DataError(
            f"IDX file {path} is truncated: {len(blob)} bytes, shorter than its {header}-byte header. "
            f"{HOW_TO_GET}"
        )
    dims = struct.unpack(f">{ndim}i", blob[4:header])
    if any(d < 0 for d in dims):
        raise DataError(
            f"IDX file {path} has negative dimensions {dims}; the file is corrupt. {HOW_TO_GET}"
        )
    return dims, header
