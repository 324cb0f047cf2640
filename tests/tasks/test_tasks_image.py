"""Image classification from a .npz file or an image folder, preprocessed as the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from paretoforge.exceptions import SpecError
from paretoforge.tasks import TASKS, load_task


def make_tiny_vit(directory: Path, *, id2label: dict[int, str] | None = None) -> Path:
    """Save a random 16x16 ViT (patch 8, hidden 32, 2 layers, 2 heads, 3 labels) + processor."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, num_labels=3)
    if id2label is not None:
        config.id2label = id2label
        config.label2id = {v: k for k, v in id2label.items()}
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(str(directory))
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5, 0.4, 0.3],
                      image_std=[0.2, 0.25, 0.5]).save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory) -> Path:
    return make_tiny_vit(tmp_path_factory.mktemp("vit"))


def _npz(path: Path, n: int = 30, *, layout: str = "nhwc", **arrays) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
    if layout == "nchw":
        x = x.transpose(0, 3, 1, 2)
    data = {"x": x, "y": np.arange(n) % 3}
    data.update(arrays)
    np.savez(path, **{k: v for k, v in data.items() if v is not None})
    return path


def _folder(root: Path, classes=("cat", "dog", "fox"), n: int = 4, size=(20, 24)) -> Path:
    from PIL import Image

    rng = np.random.default_rng(1)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


def _expected(img: np.ndarray) -> np.ndarray:
    """The hand computation: x / 255, minus mean, over std, channels first."""
    mean = np.array([0.5, 0.4, 0.3])
    std = np.array([0.2, 0.25, 0.5])
    return ((img.astype(np.float64) / 255.0 - mean) / std).transpose(2, 0, 1)


def test_registered():
    assert "image-classification" in TASKS


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_npz_shapes_preprocessing_and_split(tmp_path, vit_dir, layout):
    path = _npz(tmp_path / "d.npz", layout=layout)
    task = load_task("image-classification", path=str(path), checkpoint=str(vit_dir),
                     heldout_fraction=0.2, seed=0)
    assert task.input_name == "pixel_values" and task.metric == "accuracy"
    assert task.num_classes == 3
    assert task.x_train.shape == (24, 3, 16, 16)
    assert task.x_validation.shape == task.x_test.shape == (3, 3, 16, 16)
    assert task.x_train.dtype == np.float32 and task.y_train.dtype == np.int64
    # stratified twice: the held-out part, then its division into validation and test
    assert np.bincount(task.y_validation).tolist() == np.bincount(task.y_test).tolist() == \
        [1, 1, 1]
    raw = np.load(path)["x"]
    raw = raw if layout == "nhwc" else raw.transpose(0, 2, 3, 1)
    first_train = int(np.setdiff1d(np.arange(30), _heldout_indices(task))[0])
    np.testing.assert_allclose(task.x_train[0], _expected(raw[first_train]), rtol=0, atol=1e-5)
    assert "0.00392156862745098" in task.preprocessing and "mean=[0.5, 0.4, 0.3]" in \
        task.preprocessing
    again = load_task("image-classification", path=str(path), checkpoint=str(vit_dir),
                      heldout_fraction=0.2, seed=0)
    np.testing.assert_array_equal(again.x_validation, task.x_validation)
    np.testing.assert_array_equal(again.x_test, task.x_test)
    other = load_task("image-classification", path=str(path), checkpoint=str(vit_dir),
                      heldout_fraction=0.2, seed=1)
    assert other.split["heldout_indices_sha256"] != task.split["heldout_indices_sha256"]


def _heldout_indices(task) -> np.ndarray:
    import hashlib

    from sklearn.model_selection import train_test_split

    y = np.arange(30) % 3
    _, held = train_test_split(np.arange(30), test_size=0.2, random_state=0, stratify=y)
    held = np.sort(held)
    sha = hashlib.sha256(held.astype("<i8").tobytes()).hexdigest()
    assert sha == task.split["heldout_indices_sha256"]
    return held


def test_float_inputs_are_taken_as_rescaled(tmp_path, vit_dir):
    x = np.full((6, 16, 16, 3), 0.5, np.float32)
    path = _npz(tmp_path / "f.npz", n=6, x=x)
    task = load_task("image-classification", path=str(path), checkpoint=str(vit_dir),
                     heldout_fraction=0.5)
    np.testing.assert_allclose(task.x_train[0, :, 0, 0], [0.0, 0.4, 0.4], atol=1e-6)


def test_folder_resizes_like_the_image_processor_and_separate_heldout(tmp_path, vit_dir):
    from PIL import Image
    from transformers import ViTImageProcessor

    train = _folder(tmp_path / "train")
    held = _folder(tmp_path / "held", n=1)
    task = load_task("image-classification", path=str(train), checkpoint=str(vit_dir),
                     heldout_path=str(held))
    assert task.x_train.shape == (12, 3, 16, 16)
    assert len(task.x_validation) + len(task.x_test) == 3 and len(task.x_test) >= 1
    assert task.y_train.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert task.split["label_names"] == ["cat", "dog", "fox"]
    assert task.split["method"] == "separate held-out data"
    proc = ViTImageProcessor.from_pretrained(str(vit_dir))
    with Image.open(train / "cat" / "0.png") as img:
        want = proc(images=img.convert("RGB"), return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(task.x_train[0], want, atol=1e-4)


def test_checkpoint_label_names_take_precedence(tmp_path):
    ckpt = make_tiny_vit(tmp_path / "vit", id2label={0: "fox", 1: "cat", 2: "dog"})
    task = load_task("image-classification", path=str(_folder(tmp_path / "img")),
                     checkpoint=str(ckpt), heldout_fraction=0.25)
    assert task.split["label_names"] == ["fox", "cat", "dog"]
    assert sorted(set(task.y_train.tolist())) == [0, 1, 2]
    assert np.bincount(task.y_train).tolist() == [3, 3, 3]


def _empty_class(root: Path) -> Path:
    _folder(root, classes=("a", "b"))
    (root / "c").mkdir()
    return root


def _bad_png(root: Path) -> Path:
    _folder(root)
    (root / "dog" / "broken.png").write_bytes(b"not an image")
    return root / "dog" / "broken.png"


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda d: (d / "missing.npz", d / "missing.npz"), "does not exist"),
        (lambda d: (d / "nodir", d / "nodir"), "neither an image folder nor a .npz"),
        (lambda d: (_npz(d / "a.npz", y=None),) * 2, "no array(s) ['y']"),
        (lambda d: (_npz(d / "a.npz", x=None),) * 2, "no array(s) ['x']"),
        (lambda d: (_npz(d / "a.npz", y=np.arange(30) % 4),) * 2, "label 3 (image 3) is out of"),
        (lambda d: (_npz(d / "a.npz", x=np.zeros((30, 16, 16, 4), np.uint8)),) * 2,
         "not 3 channels"),
        (lambda d: (_folder(d / "f", classes=("a", "b", "c", "d")),) * 2, "out of range 0..2"),
        (lambda d: (_empty_class(d / "f"), d / "f" / "c"), "holds no images"),
        (lambda d: (d / "b", _bad_png(d / "b")), "Cannot read image"),
    ],
)
def test_errors_are_one_line_and_name_the_file(tmp_path, vit_dir, make, expect):
    data, named = make(tmp_path)
    with pytest.raises(SpecError) as err:
        load_task("image-classification", path=str(data), checkpoint=str(vit_dir))
    msg = str(err.value)
    assert expect in msg and "\n" not in msg and str(named) in msg


def test_checkpoint_without_preprocessor_config(tmp_path, vit_dir):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(vit_dir, ckpt)
    (ckpt / "preprocessor_config.json").unlink()
    with pytest.raises(SpecError, match="preprocessor_config.json' does not exist"):
        load_task("image-classification", path=str(_npz(tmp_path / "a.npz")),
                  checkpoint=str(ckpt))
    assert json.loads((vit_dir / "config.json").read_text())["model_type"] == "vit"
