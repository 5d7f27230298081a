"""LoRA: low-rank adaptation (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language
Models", arXiv:2106.09685).

A frozen linear layer W0 (out x in) gets a trainable update of rank r (paper, eq. 3):

    h = W0 x + scaling * B A x,    A: (r, in),  B: (out, r),  r << min(in, out)
    scaling = alpha / r            (section 4.1; alpha / sqrt(r) with rslora=True, Kalajdzievski
                                    2023, arXiv:2312.03732, which keeps the update's size steady
                                    as r grows)

B starts at zero and A at random (Kaiming-uniform, as nn.Linear and PEFT do), so B A = 0 and the
model is exactly the pretrained one at step 0 (section 4.1). Not both at zero: the gradient of B
is proportional to A x and that of A to B, so two zero factors would never move. After training,
W0 + scaling * B A is one matrix again (`merge`, `unload`): no extra latency at inference.

The verbs, as in minLoRA and PEFT's model-level functions: `add`, `merge`, `unmerge`, `unload`,
`set_active`, `disabled`, `delete`, `adapter_names`, `combine`, `save`, `load`. They work on any
PyTorch model with `nn.Linear` layers, and on GPT-2's `Conv1D` (weight stored as (in, out)).
A 4-bit base layer (`peftlab.qlora`, QLoRA) is wrapped the same way; its merge is
`peftlab.qlora.merge` (dequantize, add, requantize).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from safetensors.torch import save as tensors_to_bytes
from torch import nn

from .checks import number_in, positive_int, positive_number
from .files import check_together, write_together
from .hf import hf_name
from .model import Transformer

ALL_LINEAR = "all-linear"
METHODS = ("linear", "cat", "svd")
INITS = ("default", "mirror")  # which factor starts at zero: B (the paper's) or A
FORMATS = ("peftlab", "peft")
FILES = {"peftlab": ("lora_config.json", "lora.safetensors"),  # format -> (config, weights)
         "peft": ("adapter_config.json", "adapter_model.safetensors")}
PEFT_PREFIX = "base_model.model."  # PeftModel -> LoraModel -> the wrapped model


@dataclass(frozen=True)
class LoRAConfig:
    """One adapter's hyperparameters on one layer."""
    r: int
    alpha: float
    dropout: float = 0.0
    rslora: bool = False

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)


def _is_linear(module: nn.Module) -> bool:
    # transformers' Conv1D can only be in a model if transformers is already imported; looking it
    # up this way spares every other user the seconds of importing it.
    conv1d = getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)
    return isinstance(module, nn.Linear) or (conv1d is not None and isinstance(module, conv1d))


def _in_out(layer: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a Linear (weight (out, in)) or a Conv1D (weight (in, out))."""
    layer = getattr(layer, "base_layer", layer)
    if isinstance(layer, nn.Linear):  # also 4-bit layers, whose weight holds packed codes
        return layer.in_features, layer.out_features
    rows, cols = layer.weight.shape  # Conv1D: (in, out)
    return rows, cols


class LoRALinear(nn.Module):
    """A frozen `base_layer` (nn.Linear or Conv1D) plus adapters keyed by name."""

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer
        self.fan_in_fan_out = not isinstance(base_layer, nn.Linear)  # Conv1D weight is (in, out)
        self.in_features, self.out_features = _in_out(base_layer)
        self.lora_A = nn.ParameterDict()  # name -> (r, in)
        self.lora_B = nn.ParameterDict()  # name -> (out, r)
        self.lora_dropout = nn.ModuleDict()
        self.config: dict[str, LoRAConfig] = {}
        self.active: str | None = None
        self.merged = False  # the active adapter is folded into base_layer.weight
        self.enabled = True
        self.per_row: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # see `per_request`

    @property
    def weight(self) -> torch.Tensor:
        # code that reads `layer.weight` keeps working, e.g. Transformer.device reads lm_head.weight
        return self.base_layer.weight

    def add_adapter(self, name: str, cfg: LoRAConfig, A: torch.Tensor | None = None,
                    B: torch.Tensor | None = None) -> None:
        w = self.base_layer.weight
        dtype = w.dtype if w.is_floating_point() else torch.float32  # a 4-bit base: fp32 adapters
        if A is None:
            A = torch.empty(cfg.r, self.in_features)
            nn.init.kaiming_uniform_(A, a=math.sqrt(5))
            B = torch.zeros(self.out_features, cfg.r)  # B = 0: the output is unchanged at init
        self.lora_A[name] = nn.Parameter(A.detach().to(w.device, dtype).clone())
        self.lora_B[name] = nn.Parameter(B.detach().to(w.device, dtype).clone())
        dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.lora_dropout[name] = dropout.train(self.training)  # a new module takes the layer's mode
        self.config[name] = cfg

    def remove_adapter(self, name: str) -> None:
        for table in (self.lora_A, self.lora_B, self.lora_dropout, self.config):
            del table[name]

    def delta_weight(self, name: str) -> torch.Tensor:
        """scaling * B A, shape (out, in)."""
        return self.config[name].scaling * (self.lora_B[name] @ self.lora_A[name])

    @torch.no_grad()
    def set_merged(self, merged: bool) -> None:
        """Fold the active adapter into base_layer.weight (W0 + scaling B A), or take it out."""
        if merged != self.merged and self.active in self.config:
            delta = self.delta_weight(self.active) * (1.0 if merged else -1.0)
            weight = self.base_layer.weight
            weight += (delta.T if self.fan_in_fan_out else delta).to(weight.dtype)
        self.merged = merged

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.per_row is not None:  # row i of the batch runs its own adapter: gather, then two bmm
            A, B, scaling = self.per_row  # (batch, r, in), (batch, out, r), (batch, 1, 1)
            if x.dim() != 3 or x.shape[0] != A.shape[0]:
                raise ValueError(f"per_request was given {A.shape[0]} adapter names, one per row, but the input "
                                 f"has shape {tuple(x.shape)}; pass (batch, seq, features) with batch = len(names)")
            lora = torch.bmm(torch.bmm(x.to(A.dtype), A.transpose(1, 2)) * scaling, B.transpose(1, 2))
            return out + lora.to(out.dtype)
        name = self.active
        if self.merged or not self.enabled or name not in self.config:
            return out
        A, B, cfg = self.lora_A[name], self.lora_B[name], self.config[name]
        x = x.to(A.dtype)
        if cfg.dropout > 0:  # skip even an nn.Identity call: a fixed per-layer cost on small models
            x = self.lora_dropout[name](x)
        # (..., in) -> (..., r) -> (..., out): never forms B A; the scale goes on the thin (..., r) tensor
        lora = F.linear(F.linear(x, A) * cfg.scaling, B)
        return out + lora.to(out.dtype)


# --- the verbs -------------------------------------------------------------------------------

def add(model: nn.Module, r: int = 8, alpha: float = 16, targets=("q_proj", "v_proj"),
        dropout: float = 0.0, name: str = "default", rslora: bool = False,
        modules_to_save: tuple[str, ...] = (), init: str = "default") -> nn.Module:
    """Wrap the target layers with a new adapter `name`, make it active and freeze everything else.

    `init="default"`: A Kaiming-uniform, B = 0 (Hu et al., PEFT). `init="mirror"`: A = 0 and B
    Kaiming-uniform, drawn as nn.Linear draws a weight of B's shape (Hayou, Ghosh & Yu 2024's Init[B]).
    Both start with B A = 0; they are not equivalent (notebook 03, study 03_init).

    `targets`: module names (a last component such as "q_proj", or a full dotted name), a regex
    matched against full names, or "all-linear" (every linear layer but the output head).

    >>> from peftlab import ModelConfig, Transformer, count_parameters
    >>> model = add(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)), r=4)
    >>> count_parameters(model).trainable  # 2 layers * r * (in + out) = 2 * 4 * (32 + 32)
    512

    `modules_to_save` (PEFT's option of that name) also trains these modules in full, such as
    ("embed_tokens", "lm_head") for a new vocabulary: the low-rank update cannot reach them.

    >>> base = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, vocab_size=10))
    >>> count_parameters(add(base, r=4, modules_to_save=("lm_head",))).trainable  # 512 + 10 * 32
    832
    """
    _check_hyperparameters(r, alpha, dropout, rslora)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    _check_new_name(model, name)
    saved = _match_modules(model, modules_to_save)
    cfg = LoRAConfig(r, float(alpha), float(dropout), rslora)
    targets = _match_targets(model, targets)
    layers = {n: (cfg, None, None) for n in targets} if init == "default" else \
        {n: (cfg, *_mirror_init(model.get_submodule(n), r)) for n in targets}
    _install(model, name, layers)
    for module in saved:
        module.requires_grad_(True)
    return model


def _mirror_init(layer: nn.Module, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A = 0 and B (out, r) Kaiming-uniform: the mirror image of the default initialisation."""
    d_in, d_out = _in_out(layer)
    B = torch.empty(d_out, r)
    nn.init.kaiming_uniform_(B, a=math.sqrt(5))
    return torch.zeros(r, d_in), B


def _match_modules(model: nn.Module, names) -> list[nn.Module]:
    """The modules whose name (or last name component) is in `names`; each name must match one or more."""
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"modules_to_save must be a tuple of module names, got {names!r}")
    found = {n: [m for full, m in model.named_modules() if full and (full == n or full.endswith("." + n))]
             for n in names}
    missing = [n for n, ms in found.items() if not ms]
    if missing:
        raise ValueError(f"modules_to_save: no module named {missing} in the model; names end like "
                         f"{sorted(set(_last_names(n for n, _ in model.named_modules() if n)))}")
    return [m for ms in found.values() for m in ms]


def adapter_names(model: nn.Module) -> list[str]:
    """Names of the model's adapters, in the order they were added.

    >>> from torch import nn
    >>> adapter_names(add(nn.Sequential(nn.Linear(4, 4)), targets="0", name="task"))
    ['task']
    """
    return list(dict.fromkeys(n for m in _wrappers(model).values() for n in m.config))


def set_active(model: nn.Module, name: str) -> None:
    """Make adapter `name` the one that runs and trains; every other parameter is frozen.

    >>> from torch import nn
    >>> model = add(add(nn.Sequential(nn.Linear(4, 4)), targets="0", name="a"), targets="0", name="b")
    >>> set_active(model, "a"); model[0].active
    'a'
    """
    layers = _require_wrappers(model)
    _check_known_name(model, name)
    _check_not_merged(model)
    model.requires_grad_(False)
    for layer in layers.values():
        layer.active = name
        if name in layer.config:
            layer.lora_A[name].requires_grad_(True)
            layer.lora_B[name].requires_grad_(True)


def merge(model: nn.Module) -> None:
    """Fold the active adapter into the weights: W0 <- W0 + scaling * B A (one matmul per layer).

    >>> from torch import nn
    >>> model = add(nn.Sequential(nn.Linear(4, 4)), targets="0"); merge(model); model[0].merged
    True
    """
    _set_merged(model, True)


def unmerge(model: nn.Module) -> None:
    """Undo `merge`: W0 <- W0 - scaling * B A, exact up to float rounding.

    >>> from torch import nn
    >>> model = add(nn.Sequential(nn.Linear(4, 4)), targets="0"); merge(model); unmerge(model)
    """
    _set_merged(model, False)


def _set_merged(model: nn.Module, merged: bool) -> None:
    layers = _require_wrappers(model)
    if merged and _is_merged(model):
        raise ValueError("the model is already merged; merging twice would add B A twice "
                         "(call lora.unmerge(model) first)")
    if not merged and not _is_merged(model):
        raise ValueError("the model is not merged; nothing to unmerge")
    _check_float_base(layers)
    for layer in layers.values():
        layer.set_merged(merged)


def unload(model: nn.Module) -> nn.Module:
    """Replace every wrapper by its plain layer with the active adapter merged into the weight.

    >>> from torch import nn
    >>> type(unload(add(nn.Sequential(nn.Linear(4, 4)), targets="0"))[0]).__name__
    'Linear'
    """
    layers = _require_wrappers(model)
    _check_float_base(layers)
    for module_name, layer in layers.items():
        layer.set_merged(True)
        parent, _, child = module_name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer.base_layer)
    return model


@contextmanager
def disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run the base model inside the block (unmerging for it if needed), restore afterwards.

    >>> import torch
    >>> from torch import nn
    >>> base = nn.Linear(4, 4); model = add(nn.Sequential(base), targets="0"); x = torch.ones(1, 4)
    >>> with disabled(model): torch.equal(model(x), base(x))
    True
    """
    layers = list(_require_wrappers(model).values())
    merged, enabled = [m for m in layers if m.merged], [m.enabled for m in layers]
    for m in merged:
        m.set_merged(False)
    for m in layers:
        m.enabled = False
    try:
        yield model
    finally:
        for m, was_enabled in zip(layers, enabled):
            m.enabled = was_enabled
        for m in merged:
            m.set_merged(True)


@contextmanager
def per_request(model: nn.Module, names: list[str]) -> Iterator[nn.Module]:
    """Inside the block, row i of every batch runs adapter `names[i]`: one forward pass serves requests
    for different adapters on one unmerged base, the batching that Hu et al. 2021 (§4.2) note a merged
    model cannot do and that S-LoRA (arXiv 2311.03285) builds its kernels for. Each layer gathers the
    rows' A and B into (batch, r, in) and (batch, out, r) stacks and runs two batched matmuls; the
    adapters need the same rank. The model must not be merged.

    >>> import torch
    >>> from torch import nn
    >>> model = add(add(nn.Sequential(nn.Linear(4, 4)), targets="0", name="a"), targets="0", name="b")
    >>> model = randomize_B(model); x = torch.randn(2, 3, 4)  # 2 requests of 3 tokens
    >>> with per_request(model, ["a", "b"]):
    ...     mixed = model(x)
    >>> set_active(model, "b"); torch.allclose(mixed[1], model(x)[1])
    True
    """
    layers = list(_require_wrappers(model).values())
    if isinstance(names, str) or not names:
        raise ValueError(f"names must be a non-empty list of adapter names, one per row, got {names!r}")
    for name in dict.fromkeys(names):
        _check_known_name(model, name)
    _check_not_merged(model)
    ranks = {layer.config[n].r for layer in layers for n in set(names) if n in layer.config}
    if len(ranks) > 1:
        raise ValueError(f"per_request needs adapters of one rank (the rows' A and B are stacked), got ranks "
                         f"{sorted(ranks)}")
    if any(n not in layer.config for layer in layers for n in set(names)):
        raise ValueError("per_request needs every adapter in names on the same layers")
    for layer in layers:
        layer.per_row = (torch.stack([layer.lora_A[n] for n in names]),
                         torch.stack([layer.lora_B[n] for n in names]),
                         torch.tensor([layer.config[n].scaling for n in names],
                                      dtype=layer.lora_A[names[0]].dtype,
                                      device=layer.lora_A[names[0]].device).view(-1, 1, 1))
    try:
        yield model
    finally:
        for layer in layers:
            layer.per_row = None


def delete(model: nn.Module, name: str) -> None:
    """Remove adapter `name`; if it was active, no adapter is active until `set_active`.

    >>> from torch import nn
    >>> model = add(nn.Sequential(nn.Linear(4, 4)), targets="0"); delete(model, "default")
    >>> adapter_names(model)
    []
    """
    _check_known_name(model, name)
    layers = _wrappers(model).values()
    if any(m.merged and m.active == name for m in layers):
        _check_not_merged(model)
    for m in layers:
        if name in m.config:
            m.remove_adapter(name)
        if m.active == name:
            m.active = None


def combine(model: nn.Module, weights: dict[str, float], name: str, method: str = "linear",
            rank: int | None = None) -> dict:
    """A new adapter `name` (made active) mixing existing ones; returns an error report.

    With s_i = w_i * scaling_i and D = sum_i s_i B_i A_i the weighted sum of the deltas:

    * "cat": A = [A_1; A_2; ...], B = [s_1 B_1, s_2 B_2, ...]; rank sum r_i, B A = D exactly.
    * "svd": D truncated to `rank` by SVD (Eckart-Young: the best rank-`rank` approximation).
    * "linear": A = sum sign(s_i) sqrt|s_i| A_i, B = sum sqrt|s_i| B_i (equal ranks needed; the sign
      on A, as PEFT's "linear", so that mixed signs give PEFT's cross terms). This is NOT D: B A also
      holds the cross terms B_i A_j, i != j.

    The new adapter has alpha = r (scaling 1): the weights live in its A and B. The report holds
    each layer's relative Frobenius error ||B A - D|| / ||D||, and its max and mean.

    >>> from torch import nn
    >>> model = add(add(nn.Sequential(nn.Linear(4, 4)), targets="0", name="a"), targets="0", name="b")
    >>> combine(model, {"a": 1.0, "b": 0.5}, "ab", method="cat")["max_error"] < 1e-6
    True
    """
    names = adapter_names(model)
    if not isinstance(weights, dict) or not weights or any(a not in names for a in weights):
        raise ValueError(f"weights must be a non-empty dict {{adapter name: weight}} over adapters "
                         f"{names}, got {weights!r}")
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) for w in weights.values()):
        raise TypeError(f"weights must map adapter names to numbers, got {weights!r}")
    if not all(math.isfinite(w) for w in weights.values()):
        raise ValueError(f"weights must be finite numbers (no NaN or infinity), got {weights!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "svd":
        positive_int(rank, "rank")
    elif rank is not None:
        raise ValueError(f"rank is used only by method='svd', got rank={rank!r} with method={method!r}")
    _check_new_name(model, name)
    new, errors = {}, {}
    with torch.no_grad():
        for module_name, layer in _wrappers(model).items():
            parts = [(layer.lora_A[a], layer.lora_B[a], w * layer.config[a].scaling)
                     for a, w in weights.items() if a in layer.config]
            if not parts:
                continue
            D = sum(s * (B.double() @ A.double()) for A, B, s in parts)  # (out, in)
            if method == "cat":
                A_new = torch.cat([A for A, _, _ in parts], dim=0)  # (sum r_i, in)
                B_new = torch.cat([s * B for _, B, s in parts], dim=1)  # (out, sum r_i)
            elif method == "svd":
                U, S, Vh = torch.linalg.svd(D, full_matrices=False)
                k = min(rank, S.numel())
                root = S[:k].sqrt()  # split the singular values evenly between B and A
                B_new, A_new = U[:, :k] * root, root[:, None] * Vh[:k]
            else:
                if len({A.shape[0] for A, _, _ in parts}) > 1:
                    raise ValueError(f"method='linear' needs adapters of equal rank; {module_name} has "
                                     f"ranks {[A.shape[0] for A, _, _ in parts]}; use 'cat' or 'svd'")
                A_new = sum(math.copysign(math.sqrt(abs(s)), s) * A for A, _, s in parts)  # the sign on A, as PEFT
                B_new = sum(math.sqrt(abs(s)) * B for _, B, s in parts)
            dtype = parts[0][0].dtype
            A_new, B_new = A_new.to(dtype), B_new.to(dtype)
            errors[module_name] = _relative_error(D, B_new.double() @ A_new.double())
            r_new = A_new.shape[0]
            new[module_name] = (LoRAConfig(r_new, float(r_new)), A_new, B_new)
    _install(model, name, new)
    values = list(errors.values())
    return {"method": method, "errors": errors, "max_error": max(values), "mean_error": sum(values) / len(values)}


def _relative_error(target: torch.Tensor, approx: torch.Tensor) -> float:
    """||approx - target||_F / ||target||_F (the absolute error where target is zero)."""
    diff, ref = torch.linalg.norm(approx - target).item(), torch.linalg.norm(target).item()
    return diff / ref if ref > 0 else diff


# --- save and load ---------------------------------------------------------------------------

def _to_hf(model: nn.Module, name: str) -> str:
    # peftlab.hf.to_hf nests peftlab's decoder under "model." as LlamaForCausalLM does
    return hf_name(name) if isinstance(model, Transformer) else name


def _from_hf(model: nn.Module, name: str) -> str:
    return name.removeprefix("model.") if isinstance(model, Transformer) else name


def save(model: nn.Module, path: str | Path, name: str = "default", format: str = "peftlab") -> Path:
    """Write adapter `name` to directory `path`: safetensors weights and a JSON config, as one save
    (`files.write_together`: a manifest of both files' SHA-256, checked by `load`). A folder that holds
    an adapter of the other format is refused, so that `load` never has to guess.

    format="peft" writes Hugging Face PEFT's own files (`adapter_config.json`,
    `adapter_model.safetensors`), loadable with `peft.PeftModel.from_pretrained`; for a peftlab
    model the names are those of `peftlab.hf.to_hf(model)`.

    >>> import tempfile
    >>> from torch import nn
    >>> model = add(nn.Sequential(nn.Linear(4, 4)), targets="0")
    >>> sorted(p.name for p in save(model, tempfile.mkdtemp()).iterdir())
    ['lora.safetensors', 'lora_config.json', 'peftlab_manifest.json']
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    _check_known_name(model, name)
    path = Path(path)
    other = next(f for f in FORMATS if f != format)
    if (path / FILES[other][0]).is_file():
        raise ValueError(f"{path} already holds a {other}-format adapter ({FILES[other][0]}); save the "
                         f"{format} format into another folder, or delete those files first")
    layers = {n: m for n, m in _wrappers(model).items() if name in m.config}
    if format == "peftlab":
        tensors = {f"{n}.lora_{x}": getattr(m, f"lora_{x}")[name] for n, m in layers.items() for x in "AB"}
        config = {"format": "peftlab-lora", "layers": {n: asdict(m.config[name]) for n, m in layers.items()}}
    else:
        tensors = {f"{PEFT_PREFIX}{_to_hf(model, n)}.lora_{x}.weight": getattr(m, f"lora_{x}")[name]
                   for n, m in layers.items() for x in "AB"}
        config = _peft_config(model, layers, name)
    config_file, weights_file = FILES[format]
    return write_together(path, {weights_file: tensors_to_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()}),
                                 config_file: json.dumps(config, indent=2).encode()})


def _peft_config(model: nn.Module, layers: dict[str, LoRALinear], name: str) -> dict:
    hf = {n: _to_hf(model, n) for n in layers}
    cfgs = {n: m.config[name] for n, m in layers.items()}
    first = next(iter(cfgs.values()))
    # short names ("q_proj") when they select exactly these layers in PEFT's matching, else full ones
    short = _last_names(hf.values())
    picked = {_to_hf(model, n) for n in _linear_layers(model) if _ends_with_any(_to_hf(model, n), short)}
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": first.r, "lora_alpha": first.alpha,
            "target_modules": short if picked == set(hf.values()) else sorted(hf.values()),
            "lora_dropout": first.dropout, "use_rslora": first.rslora, "bias": "none",
            "fan_in_fan_out": any(m.fan_in_fan_out for m in layers.values()),
            # per-layer exceptions, e.g. after combine(method="cat") of adapters on different layers
            "rank_pattern": {hf[n]: c.r for n, c in cfgs.items() if c.r != first.r},
            "alpha_pattern": {hf[n]: c.alpha for n, c in cfgs.items() if c.alpha != first.alpha},
            "init_lora_weights": True, "inference_mode": True, "modules_to_save": None}


def load(model: nn.Module, path: str | Path, name: str = "default") -> nn.Module:
    """Add adapter `name` from a directory written by `save` (either format), and make it active.

    Everything is checked before the model changes: files, that they were saved together
    (`files.check_together`), their contents, layer names, shapes.

    >>> import tempfile
    >>> from torch import nn
    >>> path = save(add(nn.Sequential(nn.Linear(4, 4)), targets="0"), tempfile.mkdtemp())
    >>> adapter_names(load(nn.Sequential(nn.Linear(4, 4)), path, name="task"))
    ['task']
    """
    _check_new_name(model, name)
    path = Path(path)
    found = [f for f, (config_file, _) in FILES.items() if (path / config_file).is_file()]
    if len(found) > 1:
        raise ValueError(f"{path} holds adapters in both formats ({', '.join(FILES[f][0] for f in found)}); "
                         f"keep one of them")
    fmt = found[0] if found else None
    if fmt is None or not (path / FILES[fmt][1]).is_file():
        raise FileNotFoundError(f"{path} holds no LoRA adapter: expected {' + '.join(FILES['peftlab'])} "
                                f"(peftlab) or {' + '.join(FILES['peft'])} (peft)")
    config_file, weights_file = FILES[fmt]
    check_together(path, (config_file, weights_file))
    try:
        config = json.loads((path / config_file).read_text())
        tensors = load_file(path / weights_file)
    except Exception as e:  # JSON and safetensors raise their own types on a corrupt file
        raise ValueError(f"{path} holds a corrupt adapter file: {type(e).__name__}: {e}") from e
    try:
        layers = _parse_peftlab(config, tensors) if fmt == "peftlab" else _parse_peft(model, config, tensors)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{path / config_file} is not a valid {fmt} LoRA adapter: {type(e).__name__}: {e}") from e
    if not layers:
        raise ValueError(f"{path / config_file} holds an adapter with no layers: nothing to load")
    available = _linear_layers(model)
    unknown = [n for n in layers if n not in available]
    if unknown:
        raise ValueError(f"{path}: layers {unknown[:4]} are not linear layers of this model, "
                         f"whose linear layers are named {_last_names(available)}")
    for n, (cfg, A, B) in layers.items():
        in_features, out_features = _in_out(available[n])
        want_A, want_B = (cfg.r, in_features), (out_features, cfg.r)
        if tuple(A.shape) != want_A or tuple(B.shape) != want_B:
            raise ValueError(f"{path}: layer {n} needs lora_A {want_A} and lora_B {want_B}, the file "
                             f"has {tuple(A.shape)} and {tuple(B.shape)}")
    _install(model, name, layers)
    return model


def _parse_peftlab(config: dict, tensors: dict) -> dict[str, tuple]:
    if config.get("format") != "peftlab-lora":
        raise ValueError(f"format is {config.get('format')!r}, expected 'peftlab-lora'")
    layers = {n: (LoRAConfig(**c), tensors.pop(f"{n}.lora_A"), tensors.pop(f"{n}.lora_B"))
              for n, c in config["layers"].items()}
    if tensors:
        raise ValueError(f"tensors without a layer in the config: {sorted(tensors)[:4]}")
    for cfg, _, _ in layers.values():
        _check_hyperparameters(cfg.r, cfg.alpha, cfg.dropout, cfg.rslora)
    return layers


def _parse_peft(model: nn.Module, config: dict, tensors: dict) -> dict[str, tuple]:
    if config.get("peft_type") != "LORA" or config.get("bias", "none") != "none" or config.get("modules_to_save"):
        raise ValueError("only PEFT LoRA adapters with bias='none' and no modules_to_save are supported")
    unsupported = [k for k in ("use_dora", "layer_replication") if config.get(k)]
    if unsupported:
        raise ValueError(f"this PEFT adapter uses {unsupported}, which peftlab does not implement; loading it "
                         f"would give other outputs than PEFT's")
    suffix = ".lora_A.weight"
    hf_names = [k[len(PEFT_PREFIX):-len(suffix)] for k in tensors if k.startswith(PEFT_PREFIX) and k.endswith(suffix)]
    expected = {f"{PEFT_PREFIX}{h}.lora_{x}.weight" for h in hf_names for x in "AB"}
    if expected != set(tensors):
        raise ValueError(f"unexpected or missing tensors: {sorted(expected ^ set(tensors))[:4]}")
    targets = config.get("target_modules")
    if isinstance(targets, str) and targets != "all-linear":  # PEFT's rule for a string: a full-name regex
        outside = [h for h in hf_names if not re.fullmatch(targets, h)]
    elif isinstance(targets, (list, tuple)):
        outside = [h for h in hf_names if h.rsplit(".", 1)[-1] not in targets and h not in targets]
    else:
        outside = []
    if outside:
        raise ValueError(f"the adapter's tensors include layers its target_modules ({targets!r}) do not name: "
                         f"{outside[:4]}; the config and the weights disagree")
    layers = {}
    for h in hf_names:
        cfg = LoRAConfig(_pattern(config.get("rank_pattern"), h, config["r"]),
                         _pattern(config.get("alpha_pattern"), h, config["lora_alpha"]),
                         config.get("lora_dropout", 0.0), config.get("use_rslora", False))
        _check_hyperparameters(cfg.r, cfg.alpha, cfg.dropout, cfg.rslora)
        layers[_from_hf(model, h)] = (cfg, tensors[f"{PEFT_PREFIX}{h}.lora_A.weight"],
                                      tensors[f"{PEFT_PREFIX}{h}.lora_B.weight"])
    return layers


def _pattern(patterns: dict | None, name: str, default):
    # PEFT's rule (peft.utils.other.get_pattern_key): the first key matching the end of the name
    for k in patterns or {}:
        try:
            re.compile(k)
        except re.error as e:
            raise ValueError(f"rank_pattern / alpha_pattern key {k!r} is not a valid regular expression: {e}") from None
    return next((v for k, v in (patterns or {}).items() if re.match(rf"(.*\.)?({k})$", name)), default)


@torch.no_grad()
def randomize_B(model: nn.Module, std: float = 0.01, seed: int = 0) -> nn.Module:
    """Give every B a trained-looking value instead of its zero init, so that a merge really changes
    the weights: for demonstrations and benchmarks of merging, not for training. Returns `model`.

    >>> from peftlab import ModelConfig, Transformer
    >>> model = randomize_B(add(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))))
    >>> bool(model.layers[0].self_attn.q_proj.lora_B["default"].abs().sum() > 0)
    True
    """
    gen = torch.Generator().manual_seed(seed)
    for layer in _require_wrappers(model).values():
        for B in layer.lora_B.values():
            B.copy_(torch.randn(B.shape, generator=gen) * std)
    return model


# --- finding layers and checking input, for the verbs above -------------------------------------

def _wrappers(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def _require_wrappers(model: nn.Module) -> dict[str, LoRALinear]:
    layers = _wrappers(model)
    if not layers:
        raise ValueError("`model` has no LoRA layers; call lora.add(model, ...) first")
    return layers


def _linear_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every layer LoRA can wrap, by name: plain Linear/Conv1D layers and existing wrappers."""
    inside = {id(m.base_layer) for m in _wrappers(model).values()}
    return {n: m for n, m in model.named_modules()
            if isinstance(m, LoRALinear) or (_is_linear(m) and id(m) not in inside)}


def _ends_with_any(name: str, suffixes) -> bool:
    # PEFT's rule for a list of target names: the full name, or its last dotted components
    return any(name == s or name.endswith("." + s) for s in suffixes)


def _last_names(names) -> list[str]:
    return sorted({n.rsplit(".", 1)[-1] for n in names})


def _match_targets(model: nn.Module, targets) -> list[str]:
    layers = _linear_layers(model)
    if targets == ALL_LINEAR:
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        heads = {id(head), id(getattr(head, "base_layer", head))} if head is not None else set()
        names = [n for n, m in layers.items()
                 if n.rsplit(".", 1)[-1] != "lm_head" and id(getattr(m, "base_layer", m)) not in heads]
    elif isinstance(targets, str):
        try:
            pattern = re.compile(targets)
        except re.error as e:
            raise ValueError(f"targets={targets!r} is not a valid regular expression: {e}") from None
        names = [n for n in layers if pattern.fullmatch(n)]
    elif isinstance(targets, (list, tuple)) and all(isinstance(t, str) for t in targets):
        names = [n for n in layers if _ends_with_any(n, targets)]
    else:
        raise TypeError(f"targets must be a tuple/list of module names, a regex string or "
                        f"{ALL_LINEAR!r}, got {targets!r}")
    if not names:
        raise ValueError(f"targets={targets!r} matches no linear layer (a string is a regex matched "
                         f"against the full dotted name); the model's linear layers are named "
                         f"{_last_names(layers)}, e.g. {next(iter(layers), None)!r}")
    return names


def _check_hyperparameters(r, alpha, dropout, rslora) -> None:
    positive_int(r, "r")
    positive_number(alpha, "alpha")
    number_in(dropout, "dropout", 0, 1, high_open=True)
    if not isinstance(rslora, bool):
        raise TypeError(f"rslora must be True or False, got {rslora!r}")


def _check_new_name(model: nn.Module, name) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if "." in name or hasattr(nn.ModuleDict(), name):  # it becomes a key of nn.ParameterDict / ModuleDict
        raise ValueError(f"name must not contain '.' or be an attribute of nn.ModuleDict (such as 'keys', "
                         f"'update', 'training'), got {name!r}")
    if name in adapter_names(model):
        raise ValueError(f"name={name!r} is already in use (adapters: {adapter_names(model)}); "
                         f"pick another name or lora.delete(model, {name!r}) first")
    _check_not_merged(model)


def _check_known_name(model: nn.Module, name) -> None:
    if name not in adapter_names(model):
        raise ValueError(f"name={name!r} is not an adapter of this model; adapters: {adapter_names(model)}")


def _check_float_base(layers: dict[str, LoRALinear]) -> None:
    quantized = [n for n, m in layers.items() if not m.base_layer.weight.is_floating_point()]
    if quantized:
        raise ValueError(f"layers {quantized[:2]} have a 4-bit base; adding B A to packed codes is "
                         f"meaningless: use peftlab.qlora.merge(model) (dequantize, add, requantize)")


def _check_not_merged(model: nn.Module) -> None:
    if _is_merged(model):
        raise ValueError("an adapter is merged into the weights; call lora.unmerge(model) first")


def _is_merged(model: nn.Module) -> bool:
    return any(m.merged for m in _wrappers(model).values())


def _install(model: nn.Module, name: str, layers: dict[str, tuple]) -> None:
    """Add adapter `name` to each layer (wrapping it if needed) from (config, A or None, B or None).
    All or nothing: every A and B is made first (A ~ Kaiming-uniform, B = 0, layer by layer, as before), so a
    failure (an allocation of a huge r) leaves the model as it was."""
    made = {}
    for module_name, (cfg, A, B) in layers.items():
        if A is None:
            d_in, d_out = _in_out(model.get_submodule(module_name))
            A = torch.empty(cfg.r, d_in)
            nn.init.kaiming_uniform_(A, a=math.sqrt(5))
            B = torch.zeros(d_out, cfg.r)  # B = 0: the output is unchanged at init
        made[module_name] = (cfg, A, B)
    for module_name, (cfg, A, B) in made.items():
        layer = model.get_submodule(module_name)
        if not isinstance(layer, LoRALinear):
            layer = LoRALinear(layer).train(layer.training)  # the model's mode: no dropout in an eval model
            parent, _, child = module_name.rpartition(".")
            setattr(model.get_submodule(parent), child, layer)
        layer.add_adapter(name, cfg, A, B)
    set_active(model, name)
