"""A search of a user's own ViT checkpoint on their own images (a .npz), end to end on Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paretoforge.exceptions import SpecError
from paretoforge.names import TrialAttr
from paretoforge.spec import Spec


def make_tiny_vit(directory):
    """A random 16x16 ViT (patch 8, hidden 32, 2 layers, 2 heads, 3 labels) and its processor."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, num_labels=3)
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(str(directory))
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(str(directory))
    return directory


def _spec(ckpt, data) -> dict:
    return {
        "name": "tiny-image",
        "model": {"path": str(ckpt)},
        "task": {"name": "image-classification", "data": str(data)},
        "space": {"preset": "vit-prune",
                  "dimensions": {"layers_kept": [1, 2], "heads_kept": [1, 2],
                                 "ffn_kept": [0.5, 1.0], "precision": ["fp32", "int8"]}},
        "recovery": {"epochs": 1, "batch_size": 16},
        "objectives": [{"metric": "accuracy", "direction": "maximize"},
                       {"metric": "latency_p50_ms@cpu-1t", "direction": "minimize"}],
        "profiles": ["cpu-1t"],
        "search": {"trials": 4, "population_size": 4, "seed": 0, "strategy": "per-candidate"},
        "cluster": {"workers": 2},
    }


def test_image_classification_search_of_a_local_vit(ray_cluster, tmp_path) -> None:
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress
    from paretoforge.orchestrator.results import load_run

    ckpt = make_tiny_vit(tmp_path / "vit")
    rng = np.random.default_rng(0)
    y = np.arange(48) % 3
    x = rng.integers(0, 60, size=(48, 16, 16, 3), dtype=np.uint8)
    x[np.arange(48), :, :, y] += 150  # the class is the bright channel
    np.savez(tmp_path / "images.npz", x=x, y=y)
    spec = Spec.from_dict(_spec(ckpt, tmp_path / "images.npz"))
    summary = run_search(spec, tmp_path / "run", progress=Progress(4, live=False, quiet=True))
    assert summary.completed == 4 and summary.failed == 0
    assert all(0.0 <= m.objectives["accuracy"] <= 1.0 for m in summary.front)
    base = load_run(tmp_path / "run").trial(0)
    art = tmp_path / "run" / base.user_attrs[TrialAttr.ARTIFACT_DIR]
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["task"]["name"] == "image-classification"
    assert [i["name"] for i in manifest["inputs"]] == ["pixel_values"]
    assert (art / "preprocessor_config.json").is_file()


def test_image_task_needs_data_and_a_checkpoint(tmp_path) -> None:
    ckpt = make_tiny_vit(tmp_path / "vit")
    with pytest.raises(SpecError, match="image-classification needs the path of a .npz"):
        Spec.from_dict({"model": {"path": str(ckpt)}, "task": {"name": "image-classification"}})
    with pytest.raises(SpecError, match="neither a file nor a folder"):
        Spec.from_dict({"model": {"path": str(ckpt)},
                        "task": {"name": "image-classification", "data": str(tmp_path / "no")}})
    with pytest.raises(SpecError, match="needs a checkpoint"):
        Spec.from_dict({"task": {"name": "image-classification", "data": str(tmp_path)}})
