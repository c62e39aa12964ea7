"""Dataset readers on tiny files written in the real distribution formats, the augmentation, and
the generated sequence tasks, each checked against an independent recomputation."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import json
import math
import pickle
import struct
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradflow import datasets
from gradflow.datasets import (adding_problem, augment_pad_crop_flip, copy_task, copy_task_baseline,
                               load_cifar10, load_mnist, read_idx, standardize)
from gradflow.errors import GradflowError

CLOSED_PORT = "http://127.0.0.1:9/"  # the discard port: nothing listens, the connect is refused at once

# --- writers for the real formats -----------------------------------------------------------------


def idx_bytes(arr: np.ndarray, type_code: int) -> bytes:
    """IDX as LeCun documents it: 0x0000, type byte, ndim, big-endian uint32 dims, big-endian data."""
    be = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_code]
    header = bytes([0, 0, type_code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(be).tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_mnist(folder: Path, gz: bool, seed: int = 0, n_train: int = 5, n_test: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for key, name in datasets.MNIST_FILES.items():
        data = idx_bytes(arrays[key], 0x08)
        # the real magic numbers: 2051 for image files, 2049 for label files
        assert data[:4] == struct.pack(">I", 2051 if key.startswith("x") else 2049)
        write(folder / (name + (".gz" if gz else "")), data, gz)
    return arrays


def cifar_row(img: np.ndarray) -> np.ndarray:
    """One image (3, 32, 32) as the CIFAR page describes a row: 1024 red, 1024 green, 1024 blue, row-major."""
    return np.concatenate([img[0].ravel(), img[1].ravel(), img[2].ravel()])


def make_cifar(folder: Path, n: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Batches as the originals: a dict with bytes keys, b'data' uint8 (N, 3072), b'labels' a list, protocol 2."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = {}, {}
    for name in (*datasets.CIFAR10_TRAIN_BATCHES, datasets.CIFAR10_TEST_BATCH):
        images[name] = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        labels[name] = rng.integers(0, 10, n).tolist()
        batch = {b"batch_label": f"{name} of 5".encode(), b"labels": labels[name],
                 b"data": np.stack([cifar_row(im) for im in images[name]]),
                 b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
        data = pickle.dumps(batch, protocol=2)
        if name == "data_batch_1":  # as written by numpy 1.x (the originals): numpy.core, not numpy._core
            data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / name).write_bytes(data)
    train = datasets.CIFAR10_TRAIN_BATCHES
    return {"x_train": np.concatenate([images[b] for b in train]),
            "y_train": np.concatenate([labels[b] for b in train]).astype(np.int64),
            "x_test": images["test_batch"], "y_test": np.array(labels["test_batch"], dtype=np.int64)}


def assert_same(got: dict, want: dict, label_dtype=np.int64) -> None:
    assert set(got) == {"x_train", "y_train", "x_test", "y_test"}
    for key in got:
        assert got[key].dtype == (np.uint8 if key.startswith("x") else label_dtype), key
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# --- IDX ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("type_code,dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16),
                                             (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)])
def test_read_idx_every_type(tmp_path, gz, type_code, dtype):
    rng = np.random.default_rng(1)
    arr = (rng.standard_normal((2, 3, 4)) * 100).astype(dtype)
    path = write(tmp_path / "a-idx3", idx_bytes(arr, type_code), gz)
    got = read_idx(path)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative and got.flags.writeable
    np.testing.assert_array_equal(got, arr)


@pytest.mark.parametrize("variant,subdir", [("mnist", ""), ("mnist", "mnist"), ("mnist", "mnist/raw"),
                                            ("mnist", "MNIST/raw"), ("fashion_mnist", "fashion_mnist"),
                                            ("fashion_mnist", "FashionMNIST/raw")])
@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_finds_each_layout(tmp_path, variant, subdir, gz):
    want = make_mnist(tmp_path / subdir, gz)
    assert_same(load_mnist(tmp_path, variant, download=False), want)


def test_fashion_mnist_never_reads_mnists_files_at_the_top_of_the_root(tmp_path):
    # the two datasets' files have the same names: data=fashion_mnist read MNIST's files at the top of data.root
    # before its own folder, silently, and with only MNIST's there it trained on them as Fashion-MNIST's
    tmp_path = tmp_path / "x"  # (the folder's name and its parent's count, and this test's tmp_path says fashion)
    root = tmp_path / "data"
    mnist = make_mnist(root, gz=True, seed=1)
    fashion = make_mnist(root / "fashion_mnist", gz=True, seed=2, n_train=7)
    assert_same(load_mnist(root, "fashion_mnist", download=False), fashion)
    assert_same(load_mnist(root, "mnist", download=False), mnist)
    only_mnist = tmp_path / "only"
    make_mnist(only_mnist, gz=False)
    with pytest.raises(GradflowError) as e:
        load_mnist(only_mnist, "fashion_mnist", download=False)
    assert one_line(e).endswith(f"; the files at the top of {only_mnist}/ are taken as MNIST's, the two having "
                                "the same names, as the folder's name does not say Fashion")
    # a folder named for Fashion-MNIST holds its files at the top, and is not read as MNIST
    named = tmp_path / "FashionMNIST-files"
    fashion = make_mnist(named, gz=False, seed=3)
    assert_same(load_mnist(named, "fashion_mnist", download=False), fashion)
    with pytest.raises(GradflowError, match="taken as Fashion-MNIST's, as the folder's name says"):
        load_mnist(named, "mnist", download=False)
    # torchvision's FashionMNIST/raw given as the root, and a link named for Fashion-MNIST to a folder that is not:
    # the path as given counts (the folder's own name alone refused both, and read them as MNIST)
    raw = tmp_path / "FashionMNIST" / "raw"
    fashion = make_mnist(raw, gz=True, seed=4)
    assert_same(load_mnist(raw, "fashion_mnist", download=False), fashion)
    with pytest.raises(GradflowError, match="taken as Fashion-MNIST's"):
        load_mnist(raw, "mnist", download=False)
    link = tmp_path / "links" / "fashion"
    link.parent.mkdir()
    link.symlink_to(tmp_path / "only")  # (its files are the test's, any will do)
    assert_same(load_mnist(link, "fashion_mnist", download=False), load_mnist(tmp_path / "only", "mnist"))


def test_read_idx_truncated_and_corrupt(tmp_path):
    good = idx_bytes(np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28), 0x08)
    cases = {
        "short-data": (good[:-1], False, "truncated"),
        "long-data": (good + b"\0", False, "too long"),
        "short-header": (good[:10], False, "truncated header"),
        "tiny": (good[:3], False, "magic number"),
        "bad-magic": (b"\x12\x34" + good[2:], False, "magic number"),
        "bad-type": (good[:2] + b"\x07" + good[3:], False, "magic number"),
        "short-data-gz": (good[:-5], True, "truncated"),
    }
    for name, (data, gz, words) in cases.items():
        path = write(tmp_path / name, data, gz)
        with pytest.raises(GradflowError) as e:
            read_idx(path)
        assert str(path) in one_line(e) and words in str(e.value), name
    cut_gzip = write(tmp_path / "cut.gz", gzip.compress(good)[:-20])  # the gzip stream itself is cut
    with pytest.raises(GradflowError, match="truncated or corrupt gzip") as e:
        read_idx(cut_gzip)
    assert str(cut_gzip) in one_line(e)


def test_an_idx_file_of_another_dimension_count_says_so(tmp_path):
    # its magic number's last byte, 5 where an images file has 3: two bytes of pixels were read as sizes, and the
    # file called "truncated: header says 64x28x28x3651371589x1309283076 uint8"
    make_mnist(tmp_path, gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    data = images.read_bytes()
    images.write_bytes(data[:3] + b"\x05" + data[4:])
    with pytest.raises(GradflowError) as e:
        load_mnist(tmp_path, "mnist")
    assert one_line(e) == (f"{images} is not a valid IDX file: its magic number 0x00000805 gives 5 dimensions where "
                           "this file has 3 (idx3 in its name); check that the path names the right file, or replace "
                           "it with a fresh copy of the original")
    assert read_idx(tmp_path / "train-labels-idx1-ubyte", 1).ndim == 1  # (the labels' own count)


def test_load_mnist_rejects_mismatched_files(tmp_path):
    make_mnist(tmp_path, gz=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.zeros(4, np.uint8), 0x08))  # 4 labels for 5 images
    with pytest.raises(GradflowError, match="5 images but .* 4 labels") as e:
        load_mnist(tmp_path, "mnist")
    assert str(labels) in one_line(e)


def test_a_subset_keeps_each_image_with_its_own_label(tmp_path):
    """data.subset=k: the first k training images and their labels, paired as in the files (each image
    here is one grey level that encodes its label), the test set whole."""
    from gradflow.config import compose
    from gradflow.data import build

    rng = np.random.default_rng(0)
    labels = {"y_train": rng.permutation(np.arange(12) % 10).astype(np.uint8),
              "y_test": np.arange(4, dtype=np.uint8)}
    for split in ("train", "test"):
        images = np.repeat(10 + 20 * labels[f"y_{split}"], 28 * 28).reshape(-1, 28, 28).astype(np.uint8)
        write(tmp_path / "mnist" / datasets.MNIST_FILES[f"x_{split}"], idx_bytes(images, 0x08))
        write(tmp_path / "mnist" / datasets.MNIST_FILES[f"y_{split}"], idx_bytes(labels[f"y_{split}"], 0x08))
    data = build(compose(["data=mnist", f"data.root={tmp_path}", "data.subset=7", "train.batch_size=4"]).data,
                 torch.device("cpu"))
    assert len(data.x_train) == len(data.y_train) == 7 and len(data.x_test) == len(data.y_test) == 4
    assert data.y_train.tolist() == labels["y_train"][:7].tolist()
    grey = data.x_train.mean(dim=(1, 2, 3))  # standardized: an increasing function of the label
    by_label = {int(y): float(g) for y, g in zip(data.y_train, grey)}
    assert all(math.isclose(by_label[int(y)], float(g), abs_tol=1e-5) for y, g in zip(data.y_train, grey))
    assert [by_label[k] for k in sorted(by_label)] == sorted(by_label.values())


def test_one_based_labels_name_the_label_out_of_range(tmp_path):
    """Labels 1..10 (a 1-based copy): the error names 10, the label outside 0-9, not the smallest label (1, a
    valid class); in MNIST's files and in a CIFAR-10 batch alike."""
    make_mnist(tmp_path / "m", gz=False)
    labels = tmp_path / "m" / "train-labels-idx1-ubyte"
    write(labels, idx_bytes(np.array([1, 10, 3, 4, 5], np.uint8), 0x08))
    with pytest.raises(GradflowError) as e:
        load_mnist(tmp_path / "m", "mnist")
    assert one_line(e).startswith(f"{labels} holds label 10, but MNIST has classes 0-9")
    make_cifar(tmp_path / "c" / "cifar-10-batches-py")
    batch = tmp_path / "c" / "cifar-10-batches-py" / "data_batch_2"
    content = pickle.loads(batch.read_bytes(), encoding="bytes")
    n = len(content[b"labels"])
    batch.write_bytes(pickle.dumps({**content, b"labels": [1 + i % 10 for i in range(n - 1)] + [10]}, protocol=2))
    with pytest.raises(GradflowError, match=f"{batch} holds label 10, but CIFAR-10 has classes 0-9"):
        load_cifar10(tmp_path / "c")


def test_a_partial_or_wrong_dataset_names_the_file(tmp_path):
    # three of MNIST's four files: the one missing is named (it said the folder had no MNIST files)
    make_mnist(tmp_path / "d" / "mnist", gz=True)
    (tmp_path / "d" / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(GradflowError) as e:
        load_mnist(tmp_path / "d", "mnist")
    assert one_line(e) == (f"data.root={tmp_path / 'd'}: {tmp_path / 'd' / 'mnist'}/ has 3 of the 4 MNIST files; "
                           "put t10k-labels-idx1-ubyte(.gz) there too")
    # labels outside 0-9 (they failed inside the loss, "Target 90 is out of bounds")
    make_mnist(tmp_path / "l", gz=False)
    write(tmp_path / "l" / "train-labels-idx1-ubyte", idx_bytes(np.array([1, 90, 3, 4, 5], np.uint8), 0x08))
    with pytest.raises(GradflowError) as e:
        load_mnist(tmp_path / "l", "mnist")
    assert one_line(e).startswith(f"{tmp_path / 'l' / 'train-labels-idx1-ubyte'} holds label 90, but MNIST has "
                                  "classes 0-9")
    # CIFAR-10: five of the six batches, and a batch with a label of 10
    make_cifar(tmp_path / "c" / "cifar-10-batches-py")
    (tmp_path / "c" / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(GradflowError) as e:
        load_cifar10(tmp_path / "c")
    assert "cifar-10-batches-py/ has 5 of the 6 CIFAR-10 batches; put data_batch_3 there too" in one_line(e)
    make_cifar(tmp_path / "c" / "cifar-10-batches-py")
    batch = tmp_path / "c" / "cifar-10-batches-py" / "test_batch"
    content = pickle.loads(batch.read_bytes(), encoding="bytes")
    batch.write_bytes(pickle.dumps({**content, b"labels": [10] * len(content[b"labels"])}, protocol=2))
    with pytest.raises(GradflowError, match=f"{batch} holds label 10, but CIFAR-10 has classes 0-9"):
        load_cifar10(tmp_path / "c")
    # files of no images: an empty training set failed inside the first step (ZeroDivisionError), an empty
    # test set ended ok with its loss "-"
    for split, n_train, n_test in (("train", 0, 3), ("t10k", 5, 0)):
        make_mnist(tmp_path / f"e{split}", gz=False, n_train=n_train, n_test=n_test)
        with pytest.raises(GradflowError) as e:
            load_mnist(tmp_path / f"e{split}", "mnist")
        assert one_line(e) == (f"{tmp_path / f'e{split}' / f'{split}-images-idx3-ubyte'} holds no images; replace "
                               "it with a copy of the original")
    # a folder where a file should be was called missing, while something of its name was there
    folder = tmp_path / "dirfile"
    make_mnist(folder, gz=False)
    (folder / datasets.MNIST_FILES["y_test"]).unlink()
    (folder / datasets.MNIST_FILES["y_test"]).mkdir()
    with pytest.raises(GradflowError) as e:
        load_mnist(folder, "mnist")
    assert one_line(e).endswith(f"put {datasets.MNIST_FILES['y_test']}(.gz) there too "
                                f"({datasets.MNIST_FILES['y_test']} there is a folder, not the file)"), one_line(e)
    # labels that are no whole numbers: a ValueError that named no file, or 1.7 read as class 1
    for labels, what in (("abcd", "a text"), ([[1, 2]] * 4, "int64 of shape (4, 2)"),
                         ([1.7] * 4, "float64 of shape (4,)")):
        batch.write_bytes(pickle.dumps({b"data": content[b"data"][:4], b"labels": labels}, protocol=2))
        with pytest.raises(GradflowError) as e:
            load_cifar10(tmp_path / "c")
        assert one_line(e) == (f"{batch} is not a CIFAR-10 batch: its b'labels' must be 4 whole numbers, not {what}; "
                               "replace it with a fresh copy from cifar-10-python.tar.gz")
    # images of no pixels: they trained "ok" on zero-element layers, with torch's warnings
    folder = tmp_path / "zero"
    make_mnist(folder, gz=False)
    write(folder / datasets.MNIST_FILES["x_train"], idx_bytes(np.zeros((5, 0, 0), dtype=np.uint8), 0x08), False)
    with pytest.raises(GradflowError) as e:
        load_mnist(folder, "mnist")
    assert one_line(e) == (f"{folder / datasets.MNIST_FILES['x_train']} holds images of 0x0 pixels (MNIST's are "
                           "28x28); replace it with a copy of the original")
    batch.write_bytes(pickle.dumps({b"data": content[b"data"][:0], b"labels": []}, protocol=2))
    with pytest.raises(GradflowError) as e:
        load_cifar10(tmp_path / "c")
    assert one_line(e) == f"{batch} holds no images; replace it with a fresh copy from cifar-10-python.tar.gz"


def test_missing_mnist_names_root_files_and_keys(tmp_path):
    root = tmp_path / "x" / "y"
    with pytest.raises(GradflowError) as e:
        load_mnist(root, "fashion_mnist", download=False)
    msg = one_line(e)
    assert f"data.root={root} has no Fashion-MNIST files" in msg
    assert f"{root / 'fashion_mnist'}/" in msg and "data.download=true" in msg
    assert f"(from {datasets.MNIST_MIRRORS['fashion_mnist'][0]}, or set data.download=true" in msg
    assert datasets.MNIST_MIRRORS["fashion_mnist"][0].startswith("http")
    for name in datasets.MNIST_FILES.values():
        assert f"{name}(.gz)" in msg
    with pytest.raises(GradflowError, match="valid choices: mnist, fashion_mnist"):
        load_mnist(root, "kmnist")


def test_a_data_root_that_is_a_file_is_said_to_be_one(cli, tmp_path):
    # it was told to hold the files "in afile/mnist/", which no one can do
    afile = tmp_path / "afile"
    afile.write_text("x\n")
    for over, what in ((["data=mnist"], "MNIST"), (["data=cifar10", "model=cnn"], "CIFAR-10")):
        out = cli("run", *over, f"data.root={afile}", f"results={tmp_path / 'results'}")
        assert out.exit_code == 1 and (f"data.root={afile} is a file, not a folder; give the folder that holds (or "
                                       f"is to hold) the {what} files") in " ".join(out.output.split()), out.output
    assert not (tmp_path / "results").exists()


def test_a_recurrent_model_on_images_is_one_line(cli, tmp_path):
    # model=rnn (lstm, gru) on MNIST's (1, 28, 28) or CIFAR's (3, 32, 32): "building the data or the model
    # failed: ValueError: too many values to unpack (expected 2)"
    make_mnist(tmp_path / "mnist", gz=False, n_train=8, n_test=4)
    for model in ("rnn", "lstm"):
        out = cli("run", "data=mnist", f"data.root={tmp_path}", f"model={model}", "train.steps=1",
                  "train.batch_size=4", f"results={tmp_path / 'results'}")
        said = " ".join(out.output.split())
        assert out.exit_code == 1 and said == (
            f"error: data=mnist gives images (1 x 28 x 28): model={model} reads sequences, (T,) or (T, features), as "
            "data=mnist1d or adding gives them; use model=mlp, cnn, resnet or transformer for images"), out.output


def test_local_files_with_fewer_examples_than_asked_for_are_one_line(cli, tmp_path):
    # validation counts MNIST's 60,000 training images; files of 8 trained on all 8 for data.subset=1000,
    # and a batch of 128 became a batch of 8, without a word
    make_mnist(tmp_path / "mnist", gz=False, n_train=8, n_test=4)
    for over, said in (
            (["data.subset=1000", "train.batch_size=4"], f"error: data.subset=1000 is more than the 8 training "
             f"examples in the mnist files under {tmp_path}; give data.subset=8 or fewer"),
            ([], f"error: train.batch_size=128 must be <= the 8 training examples of data=mnist under "
             f"{tmp_path}; give train.batch_size=8 (the whole set a step) or fewer")):
        out = cli("run", "data=mnist", f"data.root={tmp_path}", "model.depth=2", "model.width=8", "train.steps=1",
                  *over, f"results={tmp_path / 'results'}")
        assert out.exit_code == 1 and " ".join(out.output.split()) == said, out.output
    assert not (tmp_path / "results").exists()
    out = cli("run", "data=mnist", f"data.root={tmp_path}", "model.depth=2", "model.width=8", "train.steps=1",
              "data.subset=8", "train.batch_size=8", f"results={tmp_path / 'results'}")
    assert out.exit_code == 0, out.output


def test_the_data_folder_a_run_read_is_in_its_run_json(cli, tmp_path, monkeypatch):
    # data.root "" reads $GRADFLOW_DATA: config.yaml and run.json said data.root '' whichever folder that was
    make_mnist(tmp_path / "digits" / "mnist", gz=False, n_train=8, n_test=4)
    monkeypatch.setenv("GRADFLOW_DATA", str(tmp_path / "digits"))
    ov = ["data=mnist", "model.depth=2", "model.width=8", "train.steps=1", "train.batch_size=8"]
    out = cli("run", *ov, f"results={tmp_path / 'results'}", "name=d")
    assert out.exit_code == 0, out.output
    (run,) = (tmp_path / "results" / "d").glob("*/run.json")
    record = json.loads(run.read_text())
    assert record["config"]["data.root"] == "" and record["data_root"] == str((tmp_path / "digits").resolve())
    # a field only gradflow's runs write: a Recorder's config may still have a key of that name
    import gradflow
    from torch import nn

    import torch

    net = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    rec = gradflow.Recorder(net, tmp_path / "mine", config={"data_root": "/my/data"})
    with rec.step(0):
        net(torch.ones(2, 4)).sum().backward()
    rec.close()
    assert gradflow.load(tmp_path / "mine", table="runs")["data_root"].tolist() == ["/my/data"]


# --- downloads ------------------------------------------------------------------------------------


def test_download_fails_fast_without_network(tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.MNIST_MIRRORS, "mnist", (CLOSED_PORT,))
    monkeypatch.setattr(datasets, "CIFAR10_URLS", (CLOSED_PORT + "cifar-10-python.tar.gz",))
    t0 = time.monotonic()
    with pytest.raises(GradflowError) as e:
        load_mnist(tmp_path, "mnist", download=True)
    msg = one_line(e)
    assert "downloading MNIST failed" in msg and "127.0.0.1:9" in msg
    assert f"{tmp_path / 'mnist'}/" in msg and "train-images-idx3-ubyte(.gz)" in msg
    with pytest.raises(GradflowError) as e:
        load_cifar10(tmp_path, download=True)
    msg = one_line(e)
    assert "downloading CIFAR-10 failed" in msg and f"{tmp_path}/" in msg and "cifar-10-python.tar.gz" in msg
    assert time.monotonic() - t0 < 15
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no partial file left behind
    assert not (tmp_path / "mnist").exists()  # nor the folder made for the files (an empty data/mnist/)
    with pytest.raises(GradflowError, match="downloading Fashion-MNIST failed"):
        monkeypatch.setitem(datasets.MNIST_MIRRORS, "fashion_mnist", (CLOSED_PORT,))
        load_mnist(tmp_path / "new" / "data", "fashion_mnist", download=True)
    assert not (tmp_path / "new").exists()  # (every folder the download made)


@pytest.fixture
def http_folder(tmp_path):
    """A real HTTP server on the loopback interface serving tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_mnist_from_a_mirror_checks_md5_and_falls_back(tmp_path, monkeypatch, http_folder):
    served, url = http_folder
    want = make_mnist(served, gz=True)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in served.iterdir()}
    # a dead mirror first: the next one is tried
    monkeypatch.setitem(datasets.MNIST_MIRRORS, "mnist", (CLOSED_PORT, url))
    monkeypatch.setitem(datasets.MNIST_MD5, "mnist", md5)
    root = tmp_path / "data"
    assert_same(load_mnist(root, "mnist", download=True), want)
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(md5)  # only the files, no temps

    monkeypatch.setitem(datasets.MNIST_MD5, "mnist", {**md5, "t10k-labels-idx1-ubyte.gz": "0" * 32})
    other = tmp_path / "other"
    with pytest.raises(GradflowError, match="MD5") as e:
        load_mnist(other, "mnist", download=True)
    one_line(e)
    assert not (other / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    assert not list((other / "mnist").glob(".*"))  # the temp file is removed


# --- CIFAR-10 -------------------------------------------------------------------------------------


def test_load_cifar10_from_folder_or_parent(tmp_path):
    want = make_cifar(tmp_path / "cifar-10-batches-py")
    assert_same(load_cifar10(tmp_path), want)
    assert_same(load_cifar10(tmp_path / "cifar-10-batches-py"), want)
    got = load_cifar10(tmp_path)
    assert got["x_train"].shape == (20, 3, 32, 32) and got["x_test"].shape == (4, 3, 32, 32)


def test_cifar10_augments_its_training_batches_only_when_asked(tmp_path):
    from gradflow.config import compose
    from gradflow.data import build

    make_cifar(tmp_path / "cifar-10-batches-py")
    for augment, expected in (("true", datasets.augment_pad_crop_flip), ("false", None)):
        cfg = compose(["model=cnn", "data=cifar10", f"data.root={tmp_path}", f"data.augment={augment}",
                       "train.batch_size=4"])
        assert build(cfg.data, torch.device("cpu")).augment is expected


def test_load_cifar10_from_archive(tmp_path):
    src = tmp_path / "src"
    want = make_cifar(src / "cifar-10-batches-py")
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    assert_same(load_cifar10(root), want)
    assert (root / "cifar-10-batches-py" / "test_batch").is_file()
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # the extraction temp is gone


def test_an_archive_in_a_folder_that_cannot_be_written_says_to_unpack_it(tmp_path):
    # it was "building the data or the model failed: OSError: [Errno 30] Read-only file system: .../.cifar-extract-"
    from tests.commands import unwritable

    src = tmp_path / "src"
    make_cifar(src / "cifar-10-batches-py")
    root = tmp_path / "share"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    with unwritable(root), pytest.raises(GradflowError) as e:
        load_cifar10(root)
    assert one_line(e).startswith(f"{root / 'cifar-10-python.tar.gz'} is unpacked into {root / 'cifar-10-batches-py'}/, "
                                  f"but {root} cannot be written (")
    assert one_line(e).endswith(f"unpack it into {root / 'cifar-10-batches-py'}/ with a user who may write there (tar "
                                "xzf cifar-10-python.tar.gz), or copy it to a writable folder and set data.root to that")
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-python.tar.gz"]


def test_load_cifar10_errors(tmp_path):
    with pytest.raises(GradflowError) as e:
        load_cifar10(tmp_path / "none")
    msg = one_line(e)
    assert f"data.root={tmp_path / 'none'} has no CIFAR-10 files" in msg
    assert "cifar-10-batches-py/ (data_batch_1..5, test_batch) or cifar-10-python.tar.gz" in msg
    # where to get them (the download's address was said only when data.download=true failed)
    assert "(cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/, or set data.download=true" in msg

    folder = tmp_path / "cut" / "cifar-10-batches-py"
    make_cifar(folder)
    batch = folder / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-100])
    with pytest.raises(GradflowError, match="not a readable CIFAR-10 batch") as e:
        load_cifar10(tmp_path / "cut")
    assert str(batch) in one_line(e)

    # float pixels: the dtype said (it read "got data (4, 3072)", the shape it needs)
    make_cifar(folder)
    content = pickle.loads(batch.read_bytes(), encoding="bytes")
    batch.write_bytes(pickle.dumps({**content, b"data": content[b"data"].astype(np.float32)}, protocol=2))
    with pytest.raises(GradflowError, match=r"got data float32 \(\d+, 3072\) and \d+ labels"):
        load_cifar10(tmp_path / "cut")

    # a pickle that would run code is refused before anything runs
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('ran')",))
    batch.write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(GradflowError, match=r"unexpected object \w+\.exec"):
        load_cifar10(tmp_path / "cut")
    # bytes() is allowed for the b"" protocol 2 writes as its call, not as a 300 MB allocation in 100 bytes
    class Huge:
        def __reduce__(self):
            return (bytes, (300_000_000,))
    batch.write_bytes(pickle.dumps({b"data": Huge()}, protocol=2))
    assert len(batch.read_bytes()) < 200
    with pytest.raises(GradflowError, match=r"unexpected call bytes\(300000000,\)"):
        load_cifar10(tmp_path / "cut")

    archive = tmp_path / "bad" / "cifar-10-python.tar.gz"
    write(archive, gzip.compress(b"not a tar" * 100)[:50])
    with pytest.raises(GradflowError, match="truncated or corrupt archive") as e:
        load_cifar10(tmp_path / "bad")
    assert str(archive) in one_line(e)


# --- normalization and augmentation ---------------------------------------------------------------


def test_standardize_uses_training_statistics_per_channel():
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (50, 3, 8, 8), dtype=np.uint8)
    x_test = rng.integers(0, 256, (7, 3, 8, 8), dtype=np.uint8)
    train, test = standardize(x_train, x_test)
    assert train.dtype == test.dtype == torch.float32 and train.shape == (50, 3, 8, 8)
    mean = x_train.astype(np.float64).mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.astype(np.float64).std(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(train.numpy(), (x_train - mean) / std, atol=1e-5)
    np.testing.assert_allclose(test.numpy(), (x_test - mean) / std, atol=1e-5)

    constant = x_train.copy()
    constant[:, 1] = 7  # a channel of one value is centred, not divided by its std of 0 (NaN)
    train, test = standardize(constant, x_test)
    assert bool((train[:, 1] == 0).all()) and bool(torch.isfinite(test).all())
    np.testing.assert_allclose(test[:, 1].numpy(), x_test[:, 1] - 7.0, atol=1e-5)

    mnist_like = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)  # (N, H, W) gains a channel axis
    train, test = standardize(mnist_like, mnist_like[:2])
    assert train.shape == (10, 1, 28, 28) and test.shape == (2, 1, 28, 28)
    assert abs(train.mean().item()) < 1e-5 and abs(train.std(correction=0).item() - 1) < 1e-5

    floats = torch.rand(6, 2, 3, 3)
    before = floats.clone()
    standardize(floats, floats)
    assert torch.equal(floats, before)  # float32 inputs are not scaled in place


def test_augment_flip_only_equals_torch_flip():
    x = torch.randn(64, 3, 5, 7)
    out = augment_pad_crop_flip(x, torch.Generator().manual_seed(0), pad=0)
    flipped = torch.flip(x, dims=[-1])
    same = (out == x).flatten(1).all(1)
    is_flipped = (out == flipped).flatten(1).all(1)
    assert bool((same | is_flipped).all())
    assert 10 < int(is_flipped.sum()) < 54  # about half, p = 0.5


def test_augment_crops_are_windows_of_the_zero_padded_image():
    pad, (B, C, H, W) = 4, (16, 2, 8, 8)
    x = torch.rand(B, C, H, W) + 1  # strictly positive, so padding zeros are recognisable
    out = augment_pad_crop_flip(x, torch.Generator().manual_seed(1), pad=pad)
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.zeros(B, C, H + 2 * pad, W + 2 * pad)
    padded[:, :, pad:pad + H, pad:pad + W] = x
    offsets = set()
    for b in range(B):
        windows = [(i, j, f) for i in range(2 * pad + 1) for j in range(2 * pad + 1) for f in (False, True)
                   if torch.equal(out[b], (lambda w: w.flip(-1) if f else w)(padded[b, :, i:i + H, j:j + W]))]
        assert windows, f"image {b} is not a (flipped) window of its padded image"
        offsets.add(windows[0][:2])
    assert len(offsets) > 4  # offsets vary across the batch


def test_augment_is_deterministic_given_the_seed():
    x = torch.randn(8, 3, 32, 32)
    a = augment_pad_crop_flip(x, torch.Generator().manual_seed(5))
    b = augment_pad_crop_flip(x, torch.Generator().manual_seed(5))
    c = augment_pad_crop_flip(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


# --- sequence tasks -------------------------------------------------------------------------------


def test_adding_problem_layout_target_and_baseline():
    T = 50
    x, y = adding_problem(100_000, T, torch.Generator().manual_seed(0))
    assert x.shape == (100_000, T, 2) and y.shape == (100_000, 1)
    assert x.dtype == y.dtype == torch.float32
    values, markers = x[..., 0], x[..., 1]
    assert bool(((values >= 0) & (values <= 1)).all())
    assert bool(((markers == 0) | (markers == 1)).all())
    assert bool((markers[:, :T // 2].sum(1) == 1).all()) and bool((markers[:, T // 2:].sum(1) == 1).all())
    torch.testing.assert_close(y[:, 0], (values * markers).sum(1))
    # predicting 1.0 scores Var(U1 + U2) = 2/12
    assert abs(F.mse_loss(torch.ones_like(y), y).item() - 1 / 6) < 0.005
    x2, y2 = adding_problem(100_000, T, torch.Generator().manual_seed(0), device="cpu")
    assert torch.equal(x, x2) and torch.equal(y, y2)
    # every position of each half is marked in some sequence (the second half's first one, T // 2, included)
    assert bool((markers.sum(0) > 0).all()), markers.sum(0)
    x, _ = adding_problem(8, 2, torch.Generator().manual_seed(0))  # the shortest: one position per half
    assert bool((x[..., 1] == 1).all())
    with pytest.raises(GradflowError, match="T=1"):
        adding_problem(4, 1, torch.Generator())


def test_copy_task_layout_and_memoryless_baseline():
    n, T, S, K = 256, 30, 8, 10
    x, y = copy_task(n, T, torch.Generator().manual_seed(0), n_symbols=S, copy_len=K)
    L = T + 2 * K
    assert x.shape == (n, L, S + 2) and x.dtype == torch.float32
    assert y.shape == (n, L) and y.dtype == torch.int64
    assert bool((x.sum(-1) == 1).all())  # one-hot
    tokens = x.argmax(-1)
    assert bool(((tokens[:, :K] >= 1) & (tokens[:, :K] <= S)).all())
    assert bool((tokens[:, K:K + T - 1] == 0).all()) and bool((tokens[:, K + T:] == 0).all())
    assert bool((tokens[:, K + T - 1] == S + 1).all())  # the delimiter
    assert torch.equal(y[:, K + T:], tokens[:, :K]) and bool((y[:, :K + T] == 0).all())
    assert len(torch.unique(tokens[:, :K])) == S  # every symbol occurs
    # the memoryless strategy: blank with certainty, then uniform over the S symbols
    log_p = torch.full((n, L, S + 1), -1e4)
    log_p[:, :K + T, 0] = 0.0
    log_p[:, K + T:, 1:] = -math.log(S)
    ce = F.nll_loss(log_p.transpose(1, 2), y).item()
    assert ce == pytest.approx(copy_task_baseline(T, S, K), rel=1e-6)
    assert copy_task_baseline(T, S, K) == pytest.approx(K * math.log(S) / (T + 2 * K))


# --- a mutation audit's survivors: each test fails where its comment says the code broke -------------------
def test_mnist1d_is_generated_from_data_seed(tmp_path):
    # without `args.seed = cfg.seed` every data.seed gave mnist1d's own default (42), the default data.seed too
    from omegaconf import OmegaConf

    from gradflow import data as gdata

    a, b = (gdata._mnist1d(OmegaConf.create({"cache": str(tmp_path), "seed": seed})) for seed in (3, 4))
    assert a.x_train.shape == b.x_train.shape and not torch.equal(a.x_train, b.x_train)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist1d-seed3.npz", "mnist1d-seed4.npz"]


@pytest.mark.parametrize("change", [{"x": np.zeros((4000, 20))}, {"y": np.full(4000, 12)},
                                    {"y_test": np.zeros((1000, 2), dtype=np.int64)},
                                    {"x": np.zeros((4000, 20)), "x_test": np.zeros((1000, 20))},
                                    {"x_test": np.zeros((0, 40)), "y_test": np.zeros(0, dtype=np.int64)},
                                    {"x": np.full((4000, 40), np.nan)}],
                         ids=["narrower-x", "label-past-the-classes", "labels-of-two-columns", "shorter-signals",
                              "no-test-set", "nan-signals"])
def test_a_cached_mnist1d_of_other_shapes_is_made_again(tmp_path, change):
    # a cache file that reads whole but holds other arrays was used: the first step's matmul failed (1000x40 and
    # 20x8), or a label past the classes, and the run was recorded failed
    from omegaconf import OmegaConf

    from gradflow import data as gdata

    cfg = OmegaConf.create({"cache": str(tmp_path), "seed": 5})
    good = gdata._mnist1d(cfg)
    path = tmp_path / "mnist1d-seed5.npz"
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    gdata.atomic_save_npz(path, {**arrays, **change})
    again = gdata._mnist1d(cfg)
    assert torch.equal(again.x_train, good.x_train) and torch.equal(again.y_test, good.y_test)
    from mnist1d.data import get_dataset_args

    assert good.x_train.shape[1] == gdata.MNIST1D_LENGTH == get_dataset_args().final_seq_length


def test_the_dataset_cache_is_replaced_whole_not_written_in_place(tmp_path):
    # written in place (truncated, then filled), a failed or killed write left a partial cache, or none of the
    # good one it replaced; written beside it and renamed over it, the file is a new one (a new inode) and no
    # temporary stays
    from gradflow import data as gdata

    arrays = {"x": np.arange(6.0).reshape(2, 3), "y": np.arange(2), "x_test": np.zeros((1, 3)), "y_test": np.ones(1)}
    path = tmp_path / "cache" / "c.npz"
    gdata.atomic_save_npz(path, arrays)
    before = path.stat().st_ino
    gdata.atomic_save_npz(path, {**arrays, "x": arrays["x"] + 1})
    assert path.stat().st_ino != before and [p.name for p in path.parent.iterdir()] == ["c.npz"]
    with np.load(path) as f:
        np.testing.assert_array_equal(f["x"], arrays["x"] + 1)


def test_a_dataset_cache_that_is_a_file_is_named_as_one(tmp_path):
    # data.cache=FILE said "cannot write the dataset cache FILE (File exists)"
    from gradflow import data as gdata

    (tmp_path / "afile").write_text("")
    with pytest.raises(GradflowError) as e:
        gdata.atomic_save_npz(tmp_path / "afile" / "sub" / "c.npz", {"x": np.zeros(1)})
    assert one_line(e) == (f"cannot write the dataset cache {tmp_path / 'afile' / 'sub'} ({tmp_path / 'afile'} is a "
                           "file, not a folder); set GRADFLOW_CACHE or data.cache to a writable folder")
    # a folder that cannot even be looked at (a name too long): the look for a file raised OSError past the message
    with pytest.raises(GradflowError, match=r"\(File name too long\); set GRADFLOW_CACHE"):
        gdata.atomic_save_npz(tmp_path / ("x" * 300) / "c.npz", {"x": np.zeros(1)})


def _cifar_batches_of(folder, names, seed, n=2):
    """CIFAR-10 python batches as the originals hold them (dict with bytes keys, b'data' uint8 (N, 3072))."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def test_extracting_the_cifar_archive_keeps_the_batches_already_there(tmp_path):
    # a partial cifar-10-batches-py/ the user made is completed from the archive beside it, not overwritten
    all_batches = (*datasets.CIFAR10_TRAIN_BATCHES, datasets.CIFAR10_TEST_BATCH)
    _cifar_batches_of(tmp_path / "src" / datasets.CIFAR10_DIR, all_batches, seed=0)
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / datasets.CIFAR10_ARCHIVE, "w:gz") as tar:
        tar.add(tmp_path / "src" / datasets.CIFAR10_DIR, arcname=datasets.CIFAR10_DIR)
    mine = root / datasets.CIFAR10_DIR
    _cifar_batches_of(mine, ("data_batch_1", "test_batch"), seed=1)  # the user's own two batches
    before = {n: (mine / n).read_bytes() for n in ("data_batch_1", "test_batch")}
    got = datasets.load_cifar10(root)
    assert {n: (mine / n).read_bytes() for n in before} == before
    assert sorted(p.name for p in mine.iterdir()) == sorted(all_batches)  # the missing four were added
    x1, _ = datasets._read_cifar_batch(mine / "data_batch_1")
    np.testing.assert_array_equal(got["x_train"][:2], x1)
    np.testing.assert_array_equal(got["x_test"], datasets._read_cifar_batch(mine / "test_batch")[0])


def test_a_folder_from_gradflow_data_is_named_as_such_in_errors(tmp_path, monkeypatch):
    # data.root unset, $GRADFLOW_DATA set: the error said data.root=DIR, a key the user never gave
    from gradflow.data import check_files

    monkeypatch.setenv("GRADFLOW_DATA", str(tmp_path / "none"))
    with pytest.raises(GradflowError) as e:
        check_files("mnist")
    assert one_line(e).startswith(f"$GRADFLOW_DATA={tmp_path / 'none'} (data.root unset) has no MNIST files; put ")
    monkeypatch.setenv("HOME", str(tmp_path))  # (a ~ in the variable: the loaders name the folder expanded)
    monkeypatch.setenv("GRADFLOW_DATA", "~/none")
    with pytest.raises(GradflowError) as e:
        check_files("fashion_mnist")
    assert one_line(e).startswith("$GRADFLOW_DATA=~/none (data.root unset) has no Fashion-MNIST files; put ")
    with pytest.raises(GradflowError) as e:  # (data.root given: named as given, whatever the variable says)
        check_files("cifar10", str(tmp_path / "given"))
    assert one_line(e).startswith(f"data.root={tmp_path / 'given'} has no CIFAR-10 files; put ")
    # neither set: the default folder, named as such (it said data.root=data, a value never given)
    monkeypatch.delenv("GRADFLOW_DATA")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GradflowError) as e:
        check_files("mnist")
    assert one_line(e).startswith("data (the default: data.root and $GRADFLOW_DATA unset) has no MNIST files; put "), \
        one_line(e)
    (tmp_path / "data").write_text("")  # (a file there: no "folder" said of it)
    with pytest.raises(GradflowError) as e:
        check_files("mnist")
    assert one_line(e).startswith("data (the default: data.root and $GRADFLOW_DATA unset) is a file"), one_line(e)
