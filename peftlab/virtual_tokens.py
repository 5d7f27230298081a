"""What prompt tuning, P-tuning and prefix tuning share: n virtual tokens in front of a frozen model.

The three methods differ in what the virtual tokens are (`peftlab.prompt`: n trained input vectors;
`peftlab.ptuning`: input vectors produced by a prompt encoder; `peftlab.prefix`: keys and values in
every layer) and share everything else, which lives here:

* `VirtualTokenModel`, the wrapper: it speaks the base model's calling convention, drops the
  virtual positions from the logits (so they stay aligned with the ids and the labels: `train`,
  `memory_report` and `exact_match` work unchanged) and generates with the model's KV cache;
* `disabled`: the base model alone inside a block;
* `save` and `load_method`: the weights (safetensors) and settings (JSON) of any of the three,
  checked against the base model before anything changes;
* `check_model`, `check_new`, `attach`: the checks every `add` makes, and the freezing;
* `SoftPromptModel`: the frozen model run on [P ; E(ids)], where P comes from a `SoftPrompt`
  (prompt tuning) or a prompt encoder (P-tuning).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as tensors_to_bytes
from torch import nn

from .checks import positive_int
from .files import check_together, write_together
from .model import KV, Transformer, generate

class VirtualTokenModel(nn.Module):
    """A frozen `Transformer` plus n virtual tokens. Subclasses say what the tokens are.

    It speaks the model's own calling convention, `forward(ids, prefix_kv=None, return_kv=False)`,
    where `prefix_kv` is a KV cache of earlier positions (virtual ones included), so the model's
    own `generate` (with its KV cache) runs on the wrapper unchanged.
    """

    method = ""  # "prompt", "ptuning" or "prefix": the file format's name

    def __init__(self, base_model: Transformer, n_tokens: int, settings: dict):
        super().__init__()
        self.base_model = base_model
        self.n_tokens = n_tokens
        self.settings = settings  # the hyperparameters `add` was called with, saved with the weights
        self.enabled = True

    @property
    def config(self):
        return self.base_model.config

    @property
    def device(self) -> torch.device:
        return self.base_model.device

    def set_gradient_checkpointing(self, enabled: bool = True, blocks: list[int] | None = None) -> None:
        self.base_model.set_gradient_checkpointing(enabled, blocks)

    def check_length(self, seq: int, extra: int = 0) -> None:
        """A clear error before the model sees more positions than its context holds."""
        limit = self.config.max_seq_len
        if self.enabled and self.n_tokens + seq + extra > limit:
            more = f" plus {extra} new tokens" if extra else ""
            raise ValueError(f"input of {seq} tokens{more} plus {self.n_tokens} virtual tokens = "
                             f"{self.n_tokens + seq + extra} exceeds the model's context of max_seq_len={limit}")

    def forward(self, ids: torch.Tensor, *, prefix_kv: list[KV] | None = None, return_kv: bool = False):
        """Logits (batch, seq, vocab) for the real positions; a given `prefix_kv` is a KV cache
        that already holds the virtual tokens (from an earlier call with `return_kv=True`)."""
        if prefix_kv is not None or not self.enabled:
            return self.base_model(ids, prefix_kv=prefix_kv, return_kv=return_kv)
        self.check_length(ids.shape[1])
        return self.forward_virtual(ids, return_kv)

    def forward_virtual(self, ids: torch.Tensor, return_kv: bool):
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
        """`Transformer.generate` (greedy or sampled, KV cache) with the virtual tokens in front;
        returns (batch, seq + new) real token ids."""
        self.check_length(ids.shape[1], max_new_tokens)
        return generate(self, ids, max_new_tokens, **kwargs)


def check_model(model) -> None:
    if not isinstance(model, Transformer):
        raise TypeError(f"model must be a peftlab Transformer (it takes inputs_embeds= and prefix_kv=), "
                        f"got {type(model).__name__}")
    trained = sorted({type(m).__name__ for m in model.modules() if type(m).__module__ in _METHOD_MODULES
                      and any(p.requires_grad for p in m.parameters())})
    if trained:
        raise ValueError(f"the model already holds trainable {', '.join(trained)} layers, which this method "
                         f"would freeze with the base; fold them in first (lora.merge, then lora.unload), or add the "
                         f"virtual tokens to a plain model")


_METHOD_MODULES = ("peftlab.lora", "peftlab.adapters")  # layers other methods add, trained by their owner


def check_new(model, n_tokens) -> None:
    """The checks every method's `add` makes first: a peftlab model, and n_tokens that fit its context."""
    check_model(model)
    positive_int(n_tokens, "n_tokens")
    if n_tokens >= model.config.max_seq_len:
        raise ValueError(f"n_tokens={n_tokens} virtual tokens leave no room for input in the model's "
                         f"context of max_seq_len={model.config.max_seq_len}")


def attach(wrapper: VirtualTokenModel) -> VirtualTokenModel:
    """Freeze the base model: only the wrapper's own parameters train."""
    wrapper.base_model.requires_grad_(False)
    return wrapper


@contextmanager
def disabled(model: VirtualTokenModel) -> Iterator[VirtualTokenModel]:
    """Run the base model unchanged inside the block, no virtual tokens; restore afterwards.

    >>> from peftlab import prompt
    >>> from peftlab.model import ModelConfig, Transformer
    >>> base = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    >>> model, ids = prompt.add(base, 4), torch.zeros(1, 3, dtype=torch.long)
    >>> with disabled(model): torch.equal(model(ids), base(ids))
    True
    """
    if not isinstance(model, VirtualTokenModel):
        raise TypeError(f"model must be a wrapper returned by prompt/ptuning/prefix.add, got {type(model).__name__}")
    was = model.enabled
    model.enabled = False
    try:
        yield model
    finally:
        model.enabled = was


def files(method: str) -> tuple[str, str]:
    return f"{method}_config.json", f"{method}.safetensors"


def save(model: VirtualTokenModel, path: str | Path) -> Path:
    """Write the virtual tokens' weights (safetensors) and settings (JSON) to directory `path` as one
    save (`files.write_together`, checked by `load`); the base model is not saved. Works for prompt
    tuning, P-tuning and prefix tuning.

    >>> import tempfile
    >>> from peftlab import prompt
    >>> from peftlab.model import ModelConfig, Transformer
    >>> model = prompt.add(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)), 4)
    >>> sorted(p.name for p in save(model, tempfile.mkdtemp()).iterdir())
    ['peftlab_manifest.json', 'prompt.safetensors', 'prompt_config.json']
    """
    if not isinstance(model, VirtualTokenModel):
        raise TypeError(f"model must be a wrapper returned by prompt/ptuning/prefix.add, got {type(model).__name__}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
               if not k.startswith("base_model.")}
    cfg = model.config
    config = {"format": f"peftlab-{model.method}", "settings": model.settings,
              "base": {"d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads}}
    config_file, weights_file = files(model.method)
    return write_together(path, {weights_file: tensors_to_bytes(tensors), config_file: json.dumps(config, indent=2).encode()})


def load_method(model: Transformer, path: str | Path, method: str,
                 build: Callable[..., VirtualTokenModel]) -> VirtualTokenModel:
    """`load` of one method: every check runs before the base model is frozen and wrapped."""
    check_model(model)
    path = Path(path)
    config_file, weights_file = files(method)
    if not (path / config_file).is_file() or not (path / weights_file).is_file():
        found = sorted(p.name for p in path.glob("*_config.json")) if path.is_dir() else []
        raise FileNotFoundError(f"{path} holds no {method} weights: expected {config_file} + {weights_file}"
                                + (f"; found {found} (load it with the matching module)" if found else ""))
    check_together(path, (config_file, weights_file))
    try:
        config = json.loads((path / config_file).read_text())
        tensors = load_file(path / weights_file)
        settings, base = config["settings"], config["base"]
    except Exception as e:  # JSON and safetensors raise their own types on a corrupt file
        raise ValueError(f"{path} holds a corrupt {method} file: {type(e).__name__}: {e}") from e
    if config.get("format") != f"peftlab-{method}":
        raise ValueError(f"{path / config_file}: format is {config.get('format')!r}, expected 'peftlab-{method}'")
    ours = {k: getattr(model.config, k) for k in base}
    if base != ours:
        raise ValueError(f"{path} was trained on a model with {base}; this model has {ours}")
    try:
        wrapper = build(model, **settings)
    except TypeError as e:  # a settings key that this method's add does not take
        raise ValueError(f"{path / config_file}: settings {sorted(settings)} are not those of {method}.add: {e}") from e
    want = {k: tuple(v.shape) for k, v in wrapper.state_dict().items() if not k.startswith("base_model.")}
    have = {k: tuple(v.shape) for k, v in tensors.items()}
    if want != have:
        raise ValueError(f"{path / weights_file} does not match its settings {settings}: "
                         f"expected tensors {want}, the file has {have}")
    wrapper.load_state_dict(tensors, strict=False)
    return attach(wrapper)


# --- a soft prompt in front of the input: prompt tuning and P-tuning ---------------------------

class SoftPrompt(nn.Module):
    """P: n trainable vectors of size d. `soft_prompt()` returns them, (n, d)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self) -> torch.Tensor:
        return self.weight


class SoftPromptModel(VirtualTokenModel):
    """The frozen model run on [P ; E(ids)], logits for the ids' positions only.

    `soft_prompt` is any module that returns P, (n, d): a `SoftPrompt` for prompt tuning, a
    prompt encoder for P-tuning.
    """

    def __init__(self, base_model: Transformer, soft_prompt: nn.Module, method: str, settings: dict):
        super().__init__(base_model, settings["n_tokens"], settings)
        self.method = method
        self.soft_prompt = soft_prompt

    def forward_virtual(self, ids: torch.Tensor, return_kv: bool):
        prompt = self.soft_prompt()  # (n, d)
        embeds = self.base_model.embed_tokens(ids)  # (batch, seq, d)
        prompt = prompt.to(embeds.dtype).expand(ids.shape[0], -1, -1)  # (batch, n, d)
        out = self.base_model(inputs_embeds=torch.cat([prompt, embeds], dim=1), return_kv=return_kv)
        logits, kv = out if return_kv else (out, None)
        logits = logits[:, self.n_tokens:]  # drop the virtual positions: aligned with ids again
        return (logits, kv) if return_kv else logits
