"""Image classification from your own images, preprocessed as the checkpoint's image processor.

The data is a ``.npz`` file with arrays ``x`` (``(N, H, W, C)`` or ``(N, C, H, W)``, uint8
0..255 or float already rescaled, e.g. 0..1) and ``y`` (int labels ``0..num_labels-1``), or an
image folder with one subfolder per class. Images are resized with PIL to the model's image
size, rescaled and normalized as ``preprocessor_config.json`` says, once, with numpy.

Example:
    >>> from paretoforge.tasks import load_task
    >>> task = load_task("image-classification", path="images/", checkpoint="vit/")
    ... # doctest: +SKIP
    >>> task.x_train.shape[1:]  # doctest: +SKIP
    (3, 224, 224)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretoforge.exceptions import SpecError
from paretoforge.tasks._base import (
    DEFAULT_TEST_FRACTION,
    TaskData,
    check_split_params,
    classification_accuracy,
    divide_heldout,
)
from paretoforge.tasks._contract import Task, register_task

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "ImageClassificationTask","ImageProcessing", "load_image_classification_task", "read_images"]

TASK = "image-classification"
# PIL resample codes as Hugging Face image processors store them (PIL.Image.Resampling values).
_RESAMPLE_NAMES = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX",
                   5: "HAMMING"}


@dataclass(frozen=True)
class ImageProcessing:
    """What the checkpoint's ``config.json`` and ``preprocessor_config.json`` say about inputs.

    Attributes:
        height, width: Image size the model takes (after resize and centre crop).
        channels: Channels the model takes (``config.num_channels``).
        num_labels: Classes of the checkpoint's head.
        label2id: The checkpoint's class names -> ids (may be the generic ``LABEL_i``).
        resize: ``(height, width)`` to resize to, or ``None`` (no resize).
        crop: ``(height, width)`` of the centre crop after the resize, or ``None``.
        resample: PIL resample code of the resize.
        rescale: Factor uint8 pixels are multiplied by, or ``None`` (no rescale).
        mean, std: Per-channel normalization, or ``None`` (no normalization).
    """

    height: int
    width: int
    channels: int
    num_labels: int
    label2id: dict[str, int]
    resize: tuple[int, int] | None
    crop: tuple[int, int] | None
    resample: int
    rescale: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike[str]) -> ImageProcessing:
        """Read ``config.json`` and ``preprocessor_config.json`` of ``checkpoint``.

        Raises:
            SpecError: A file is missing or not JSON, or a size is not understood.
        """
        d = Path(checkpoint)
        config = _read_json(d / "config.json")
        proc = _read_json(d / "preprocessor_config.json")
        image_size = config.get("image_size", 224)
        h, w = _hw(image_size, d / "config.json", "image_size")
        channels = int(config.get("num_channels", 3))
        id2label = config.get("id2label") or {}
        num_labels = int(config.get("num_labels") or len(id2label) or 2)
        label2id = {str(v): int(k) for k, v in id2label.items()}
        where = d / "preprocessor_config.json"
        resize = crop = None
        if proc.get("do_resize", True):
            size = proc.get("size", {"height": h, "width": w})
            if isinstance(size, dict) and "shortest_edge" in size and "height" not in size:
                s = int(size["shortest_edge"])
                resize = (s, s)  # square inputs (a crop follows when the processor has one)
            else:
                resize = _hw(size, where, "size")
        if proc.get("do_center_crop", False):
            crop = _hw(proc.get("crop_size", {"height": h, "width": w}), where, "crop_size")
        out = crop or resize or (h, w)
        if out != (h, w):
            raise SpecError(
                f"{str(where)!r}: images come out {out[0]}x{out[1]} but the model "
                f"(config.json image_size) takes {h}x{w}; fix size / crop_size."
            )
        mean = std = None
        if proc.get("do_normalize", True):
            mean = _per_channel(proc.get("image_mean", 0.5), channels, where, "image_mean")
            std = _per_channel(proc.get("image_std", 0.5), channels, where, "image_std")
        rescale = float(proc.get("rescale_factor", 1 / 255)) if proc.get("do_rescale", True) \
            else None
        return cls(height=h, width=w, channels=channels, num_labels=num_labels,
                   label2id=label2id, resize=resize, crop=crop,
                   resample=int(proc.get("resample", 2)), rescale=rescale, mean=mean, std=std)

    def describe(self) -> str:
        """The preprocessing in one exact line, for the manifest."""
        steps = []
        if self.resize is not None:
            name = _RESAMPLE_NAMES.get(self.resample, str(self.resample))
            steps.append(f"resize to {self.resize[0]}x{self.resize[1]} with PIL {name} "
                         "(skipped when already that size)")
        if self.crop is not None:
            steps.append(f"centre crop {self.crop[0]}x{self.crop[1]}")
        if self.rescale is not None:
            steps.append(f"uint8 pixels times {self.rescale!r} (float inputs taken as already "
                         "rescaled)")
        if self.mean is not None and self.std is not None:
            steps.append(f"(x - mean) / std per channel, mean={list(self.mean)}, "
                         f"std={list(self.std)}")
        steps.append(f"float32 (N, {self.channels}, {self.height}, {self.width}) pixel_values; "
                     "labels int64")
        return "; ".join(steps)

    def apply(self, images: list[np.ndarray]) -> np.ndarray:
        """``(H, W, C)`` uint8 or float images -> float32 ``(N, C, height, width)``."""
        import numpy as np

        out = np.empty((len(images), self.channels, self.height, self.width), np.float32)
        for i, img in enumerate(images):
            is_uint8 = img.dtype == np.uint8
            x = img if is_uint8 else img.astype(np.float32)
            if self.resize is not None and x.shape[:2] != self.resize:
                x = _pil_resize(x, self.resize, self.resample)
            if self.crop is not None:
                top = (x.shape[0] - self.crop[0]) // 2
                left = (x.shape[1] - self.crop[1]) // 2
                x = x[top:top + self.crop[0], left:left + self.crop[1]]
            x = x.astype(np.float32)
            if is_uint8 and self.rescale is not None:
                x = x * np.float32(self.rescale)
            if self.mean is not None and self.std is not None:
                x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
            out[i] = x.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
        return out


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecError(f"{TASK}: {str(path)!r} does not exist; the checkpoint needs it "
                        "(save the image processor with processor.save_pretrained()).")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SpecError(f"{str(path)!r} is not valid JSON: {e}.") from None
    if not isinstance(obj, dict):
        raise SpecError(f"{str(path)!r} must hold a JSON object.")
    return obj


def _hw(size: Any, where: Path, key: str) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        return size, size
    if isinstance(size, dict) and {"height", "width"} <= set(size):
        return int(size["height"]), int(size["width"])
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    raise SpecError(f"{str(where)!r}: {key} {size!r} is not understood; use an integer or "
                    "{height: H, width: W}.")


def _per_channel(v: Any, channels: int, where: Path, key: str) -> tuple[float, ...]:
    values = [float(v)] * channels if isinstance(v, (int, float)) else [float(a) for a in v]
    if len(values) != channels:
        raise SpecError(f"{str(where)!r}: {key} has {len(values)} values but the model takes "
                        f"{channels} channels.")
    return tuple(values)


def _pil_resize(x: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    import numpy as np
    from PIL import Image

    h, w = size
    if x.dtype == np.uint8:
        img = Image.fromarray(x[:, :, 0] if x.shape[2] == 1 else x)
        out = np.asarray(img.resize((w, h), resample=resample))
        return out[:, :, None] if out.ndim == 2 else out
    # float images: one 32-bit float PIL image per channel
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(x[:, :, c]), mode="F")
                        .resize((w, h), resample=resample)) for c in range(x.shape[2])]
    return np.stack(chans, axis=-1)


def read_images(
    path: str | os.PathLike[str], proc: ImageProcessing
) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Images ``(H, W, C)``, int64 labels and class names of a ``.npz`` file or image folder.

    Raises:
        SpecError: The file or folder is missing, the ``.npz`` lacks ``x`` or ``y``, a label is
            out of range, the channel count is wrong, a class folder is empty, or an image
            cannot be read; the message names the file.
    """
    import numpy as np

    p = Path(path)
    if p.is_dir():
        return _read_folder(p, proc)
    if p.suffix.lower() != ".npz":
        raise SpecError(f"{TASK}: data {str(p)!r} is neither an image folder nor a .npz file; "
                        "check the path.")
    if not p.is_file():
        raise SpecError(f"{TASK}: data file {str(p)!r} does not exist; check the path.")
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise SpecError(f"{str(p)!r} has no array(s) {missing} (has {z.files}); save "
                                "images as x and labels as y.")
            x, y = z["x"], z["y"]
    except SpecError:
        raise
    except Exception as e:  # zipfile / pickle refusals
        raise SpecError(f"{str(p)!r} is not a readable .npz file ({type(e).__name__}: {e}).") \
            from None
    c = proc.channels
    if x.ndim == 3 and c == 1:
        x = x[:, :, :, None]
    if x.ndim != 4:
        raise SpecError(f"{str(p)!r}: x has shape {list(x.shape)}; expected (N, H, W, {c}) or "
                        f"(N, {c}, H, W).")
    if x.shape[-1] != c:
        if x.shape[1] != c:
            raise SpecError(f"{str(p)!r}: x has shape {list(x.shape)}, not {c} channels as "
                            f"the model takes; expected (N, H, W, {c}) or (N, {c}, H, W).")
        x = x.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise SpecError(f"{str(p)!r}: x has dtype {x.dtype}; use uint8 (0..255) or float.")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise SpecError(f"{str(p)!r}: y must be {len(x)} integer labels, got dtype {y.dtype} "
                        f"shape {list(y.shape)}.")
    if len(y) == 0:
        raise SpecError(f"{str(p)!r} holds no images.")
    bad = (y < 0) | (y >= proc.num_labels)
    if bad.any():
        k = int(np.argmax(bad))
        raise SpecError(f"{str(p)!r}: label {int(y[k])} (image {k}) is out of range "
                        f"0..{proc.num_labels - 1} of the checkpoint's num_labels.")
    names = [_name_of(i, proc) for i in range(proc.num_labels)]
    return list(x), y.astype(np.int64), names


def _name_of(i: int, proc: ImageProcessing) -> str:
    return next((n for n, j in proc.label2id.items() if j == i), str(i))


def _read_folder(
    root: Path, proc: ImageProcessing
) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    import numpy as np
    from PIL import Image

    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise SpecError(f"{TASK}: image folder {str(root)!r} has no class subfolders; put "
                        "each class's images in a subfolder named after it.")
    if set(classes) <= set(proc.label2id):
        ids = {c: proc.label2id[c] for c in classes}  # the checkpoint names these classes
    else:
        ids = {c: i for i, c in enumerate(classes)}
    for c, i in ids.items():
        if not 0 <= i < proc.num_labels:
            raise SpecError(f"{str(root / c)!r}: class {c!r} gets label {i}, out of range "
                            f"0..{proc.num_labels - 1} of the checkpoint's num_labels "
                            f"({len(classes)} class folders).")
    mode = {1: "L", 3: "RGB"}.get(proc.channels)
    if mode is None:
        raise SpecError(f"{TASK}: image folders need a 1- or 3-channel model, not "
                        f"{proc.channels} channels; use a .npz file.")
    images, labels = [], []
    for c in classes:
        files = sorted(f for f in (root / c).iterdir() if f.is_file()
                       and not f.name.startswith("."))
        if not files:
            raise SpecError(f"{TASK}: class folder {str(root / c)!r} holds no images.")
        for f in files:
            try:
                with Image.open(f) as img:
                    arr = np.asarray(img.convert(mode))
            except Exception as e:  # PIL raises UnidentifiedImageError / OSError / ...
                raise SpecError(f"Cannot read image {str(f)!r} ({type(e).__name__}); "
                                "remove it or convert it to PNG / JPEG.") from None
            images.append(arr[:, :, None] if arr.ndim == 2 else arr)
            labels.append(ids[c])
    names = [_name_of(i, proc) for i in range(proc.num_labels)]
    for c, i in ids.items():
        names[i] = c
    return images, np.asarray(labels, np.int64), names


def load_image_classification_task(
    path: str,
    checkpoint: str,
    heldout_path: str | None = None,
    heldout_fraction: float = 0.2,
    seed: int = 0,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> TaskData:
    """Load an image classification task, preprocessed as the checkpoint's image processor.

    Args:
        path: A ``.npz`` file (``x`` images, ``y`` labels) or a folder of class subfolders.
        checkpoint: Model checkpoint directory (``config.json``, ``preprocessor_config.json``).
        heldout_path: Held-out images in a ``.npz`` / folder of their own; if absent, a
            ``heldout_fraction`` of ``path`` is held out (stratified when every class has two
            images or more; seeded by ``seed``).
        heldout_fraction: Fraction of ``path`` held out when there is no ``heldout_path``.
        seed: Seed of the split.
        test_fraction: Fraction of the held-out images that become the test split
            (stratified where possible); the rest are validation.

    Returns:
        The task: ``x_*`` are float32 ``(N, C, H, W)`` ``pixel_values``.

    Raises:
        SpecError: A file is missing or malformed, a label is out of range, the channel count
            is wrong, or a parameter is invalid; the message names the file.
    """
    import numpy as np

    check_split_params(TASK, heldout_fraction, seed, test_fraction)
    proc = ImageProcessing.from_checkpoint(checkpoint)
    images, y_all, names = read_images(path, proc)
    split: dict[str, Any] = {"seed": int(seed), "path": str(path)}
    if heldout_path is not None:
        h_images, h_y, _ = read_images(heldout_path, proc)
        train_idx = np.arange(len(images))
        heldout_idx = np.arange(len(images), len(images) + len(h_images))
        images, y_all = images + h_images, np.concatenate([y_all, h_y])
        split.update(method="separate held-out data", heldout_path=str(heldout_path))
    else:
        from sklearn.model_selection import train_test_split

        counts = np.bincount(y_all)
        stratify = y_all if counts[counts > 0].min() >= 2 else None
        try:
            train_idx, heldout_idx = train_test_split(
                np.arange(len(images)), test_size=float(heldout_fraction),
                random_state=int(seed), stratify=stratify,
            )  # fmt: skip
        except ValueError as e:
            raise SpecError(f"{str(path)!r}: cannot hold out {heldout_fraction} of "
                            f"{len(images)} images ({e}); add images or a heldout_path.") \
                from None
        train_idx, heldout_idx = np.sort(train_idx), np.sort(heldout_idx)
        split.update(
            method="sklearn.model_selection.train_test_split"
            + ("(stratify=labels)" if stratify is not None else ""),
            heldout_fraction=float(heldout_fraction),
        )
    x_all = proc.apply(images)
    sha = hashlib.sha256(np.asarray(heldout_idx, dtype="<i8").tobytes()).hexdigest()
    val_idx, test_idx, division = divide_heldout(heldout_idx, y_all[heldout_idx], test_fraction,
                                                 seed, task=TASK)
    split.update(n_train=int(len(train_idx)), n_heldout=int(len(heldout_idx)),
                 heldout_indices_sha256=sha, label_names=names, **division)
    return TaskData(
        name=TASK,
        x_train=np.ascontiguousarray(x_all[train_idx]),
        y_train=y_all[train_idx],
        x_validation=np.ascontiguousarray(x_all[val_idx]),
        y_validation=y_all[val_idx],
        x_test=np.ascontiguousarray(x_all[test_idx]),
        y_test=y_all[test_idx],
        num_classes=proc.num_labels,
        input_name="pixel_values",
        metric="accuracy",
        preprocessing=f"{proc.describe()}; from {str(checkpoint)!r}",
        split=split,
    )


@register_task
class ImageClassificationTask(Task):
    """Classify the user's images with a ViT / DeiT classifier checkpoint."""

    name = TASK
    metrics = {"accuracy": "maximize"}
    modality = "vision"
    families = ("vit", "deit")
    data = "a .npz file (arrays x and y) or a folder of class subfolders"
    data_required = True
    data_may_be_dir = True

    def load(self, path: str, checkpoint: str, heldout_path: str | None = None,
             heldout_fraction: float = 0.2, seed: int = 0,
             test_fraction: float = DEFAULT_TEST_FRACTION) -> TaskData:
        return load_image_classification_task(path, checkpoint, heldout_path=heldout_path,
                                              heldout_fraction=heldout_fraction, seed=seed,
                                              test_fraction=test_fraction)

    def score(self, outputs: np.ndarray, data: TaskData, state: Any) -> float:
        return classification_accuracy(outputs, data.y_scored)
