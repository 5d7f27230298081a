"""The pretrained base model shipped inside the package, and how it is saved and checked.

A checkpoint is two files in `peftlab/checkpoints/`: `<name>.safetensors` (weights, stored in
fp16 to stay small) and `<name>.json` (the config and its SHA-256, the SHA-256 of the weights file,
the data version it was trained on, and the metrics measured when it was made). `load_base` refuses
weights or a config whose hash does not match, a config that is not a valid `ModelConfig`, and a
malformed manifest, so a learner never silently runs a broken or edited model.
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
    """Names of the base models shipped with the package (or found in `directory`): a manifest
    `<name>.json` next to its weights `<name>.safetensors`.

    >>> available()
    ['teacher', 'tiny', 'tiny_one']
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"directory {directory} does not exist (it should hold <name>.json and "
                                f"<name>.safetensors checkpoints)")
    return sorted(p.stem for p in directory.glob("*.json") if p.with_suffix(".safetensors").is_file())


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def config_sha256(config: dict) -> str:
    """SHA-256 of a config as canonical JSON (sorted keys), stored in the manifest next to it."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def save_checkpoint(model: Transformer, name: str, info: dict, directory: Path = CHECKPOINT_DIR) -> Path:
    """Write `<name>.safetensors` (fp16) and `<name>.json` (config, hash, `info`)."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{name}.safetensors"
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}, weights)
    config = model.config.to_dict()
    manifest = {"name": name, "config": config, "config_sha256": config_sha256(config), "sha256": sha256_file(weights),
                "data_version": DATA_VERSION, "tokenizer": "byte-v1", **info}
    (directory / f"{name}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return weights


def load_base(name: str = "tiny", device: str | torch.device = "cpu", directory: Path = CHECKPOINT_DIR) -> Transformer:
    """The pretrained base model, in fp32, in eval mode, every parameter trainable.

    >>> model = load_base()
    >>> model.config.d_model
    256
    """
    manifest = _read_manifest(name, directory)
    weights = Path(directory) / f"{name}.safetensors"
    remake = manifest.get("command", "python -m peftlab.pretrain")  # the script that made this checkpoint
    if manifest.get("config_sha256") != config_sha256(manifest["config"]):
        raise ValueError(f"checkpoint {name!r}: its config in {name}.json was edited or has no hash (config_sha256 "
                         f"does not match {manifest['config']}); reinstall peftlab or rerun `{remake}`")
    try:
        config = ModelConfig(**manifest["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {name!r}: {name}.json holds no valid model config: {e}") from e
    digest = sha256_file(weights)
    if digest != manifest["sha256"]:
        raise ValueError(f"checkpoint {weights.name} is corrupted or was replaced: its SHA-256 is {digest[:12]}..., "
                         f"the manifest expects {manifest['sha256'][:12]}...; reinstall peftlab or rerun `{remake}`")
    if manifest.get("data_version") != DATA_VERSION:
        raise ValueError(f"checkpoint {name!r} was trained on data version {manifest.get('data_version')}, "
                         f"this peftlab generates version {DATA_VERSION}; rerun `{remake}`")
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
    return _read_manifest(name, directory)


def _read_manifest(name: str, directory: Path) -> dict:
    names = available(directory)
    if name not in names:
        raise ValueError(f"unknown base model {name!r}; available in {directory}: {names}")
    path = Path(directory) / f"{name}.json"
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    missing = [k for k in ("config", "sha256") if not isinstance(manifest, dict) or k not in manifest]
    if missing or not isinstance(manifest["config"], dict):
        raise ValueError(f"{path} is not a checkpoint manifest: it needs 'config' (a dict) and 'sha256', "
                         f"missing {missing or ['config as a dict']}")
    return manifest
