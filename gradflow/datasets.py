"""Dataset readers and generated sequence tasks, without torchvision.

Readers parse the files as their authors distribute them (IDX for MNIST / Fashion-MNIST, the
pickled "python version" batches for CIFAR-10) and return numpy arrays; `standardize` turns them
into float32 (N, C, H, W) tensors. `augment_pad_crop_flip` is He et al.'s CIFAR augmentation as
one batched op on the tensors' device. `adding_problem` and `copy_task` generate the classic
long-memory RNN tasks from a torch.Generator.

Pure functions: no printing, no config. A missing, truncated or corrupt file raises GradflowError
naming the file (and, for a missing dataset, the `data.root` / `data.download` keys to fix).
Downloads are opt-in, write atomically (temp file, then rename) and fail within seconds when no
network is reachable.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import math
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gradflow.errors import GradflowError
from gradflow.files import atomic_write

# --- where downloads come from (tests point these at a closed loopback port) ---
MNIST_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
CIFAR10_URLS: tuple[str, ...] = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
DOWNLOAD_TIMEOUT_S = 10.0  # seconds a connect or a single read may stall before a mirror counts as unreachable

# MD5 of the distributed files (the values torchvision checks); only downloads are checked, so
# a user's own copy (e.g. already gunzipped) is accepted on its format alone.
MNIST_MD5: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # cifar-10-python.tar.gz

# variant -> (name in messages, torchvision's folder name under root)
MNIST_VARIANTS = {"mnist": ("MNIST", "MNIST"), "fashion_mnist": ("Fashion-MNIST", "FashionMNIST")}
MNIST_FILES = {  # key in the returned dict -> file name without .gz
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_NEEDED = f"{CIFAR10_DIR}/ (data_batch_1..5, test_batch) or {CIFAR10_ARCHIVE}"  # what a message asks for

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT")
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


# ----------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped if it starts with the gzip magic (whatever its suffix)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == _GZIP_MAGIC:
            return gzip.decompress(raw)
        return raw
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise GradflowError(f"{path} is a truncated or corrupt gzip file ({e}); "
                            "replace it with a fresh copy of the original") from None
    except OSError as e:
        raise GradflowError(f"cannot read {path}: {e.strerror or e}") from None


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) into a native-endian array of the header's shape; `ndim`: the
    number of dimensions the file must have (its magic number's last byte), checked before its sizes are
    read (a wrong one was read as a size: "truncated: header says 64x28x28x3651371589x1309283076").

    Header: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a big-endian
    uint32; the data follows in C order, big-endian.
    """
    path = Path(path)
    data = _read_bytes(path)
    bad = f"{path} is not a valid IDX file"
    if len(data) < 4:
        raise GradflowError(f"{bad}: only {len(data)} bytes, shorter than the 4-byte magic number; "
                            "replace it with a fresh copy of the original")
    zero, type_code, dims_said = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in _IDX_DTYPES or dims_said == 0:
        raise GradflowError(f"{bad}: magic number 0x{data[:4].hex()} (expected 0x0000 + type byte "
                            f"08/09/0B/0C/0D/0E + ndim >= 1); check that the path names the right file")
    if ndim is not None and dims_said != ndim:
        named = f" (idx{ndim} in its name)" if f"idx{ndim}" in path.name else ""
        raise GradflowError(f"{bad}: its magic number 0x{data[:4].hex()} gives {dims_said} dimensions where this "
                            f"file has {ndim}{named}; check that the path names the right file, or replace it with "
                            "a fresh copy of the original")
    header = 4 + 4 * dims_said
    if len(data) < header:
        raise GradflowError(f"{bad}: truncated header ({len(data)} bytes, {dims_said} dimensions need {header}); "
                            "replace it with a fresh copy of the original")
    dims = struct.unpack(f">{dims_said}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = math.prod(dims) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        what = "truncated" if got < expected else "too long"
        raise GradflowError(f"{path} is {what}: header says {'x'.join(map(str, dims))} {dtype.name} = "
                            f"{expected} data bytes, file has {got}; replace it with a fresh copy of the original")
    # astype copies into a writable, native-endian array (frombuffer alone is read-only)
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _mnist_dirs(root: Path, variant: str) -> list[Path]:
    """Where the variant's four files may be: its own folders first, then `root` itself. MNIST and
    Fashion-MNIST files have the same names, so files at the top of `root` are MNIST's unless the folder's
    name, or its parent's, says Fashion (data/FashionMNIST, ~/fashion-mnist, FashionMNIST/raw):
    data=fashion_mnist trained on MNIST's files there, silently."""
    tv_name = MNIST_VARIANTS[variant][1]
    own = [root / variant, root / variant / "raw", root / tv_name / "raw", root / tv_name]
    # (the folder as given, not where a link leads; its parent too: torchvision's FashionMNIST/raw)
    fashion_named = any("fashion" in part.lower() for part in root.absolute().parts[-2:])
    return own + [root] if fashion_named == (variant == "fashion_mnist") else own


def _find_idx(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):  # the unpacked file first: no gunzip needed
        if candidate.is_file():
            return candidate
    return None


def _check_root(root: Path, what: str) -> None:
    """A data.root that exists must be a folder (a file was told to hold the files "in afile/mnist/")."""
    if root.exists() and not root.is_dir():
        raise GradflowError(f"data.root={root} is a file, not a folder; give the folder that holds (or is to "
                            f"hold) the {what} files")


def _files_list(names) -> str:
    return ", ".join(f"{n}(.gz)" for n in names)


def locate_mnist(root: str | Path, variant: str = "mnist", download: bool = False) -> dict[str, Path] | None:
    """The four IDX files of MNIST or Fashion-MNIST under `root` (see load_mnist), without reading them:
    the first folder holding all four. None where they are missing and `download` will fetch them; else a
    missing file raises GradflowError naming what to put where (a sweep asks this before it starts)."""
    if variant not in MNIST_VARIANTS:
        raise GradflowError(f"MNIST variant {variant!r} is unknown; valid choices: {', '.join(MNIST_VARIANTS)}")
    root = Path(root).expanduser()
    _check_root(root, MNIST_VARIANTS[variant][0])
    looked = [(folder, {key: _find_idx(folder, name) for key, name in MNIST_FILES.items()})
              for folder in _mnist_dirs(root, variant)]
    paths = next((found for _, found in looked if all(found.values())), None)
    if paths is not None or download:
        return paths
    display = MNIST_VARIANTS[variant][0]
    # a folder holding some of the files: name the ones it lacks (the user sees files there)
    partial, found = max(looked, key=lambda f: sum(p is not None for p in f[1].values()))
    missing = [MNIST_FILES[key] for key, p in found.items() if p is None]
    if len(missing) < len(MNIST_FILES):
        folders = [m for m in missing if (partial / m).is_dir() or (partial / f"{m}.gz").is_dir()]
        said = f" ({', '.join(folders)} there {'is a folder' if len(folders) == 1 else 'are folders'}, " \
               "not the file)" if folders else ""  # (a folder of the file's name read as the file missing)
        raise GradflowError(f"data.root={root}: {partial}/ has {len(MNIST_FILES) - len(missing)} of the "
                            f"4 {display} files; put {_files_list(missing)} there too{said}")
    top = all(_find_idx(root, name) for name in MNIST_FILES.values())  # (the other variant's, by the folder's name)
    raise GradflowError(f"data.root={root} has no {display} files; put {_files_list(MNIST_FILES.values())} in "
                        f"{root / variant}/ (from {MNIST_MIRRORS[variant][0]}, or set data.download=true where a "
                        "network is reachable)"
                        + (f"; the files at the top of {root}/ are taken as "
                           + ("MNIST's, the two having the same names, as the folder's name does not say Fashion"
                              if variant == "fashion_mnist" else "Fashion-MNIST's, as the folder's name says")
                           if top else ""))


def load_mnist(root: str | Path, variant: str = "mnist", download: bool = False) -> dict[str, np.ndarray]:
    """MNIST or Fashion-MNIST from the four IDX files (each plain or .gz).

    Looks in `root/<variant>`, `root/<variant>/raw`, torchvision's `root/MNIST/raw` (`root/FashionMNIST/raw`)
    and then `root` itself (for Fashion-MNIST only where its name says so, `_mnist_dirs`), taking the first
    folder that has all four files. With `download`,
    missing files are fetched into `root/<variant>/`.

    Returns {"x_train": uint8 (N, H, W), "y_train": int64 (N,), "x_test": uint8 (M, H, W),
    "y_test": int64 (M,)}; H = W = 28 for the real datasets.
    """
    paths = locate_mnist(root, variant, download)
    if paths is None:
        paths = _download_mnist(Path(root).expanduser() / variant, variant)
    display = MNIST_VARIANTS[variant][0]

    out = {key: read_idx(p, 3 if key.startswith("x_") else 1) for key, p in paths.items()}
    for split in ("train", "test"):
        x, y = out[f"x_{split}"], out[f"y_{split}"]
        xp, yp = paths[f"x_{split}"], paths[f"y_{split}"]
        if x.ndim != 3 or x.dtype != np.uint8:
            raise GradflowError(f"{xp} holds {x.dtype} {x.shape}, not uint8 images (N, H, W); "
                                "check that the path names the images file")
        if y.ndim != 1 or y.dtype != np.uint8:
            raise GradflowError(f"{yp} holds {y.dtype} {y.shape}, not uint8 labels (N,); "
                                "check that the path names the labels file")
        if len(x) != len(y):
            raise GradflowError(f"{xp} has {len(x)} images but {yp} has {len(y)} labels; "
                                "replace them with matching copies of the originals")
        if not len(x):  # (an empty training set failed inside a step; an empty test set ended ok, untested)
            raise GradflowError(f"{xp} holds no images; replace it with a copy of the original")
        if not x.shape[1] or not x.shape[2]:  # (images of no pixels trained "ok" on zero-element layers)
            raise GradflowError(f"{xp} holds images of {x.shape[1]}x{x.shape[2]} pixels ({display}'s are 28x28); "
                                "replace it with a copy of the original")
        _check_labels(y, yp, display)
        out[f"y_{split}"] = y.astype(np.int64)
    if out["x_train"].shape[1:] != out["x_test"].shape[1:]:
        raise GradflowError(f"{paths['x_train']} has images of {out['x_train'].shape[1:]} but "
                            f"{paths['x_test']} of {out['x_test'].shape[1:]}; they must come from one dataset")
    return out


def _check_labels(labels: np.ndarray, path: Path, display: str, classes: int = 10) -> None:
    """Labels within the dataset's classes 0..classes-1 (a wrong file would fail later inside the loss)."""
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < classes:
        bad = int(labels.max()) if int(labels.max()) >= classes else int(labels.min())
        raise GradflowError(f"{path} holds label {bad}, but {display} has classes 0-{classes - 1}; "
                            "replace it with a copy of the original")


def _download_mnist(target: Path, variant: str) -> dict[str, Path]:
    display = MNIST_VARIANTS[variant][0]
    paths = {}
    for key, name in MNIST_FILES.items():
        existing = _find_idx(target, name)
        if existing is not None:
            paths[key] = existing
            continue
        gz = f"{name}.gz"
        try:
            _download([m + gz for m in MNIST_MIRRORS[variant]], target / gz, MNIST_MD5[variant].get(gz))
        except _DownloadError as e:
            raise GradflowError(
                f"data.download=true but downloading {display} failed ({e}); put "
                f"{_files_list(MNIST_FILES.values())} in {target}/ by hand") from None
        paths[key] = target / gz
    return paths


# ----------------------------------------------------------------------------------------------
# downloads


class _DownloadError(Exception):
    """Every mirror failed; the message is a short one-line reason."""


def _fetch(url: str, dest: Path, md5: str | None) -> None:
    """Stream url into a temp file next to dest, check its MD5, then rename it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: str) -> None:
        digest = hashlib.md5()
        # the timeout bounds the connect and each read, so a dead network fails within seconds while a
        # slow but live download (CIFAR-10 is 170 MB) is not cut off. Note: DNS lookups are not bounded
        # by it; an unresolvable host fails at once on a machine without a resolver.
        with open(tmp, "wb") as f, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            while chunk := resp.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
        if md5 is not None and digest.hexdigest() != md5:
            raise _DownloadError(f"{url}: MD5 {digest.hexdigest()} != expected {md5}")

    atomic_write(dest, write)  # a failed or cut download leaves no file behind


def _download(urls: tuple[str, ...] | list[str], dest: Path, md5: str | None) -> None:
    """Fetch `dest` from the first of `urls` that serves it; where none does, the folders made for it go too
    (a failed download left an empty data/fashion_mnist/ behind)."""
    made = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]  # (deepest first)
    reasons = []
    for url in urls:
        try:
            _fetch(url, dest, md5)
            return
        except _DownloadError as e:
            reasons.append(str(e))
        except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts, resets
            reason = getattr(e, "reason", None) or e
            if isinstance(reason, OSError) and reason.strerror:
                reason = reason.strerror
            reasons.append(f"{url}: {reason}")
    for folder in made:
        with contextlib.suppress(OSError):  # (only where still empty)
            folder.rmdir()
    raise _DownloadError("; ".join(r.replace("\n", " ") for r in reasons) or "no mirror configured")


# ----------------------------------------------------------------------------------------------
# CIFAR-10 (python version)


try:
    from numpy._core.multiarray import _reconstruct as _np_reconstruct  # numpy >= 2
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR batch holds (dict, list, bytes, str, int, numpy arrays)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("__builtin__", "bytes"), ("builtins", "bytes"),  # (protocol 2 writes empty bytes as a call of bytes())
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        if name == "bytes":  # empty bytes only: bytes(300_000_000) in a 114-byte file would take 300 MB
            return _empty_bytes
        if name == "_reconstruct":  # the originals name numpy.core (numpy 1.x), numpy >= 2 writes numpy._core
            return _np_reconstruct
        return super().find_class(module, name)


def _empty_bytes(*args) -> bytes:
    """bytes() as a protocol-2 pickle calls it for b"", and nothing else."""
    if args:
        raise pickle.UnpicklingError(f"unexpected call bytes{args!r:.40}")
    return b""


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch -> (uint8 (N, 3, 32, 32), int64 (N,))."""
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise GradflowError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # a truncated or foreign pickle fails in many ways (EOFError, UnpicklingError, ...)
        raise GradflowError(f"{path} is not a readable CIFAR-10 batch ({type(e).__name__}: {e}); "
                            "replace it with a fresh copy from cifar-10-python.tar.gz") from None
    if not isinstance(batch, dict):
        raise GradflowError(f"{path} is not a CIFAR-10 batch (holds a {type(batch).__name__}, not a dict); "
                            "replace it with a fresh copy from cifar-10-python.tar.gz")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
            or labels is None or len(labels) != len(data):
        shape, dtype = getattr(data, "shape", None), getattr(data, "dtype", type(data).__name__)
        raise GradflowError(f"{path} is not a CIFAR-10 batch (needs b'data' uint8 (N, 3072) and N b'labels', "
                            f"got data {dtype} {shape} and {None if labels is None else len(labels)} labels); "
                            "replace it with a fresh copy from cifar-10-python.tar.gz")
    if not len(data):
        raise GradflowError(f"{path} holds no images; replace it with a fresh copy from cifar-10-python.tar.gz")
    given = np.asarray(labels) if not isinstance(labels, (str, bytes)) else np.asarray([])
    if given.shape != (len(data),) or not (np.issubdtype(given.dtype, np.integer)
                                          or given.dtype == object and all(isinstance(v, int) for v in given)):
        # (a text, labels of two columns or floats: a ValueError that named no file, or 1.7 read as class 1)
        what = "a text" if isinstance(labels, (str, bytes)) else f"{given.dtype} of shape {given.shape}"
        raise GradflowError(f"{path} is not a CIFAR-10 batch: its b'labels' must be {len(data)} whole numbers, "
                            f"not {what}; replace it with a fresh copy from cifar-10-python.tar.gz")
    labels = given.astype(np.int64)
    _check_labels(labels, path, "CIFAR-10")
    # each row is the 1024 red, then green, then blue values of a 32x32 image, rows in C order
    return data.reshape(-1, 3, 32, 32).copy(), labels


def _cifar_complete(folder: Path) -> bool:
    return all((folder / b).is_file() for b in (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH))


def _extract_cifar(archive: Path, root: Path) -> Path:
    """Extract the batches from cifar-10-python.tar.gz into root/cifar-10-batches-py; return that folder."""
    target = root / CIFAR10_DIR
    try:
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".cifar-extract-"))
    except OSError as e:  # (a read-only data.root: it was "building the data or the model failed: OSError")
        raise GradflowError(f"{archive} is unpacked into {target}/, but {root} cannot be written ({e.strerror}); "
                            f"unpack it into {target}/ with a user who may write there (tar xzf {CIFAR10_ARCHIVE}), "
                            "or copy it to a writable folder and set data.root to that") from None
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                if hasattr(tarfile, "data_filter"):  # refuse absolute paths, '..', links out (3.11.4+)
                    tar.extractall(tmp, filter="data")
                else:
                    tar.extractall(tmp)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise GradflowError(f"{archive} is a truncated or corrupt archive ({e}); "
                                f"delete it and put a fresh copy of {CIFAR10_ARCHIVE} there") from None
        if not _cifar_complete(tmp / CIFAR10_DIR):
            raise GradflowError(f"{archive} does not hold {CIFAR10_DIR}/ with data_batch_1..5 and test_batch; "
                                f"put the original {CIFAR10_ARCHIVE} there")
        # move in only what is missing, so a partial folder the user made is completed, not replaced
        target.mkdir(exist_ok=True)
        for name in os.listdir(tmp / CIFAR10_DIR):
            if not (target / name).exists():
                os.replace(tmp / CIFAR10_DIR / name, target / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def locate_cifar10(root: str | Path, download: bool = False) -> Path | None:
    """The folder holding CIFAR-10's six batches under `root` (see load_cifar10), without reading them; None
    where the archive is there to extract, or `download` will fetch it. Else GradflowError names what to
    put where (a sweep asks this before it starts)."""
    root = Path(root).expanduser()
    _check_root(root, "CIFAR-10")
    folder = next((d for d in (root / CIFAR10_DIR, root) if _cifar_complete(d)), None)
    if folder is not None or download or (root / CIFAR10_ARCHIVE).is_file():
        return folder
    batches = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)
    partial = max((root / CIFAR10_DIR, root), key=lambda d: sum((d / b).is_file() for b in batches))
    missing = [b for b in batches if not (partial / b).is_file()]
    if len(missing) < len(batches):  # the user sees batches there: name the others
        raise GradflowError(f"data.root={root}: {partial}/ has {len(batches) - len(missing)} of the 6 "
                            f"CIFAR-10 batches; put {', '.join(missing)} there too (or {CIFAR10_ARCHIVE} in {root}/)")
    raise GradflowError(f"data.root={root} has no CIFAR-10 files; put {CIFAR10_NEEDED} in {root}/ "
                        f"({CIFAR10_ARCHIVE} from {CIFAR10_URLS[0].rsplit('/', 1)[0]}/, or set data.download=true "
                        "where a network is reachable)")


def load_cifar10(root: str | Path, download: bool = False) -> dict[str, np.ndarray]:
    """CIFAR-10 from the python-version batches (data_batch_1..5, test_batch).

    `root` may be the folder holding `cifar-10-batches-py/`, that folder itself, or a folder
    holding `cifar-10-python.tar.gz` (extracted into root/cifar-10-batches-py). With `download`,
    the archive is fetched into `root` first.

    Returns {"x_train": uint8 (50000, 3, 32, 32), "y_train": int64 (50000,),
    "x_test": uint8 (10000, 3, 32, 32), "y_test": int64 (10000,)} (fewer rows for smaller files).
    """
    root = Path(root).expanduser()
    folder = locate_cifar10(root, download)
    if folder is None:
        archive = root / CIFAR10_ARCHIVE
        if not archive.is_file():
            try:
                _download(CIFAR10_URLS, archive, CIFAR10_MD5)
            except _DownloadError as e:
                raise GradflowError(f"data.download=true but downloading CIFAR-10 failed ({e}); "
                                    f"put {CIFAR10_NEEDED} in {root}/ by hand") from None
        folder = _extract_cifar(archive, root)

    train = [_read_cifar_batch(folder / b) for b in CIFAR10_TRAIN_BATCHES]
    x_test, y_test = _read_cifar_batch(folder / CIFAR10_TEST_BATCH)
    return {
        "x_train": np.concatenate([x for x, _ in train]),
        "y_train": np.concatenate([y for _, y in train]),
        "x_test": x_test,
        "y_test": y_test,
    }


# ----------------------------------------------------------------------------------------------
# normalization and augmentation


def standardize(x_train, x_test) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel standardization with the training set's mean and std (population, ddof=0).

    Accepts numpy arrays or tensors of shape (N, H, W) (one channel, e.g. MNIST) or (N, C, H, W);
    returns float32 tensors (N, C, H, W) on the inputs' device. The test set is scaled with the
    *training* statistics. A constant channel (std 0) is only centred.
    """
    def as_nchw(x) -> torch.Tensor:
        x = torch.as_tensor(x).to(torch.float32, copy=True)  # copy: the in-place scaling below must not touch the input
        return x.unsqueeze(1) if x.ndim == 3 else x

    train, test = as_nchw(x_train), as_nchw(x_test)
    if train.ndim != 4 or test.ndim != 4 or train.shape[1] != test.shape[1]:
        raise ValueError(f"standardize needs (N, H, W) or (N, C, H, W) with equal C, got "
                         f"{tuple(train.shape)} and {tuple(test.shape)}")
    # float32 reductions on torch use cascaded sums: accurate to ~1e-6 even over 50M pixels
    var, mean = torch.var_mean(train, dim=(0, 2, 3), correction=0, keepdim=True)  # (1, C, 1, 1)
    std = var.sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return train.sub_(mean).div_(std), test.sub_(mean).div_(std)


def augment_pad_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """He et al. 2016's CIFAR augmentation, batched: zero-pad by `pad`, take a random HxW crop, and
    flip it horizontally with probability 1/2, independently per image.

    x: (B, C, H, W) on any device; returns a new tensor of the same shape, dtype and device.
    Zero padding after `standardize` pads with the channel mean, as in the paper (which pads after
    mean subtraction). The offsets and flips are drawn on the generator's device and then moved to
    x's device: a CPU generator therefore gives the same crops for the same seed on CPU and GPU, and
    the draws are three (B,) vectors, a negligible host-to-device copy (not a sync).
    """
    if x.ndim != 4:
        raise ValueError(f"augment_pad_crop_flip needs x of shape (B, C, H, W), got {tuple(x.shape)}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    B, C, H, W = x.shape
    g_dev = generator.device
    top = torch.randint(0, 2 * pad + 1, (B,), generator=generator, device=g_dev).to(x.device)
    left = torch.randint(0, 2 * pad + 1, (B,), generator=generator, device=g_dev).to(x.device)
    flip = torch.randint(0, 2, (B,), generator=generator, device=g_dev).to(x.device, torch.bool)

    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H + 2 pad, W + 2 pad), zeros outside
    rows = top[:, None] + torch.arange(H, device=x.device)  # (B, H) source row of each output row
    cols = left[:, None] + torch.arange(W, device=x.device)  # (B, W) source column of each output column
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flip reads the window right to left
    batch = torch.arange(B, device=x.device)[:, None, None]
    # advanced indices split by the channel slice: the result is (B, H, W, C)
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------------------------
# generated sequence tasks


def adding_problem(n: int, T: int, generator: torch.Generator, *, device: torch.device | str | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The adding problem (Hochreiter & Schmidhuber 1997), in the variant of Le et al. 2015 and
    Arjovsky et al. 2016: channel 0 holds T values ~ U[0, 1], channel 1 a marker that is 1 at
    exactly two positions, one drawn uniformly from the first half [0, T//2) and one from the
    second half [T//2, T); the target is the sum of the two marked values.

    Returns x float32 (n, T, 2) and y float32 (n, 1), on `device` (default: the generator's).
    Predicting the constant 1.0 scores MSE = Var(U1 + U2) = 1/6 ~ 0.167, the baseline to beat.
    """
    if T < 2:
        raise GradflowError(f"adding problem: sequence length T={T} must be >= 2 (one marker in each half)")
    g_dev = generator.device
    values = torch.rand(n, T, generator=generator, device=g_dev)  # (n, T)
    first = torch.randint(0, T // 2, (n,), generator=generator, device=g_dev)
    second = torch.randint(T // 2, T, (n,), generator=generator, device=g_dev)
    markers = torch.zeros(n, T, device=g_dev)
    rows = torch.arange(n, device=g_dev)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = torch.stack([values, markers], dim=-1)  # (n, T, 2)
    y = (values[rows, first] + values[rows, second]).unsqueeze(1)  # (n, 1)
    device = g_dev if device is None else device
    return x.to(device), y.to(device)


def copy_task(n: int, T: int, generator: torch.Generator, *, n_symbols: int = 8, copy_len: int = 10,
              device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The copy (memory) task of Arjovsky et al. 2016: remember `copy_len` symbols over a delay T.

    Classes: 0 = blank, 1..n_symbols = data symbols, n_symbols + 1 = delimiter. A sequence has
    length L = T + 2 * copy_len:

        t:       0 .. copy_len-1 | copy_len .. copy_len+T-2 | copy_len+T-1 | copy_len+T .. L-1
        input:   s_1 .. s_K       | blank (T - 1 steps)      | delimiter    | blank (K steps)
        target:  blank            | blank                    | blank        | s_1 .. s_K

    with K = copy_len and s_i uniform over 1..n_symbols.

    Returns x float32 one-hot (n, L, n_symbols + 2) and y int64 class per step (n, L) with values in
    0..n_symbols (n_symbols + 1 output classes), on `device` (default: the generator's), so that
    `F.cross_entropy(logits.transpose(1, 2), y)` is the per-step loss. The memoryless baseline
    (blank, then uniform over the symbols at the last K steps) scores `copy_task_baseline(...)`.
    """
    if T < 1 or copy_len < 1 or n_symbols < 1:
        raise GradflowError(f"copy task: T={T}, copy_len={copy_len} and n_symbols={n_symbols} must all be >= 1")
    g_dev = generator.device
    L = T + 2 * copy_len
    symbols = torch.randint(1, n_symbols + 1, (n, copy_len), generator=generator, device=g_dev)
    tokens = torch.zeros(n, L, dtype=torch.int64, device=g_dev)  # blank everywhere, then fill
    tokens[:, :copy_len] = symbols
    tokens[:, copy_len + T - 1] = n_symbols + 1  # the delimiter: "start writing now"
    y = torch.zeros(n, L, dtype=torch.int64, device=g_dev)
    y[:, copy_len + T:] = symbols
    x = F.one_hot(tokens, n_symbols + 2).to(torch.float32)  # (n, L, n_symbols + 2)
    device = g_dev if device is None else device
    return x.to(device), y.to(device)


def copy_task_baseline(T: int, n_symbols: int = 8, copy_len: int = 10) -> float:
    """Per-step cross-entropy (nats) of the memoryless strategy on `copy_task`: predict blank, and
    uniform over the symbols at the last copy_len steps; = copy_len * ln(n_symbols) / (T + 2 copy_len)."""
    return copy_len * math.log(n_symbols) / (T + 2 * copy_len)
