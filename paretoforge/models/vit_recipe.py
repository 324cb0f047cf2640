"""The built-in ViT recipe's hyper-parameters, importable without torch (a spec is checked
against its shape before anything heavy loads); :mod:`paretoforge.models.vit` trains it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from paretoforge.exceptions import SpecError

__all__ = ["DEFAULT_DIGITS_RECIPE", "ViTRecipe"]


@dataclass(frozen=True)
class ViTRecipe:
    """Architecture and training hyper-parameters of a ViT trained from scratch.

    Attributes:
        image_size: Side of the square input image, in pixels.
        patch_size: Side of a square patch; ``image_size`` must be a multiple of it.
        num_channels: Input channels.
        hidden_size: Width of the residual stream; a multiple of ``num_heads``.
        num_layers: Transformer layers.
        num_heads: Attention heads per layer.
        intermediate_size: FFN width per layer.
        num_labels: Number of classes.
        epochs: Training epochs over the task's training split.
        lr: Peak AdamW learning rate.
        batch_size: Training batch size.
        weight_decay: AdamW weight decay.
        warmup_epochs: Epochs of linear LR warmup before the cosine decay.
        label_smoothing: Label smoothing of the cross-entropy.
        aug_rotate_deg: Random rotation augmentation, largest angle in degrees (0 = none).
        aug_scale: Random zoom augmentation, largest relative change (0 = none).
        aug_shift_px: Random sub-pixel shift augmentation, largest shift in pixels (0 = none).
        dropout: Dropout of the hidden states and attention probabilities while training.
        init_std: Std of the initial weights (``initializer_range``); transformers' 0.02 is
            made for wide models and trains this small one to a worse optimum.
        seed: Seed of the initial weights, the data order and the augmentation.

    Example:
        >>> from paretoforge.models.vit import ViTRecipe, build_vit
        >>> recipe = ViTRecipe(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
        >>> build_vit(recipe).config.num_hidden_layers
        2
    """

    image_size: int = 8
    patch_size: int = 2
    num_channels: int = 1
    hidden_size: int = 64
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 256
    num_labels: int = 10
    epochs: int = 60
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.05
    warmup_epochs: int = 3
    label_smoothing: float = 0.1
    aug_rotate_deg: float = 8.0
    aug_scale: float = 0.08
    aug_shift_px: float = 0.4
    dropout: float = 0.0
    init_std: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        floats = ("lr", "weight_decay", "label_smoothing", "aug_rotate_deg", "aug_scale",
                  "aug_shift_px", "dropout", "init_std")  # fmt: skip
        for name in floats:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SpecError(f"ViTRecipe.{name} must be a number, got {value!r}.")
            # 8 and 8.0 must give the same canonical JSON, hence the same cache key.
            object.__setattr__(self, name, float(value))
        positive = (
            "image_size", "patch_size", "num_channels", "hidden_size", "num_layers",
            "num_heads", "intermediate_size", "num_labels", "epochs", "batch_size",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"ViTRecipe.{name} must be a positive integer, got {value!r}.")
        for name in ("warmup_epochs", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SpecError(f"ViTRecipe.{name} must be an integer >= 0, got {value!r}.")
        if self.hidden_size % self.num_heads:
            raise SpecError(
                f"ViTRecipe.hidden_size ({self.hidden_size}) must be a multiple of num_heads "
                f"({self.num_heads}); change one of them."
            )
        if self.image_size % self.patch_size:
            raise SpecError(
                f"ViTRecipe.image_size ({self.image_size}) must be a multiple of patch_size "
                f"({self.patch_size})."
            )
        for name in ("aug_rotate_deg", "aug_scale", "aug_shift_px", "weight_decay"):
            if not getattr(self, name) >= 0:
                raise SpecError(f"ViTRecipe.{name} must be >= 0, got {getattr(self, name)!r}.")
        if not self.init_std > 0:
            raise SpecError(f"ViTRecipe.init_std must be > 0, got {self.init_std!r}.")
        if not self.lr > 0:
            raise SpecError(f"ViTRecipe.lr must be > 0, got {self.lr!r}.")
        if not 0 <= self.dropout < 1:
            raise SpecError(f"ViTRecipe.dropout must be in [0, 1), got {self.dropout!r}.")
        if not 0 <= self.label_smoothing < 1:
            raise SpecError(
                f"ViTRecipe.label_smoothing must be in [0, 1), got {self.label_smoothing!r}."
            )

    def to_dict(self) -> dict[str, Any]:
        """The recipe as a plain dict (JSON-able)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViTRecipe:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`SpecError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(
                f"Unknown ViTRecipe field(s) {unknown}. Valid fields: {', '.join(sorted(known))}."
            )
        return cls(**data)


DEFAULT_DIGITS_RECIPE = ViTRecipe()
