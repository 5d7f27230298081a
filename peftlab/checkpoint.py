"""The pretrained base model shipped inside the package, and how it is saved and checked.

A checkpoint is two files in `peftlab/checkpoints/`: `<name>.safetensors` (weights, stored in
fp16 to stay small) and `<name>.json` (the config, the SHA-256 of the weights file, the data
version it was trained on, and the metrics measured when it was made). `load_base` refuses a
file whose hash or config does not match, so a learner never silently runs a broken model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .data import DATA_VERSION
from .model import ModelConfig, Transformer

CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"


def available(directory: Path = CHECKPOINT_DIR) -> list[str]:
    """Names of the base models shipped with the package (or found in `directory`)."""
    return sorted(p.stem for p in Path(directory).glob("*.json"))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_checkpoint(model: Transformer, name: str, info: dict, directory: Path = CHECKPOINT_DIR) -> Path:
    """Write `<name>.safetensors` (fp16) and `<name>.json` (config, hash, `info`)."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{name}.safetensors"
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}, weights)
    manifest = {"name": name, "config": model.config.to_dict(), "sha256": sha256_file(weights),
                "data_version": DATA_VERSION, "tokenizer": "byte-v1", **info}
    (directory / f"{name}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return weights


def load_base(name: str = "tiny", device: str | torch.device = "cpu", directory: Path = CHECKPOINT_DIR) -> Transformer:
    """The pretrained base model, in fp32, in eval mode, every parameter trainable.

    >>> model = load_base()
    >>> model.config.d_model
    256
    """
    names = available(directory)
    if name not in names:
        raise ValueError(f"unknown base model {name!r}; available: {names}")
    manifest = json.loads((Path(directory) / f"{name}.json").read_text())
    weights = Path(directory) / f"{name}.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"checkpoint weights missing: {weights}")
    remake = manifest.get("command", "python -m peftlab.pretrain")  # the script that made this checkpoint
    digest = sha256_file(weights)
    if digest != manifest["sha256"]:
        raise ValueError(f"checkpoint {weights.name} is corrupted or was replaced: its SHA-256 is {digest[:12]}..., "
                         f"the manifest expects {manifest['sha256'][:12]}...; reinstall peftlab or rerun `{remake}`")
    if manifest.get("data_version") != DATA_VERSION:
        raise ValueError(f"checkpoint {name!r} was trained on data version {manifest.get('data_version')}, "
                         f"this peftlab generates version {DATA_VERSION}; rerun `{remake}`")
    config = ModelConfig(**manifest["config"])
    model = Transformer(config)
    state = load_file(weights)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        diff = sorted(set(expected.items()) ^ set(found.items()))[:4]
        raise ValueError(f"checkpoint {weights.name} does not match its config {config}: differing tensors {diff}")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.to(device).eval()


def manifest(name: str = "tiny", directory: Path = CHECKPOINT_DIR) -> dict:
    """The JSON manifest of a shipped checkpoint (config, hash, metrics, pre-training setup).

    >>> manifest("teacher")["command"]
    'python -m peftlab.teacher --train'
    """
    names = available(directory)
    if name not in names:
        raise ValueError(f"unknown base model {name!r}; available: {names}")
    return json.loads((Path(directory) / f"{name}.json").read_text())
