"""Prefix tuning (Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation",
arXiv:2101.00190).

Prompt tuning adds virtual tokens at the input only; prefix tuning gives every layer its own.
Each attention layer l gets P trainable key and value vectors per head that every real query
attends to, as if P earlier tokens had produced them (section 4):

    head = softmax(q [K_prefix^l ; K]^T / sqrt(d_head)) [V_prefix^l ; V],   K_prefix^l, V_prefix^l: (P, d)

They enter through the model's `prefix_kv=` hook, the same one its KV cache uses, so the real
tokens take positions P..P+seq-1. A learned key is free, so it is taken as already rotated for
its position (prefixes built from real text, `init_text`, are rotated by the model itself).
The prefixes hold 2 * L * P * d numbers (L layers).

Reparametrization (section 4.3, "Parametrization of P"): training those numbers directly was unstable in the paper, so
they come from a small P x d matrix through an MLP, P_l = MLP(P'), with (here, as in PEFT)

    P' (P, d) -> Linear(d, h) -> tanh -> Linear(h, 2 L d) -> per-layer K and V

After training only the MLP's output is needed: `fold` computes it once and keeps that,
2 L P d parameters; the outputs are the same (tested). While training, the MLP is the larger
part: P d + (d h + h) + (h 2 L d + 2 L d) parameters.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .checks import positive_int
from .model import KV, Transformer
from .tokenizer import ByteTokenizer
from .virtual_tokens import VirtualTokenModel, attach, check_new, disabled, load_method, save

__all__ = ["add", "fold", "save", "load", "disabled", "num_parameters", "text_prefix", "PrefixEncoder", "PrefixModel"]


class PrefixEncoder(nn.Module):
    """Produces each layer's prefix keys and values: `prefix_encoder()` -> L pairs of (1, H, P, d_head).

    With `hidden` (reparametrization), from P' through the MLP; with `hidden=None`, the prefixes
    themselves are the parameter, shape (L, 2, H, P, d_head).
    """

    def __init__(self, cfg, n_tokens: int, hidden: int | None, prefix: torch.Tensor | None = None):
        super().__init__()
        self.shape = (cfg.n_layers, 2, cfg.n_heads, n_tokens, cfg.head_dim)  # (L, keys/values, H, P, d_head)
        if hidden is None:
            # N(0, 1): about the spread of the base model's own keys and values
            self.prefix = nn.Parameter(torch.randn(self.shape) if prefix is None else prefix)
        else:
            self.embedding = nn.Parameter(torch.randn(n_tokens, cfg.d_model))  # P', (P, d)
            self.mlp = nn.Sequential(nn.Linear(cfg.d_model, hidden), nn.Tanh(),
                                     nn.Linear(hidden, 2 * cfg.n_layers * cfg.d_model))

    def forward(self) -> list[KV]:
        if hasattr(self, "prefix"):
            kv = self.prefix
        else:
            L, _, H, P, dh = self.shape
            # (P, 2 L d) -> (P, L, 2, H, d_head) -> (L, 2, H, P, d_head)
            kv = self.mlp(self.embedding).view(P, L, 2, H, dh).permute(1, 2, 3, 0, 4)
        return [(layer[0].unsqueeze(0), layer[1].unsqueeze(0)) for layer in kv]


class PrefixModel(VirtualTokenModel):
    """The frozen model with trainable prefixes in every layer; logits for the real positions."""

    method = "prefix"

    def __init__(self, base_model: Transformer, prefix_encoder: PrefixEncoder, settings: dict):
        super().__init__(base_model, settings["n_tokens"], settings)
        self.prefix_encoder = prefix_encoder

    def forward_virtual(self, ids: torch.Tensor, return_kv: bool):
        return self.base_model(ids, prefix_kv=self.prefix_encoder(), return_kv=return_kv)


def _check_hidden(hidden, reparametrize, init_text) -> None:
    if not isinstance(reparametrize, bool):
        raise TypeError(f"reparametrize must be True or False, got {reparametrize!r}")
    if reparametrize:
        positive_int(hidden, "hidden")
    if init_text is not None and reparametrize:
        raise ValueError("init_text sets the prefixes themselves, which needs reparametrize=False "
                         "(with the MLP the prefixes are its output)")
    if init_text is not None and (not isinstance(init_text, str) or not init_text):
        raise TypeError(f"init_text must be a non-empty string, got {init_text!r}")


@torch.no_grad()
def text_prefix(model: Transformer, n_tokens: int, init_text: str) -> torch.Tensor:
    """The model's own keys and values for `init_text` (repeated to fill P), (L, 2, H, P, d_head):
    Li & Liang's initialisation with the activations of real words (their initialisation study)."""
    ids = ByteTokenizer().encode(init_text)
    if len(ids) > n_tokens:
        raise ValueError(f"init_text is {len(ids)} tokens long, more than n_tokens={n_tokens}; "
                         f"shorten the text or lengthen the prefix")
    ids = (ids * -(-n_tokens // len(ids)))[:n_tokens]
    _, kv = model(torch.tensor([ids], device=model.device), return_kv=True)
    return torch.stack([torch.stack([k[0], v[0]]) for k, v in kv]).clone()


def _build(model: Transformer, n_tokens: int, reparametrize: bool = True, hidden: int = 512,
          init_text: str | None = None) -> PrefixModel:
    check_new(model, n_tokens)
    _check_hidden(hidden, reparametrize, init_text)
    prefix = None if init_text is None else text_prefix(model, n_tokens, init_text)
    encoder = PrefixEncoder(model.config, n_tokens, hidden if reparametrize else None, prefix)
    settings = {"n_tokens": n_tokens, "reparametrize": reparametrize, "hidden": hidden, "init_text": init_text}
    return PrefixModel(model, encoder.to(model.device), settings)


def add(model: Transformer, n_tokens: int = 10, reparametrize: bool = True, hidden: int = 512,
        init_text: str | None = None) -> PrefixModel:
    """Prefix tuning: freeze `model` and return it wrapped with trainable prefixes of `n_tokens`
    positions in every layer, produced by an MLP of width `hidden` (`reparametrize=True`), or
    trained directly, optionally starting from the model's own keys and values for `init_text`.

    >>> from peftlab.model import ModelConfig, Transformer
    >>> from peftlab.measure import count_parameters
    >>> model = add(Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64)), 4, reparametrize=False)
    >>> count_parameters(model).trainable == 2 * 2 * 4 * 32  # 2 L P d
    True
    """
    return attach(_build(model, n_tokens, reparametrize, hidden, init_text))


@torch.no_grad()
def fold(model: PrefixModel) -> PrefixModel:
    """Drop the reparametrization MLP: keep its output as the prefixes (2 L P d parameters), in
    place. The outputs do not change.

    >>> from peftlab.model import ModelConfig, Transformer
    >>> from peftlab.measure import count_parameters
    >>> model = fold(add(Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64)), 4, hidden=8))
    >>> count_parameters(model).trainable == num_parameters(4, 32, 2)
    True
    """
    if not isinstance(model, PrefixModel):
        raise TypeError(f"model must be a wrapper returned by prefix.add, got {type(model).__name__}")
    if not model.settings["reparametrize"]:
        raise ValueError("this prefix has no reparametrization MLP to fold (reparametrize=False)")
    kv = torch.stack([torch.stack([k[0], v[0]]) for k, v in model.prefix_encoder()])  # (L, 2, H, P, d_head)
    model.prefix_encoder = PrefixEncoder(model.config, model.n_tokens, None, kv.clone())
    model.settings = {**model.settings, "reparametrize": False, "init_text": None}
    return model


def num_parameters(n_tokens: int, d_model: int, n_layers: int, hidden: int | None = None) -> int:
    """Trainable parameters: 2 L P d for the prefixes themselves (`hidden=None`, or after `fold`);
    P d + (d h + h) + (h 2 L d + 2 L d) while training through the MLP of width h.

    >>> num_parameters(10, 256, 4)
    20480
    """
    if hidden is None:
        return 2 * n_layers * n_tokens * d_model
    out = 2 * n_layers * d_model
    return n_tokens * d_model + (d_model * hidden + hidden) + (hidden * out + out)


def load(model: Transformer, path: str | Path) -> PrefixModel:
    """Wrap `model` with prefixes written by `save`; checked against the model first.

    >>> import tempfile
    >>> from peftlab.model import ModelConfig, Transformer
    >>> cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)
    >>> path = save(add(Transformer(cfg), 4, hidden=8), tempfile.mkdtemp())
    >>> load(Transformer(cfg), path).n_tokens
    4
    """
    return load_method(model, path, "prefix", _build)
