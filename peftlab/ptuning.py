"""P-tuning (Liu et al. 2021, "GPT Understands, Too", arXiv:2103.10385).

Like prompt tuning, n virtual tokens go in front of the input of a frozen model (this file reuses
`virtual_tokens.SoftPromptModel`). The difference: the virtual token embeddings are not trained directly
but produced by a prompt encoder from n trainable input vectors h_1..h_n (section 3.2), so that
they depend on each other:

    "lstm" (the paper):  P = MLP(BiLSTM(h_1..h_n)),  a 2-layer bidirectional LSTM of width k,
                         then Linear(2k, 2k) -> ReLU -> Linear(2k, d)
    "mlp":               P = Linear(k, d)(ReLU(Linear(k, k)(ReLU(Linear(d, k) h))))

(the shapes of PEFT's `PromptEncoder`). The paper also places virtual tokens between parts of a
template; here they go in front, as PEFT does for causal language models.

Trainable parameters, with n tokens, model width d, encoder width k:

    lstm:  n d + 8 k (d + k + 2) + 8 k (3 k + 2) + (2k 2k + 2k) + (2k d + d)
    mlp:   n d + (d k + k) + (k k + k) + (k d + d)

After training the encoder is needed no more: `fold` runs it once and keeps P (n d parameters),
a plain prompt-tuning model with the same outputs, saved and loaded by `peftlab.prompt`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .checks import positive_int
from .model import Transformer
from .virtual_tokens import SoftPrompt, SoftPromptModel, attach, check_new, disabled, load_method, save

__all__ = ["add", "fold", "save", "load", "disabled", "num_parameters", "PromptEncoder", "ENCODERS"]

ENCODERS = ("lstm", "mlp")


class PromptEncoder(nn.Module):
    """`prompt_encoder()` -> the soft prompt P, (n, d), computed from n trainable inputs h."""

    def __init__(self, n_tokens: int, d_model: int, hidden: int, encoder: str):
        super().__init__()
        self.encoder = encoder
        self.embedding = nn.Parameter(torch.randn(n_tokens, d_model))  # h_1..h_n, N(0, 1) as nn.Embedding
        if encoder == "lstm":
            self.lstm = nn.LSTM(d_model, hidden, num_layers=2, bidirectional=True, batch_first=True)
            self.mlp_head = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.ReLU(),
                                          nn.Linear(2 * hidden, d_model))
        else:
            self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, d_model))

    def forward(self) -> torch.Tensor:
        if self.encoder == "lstm":
            states, _ = self.lstm(self.embedding.unsqueeze(0))  # (1, n, 2k): both directions
            return self.mlp_head(states[0])  # (n, d)
        return self.mlp(self.embedding)


def _build(model: Transformer, n_tokens: int, encoder: str = "lstm", hidden: int | None = None) -> SoftPromptModel:
    check_new(model, n_tokens)
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
    hidden = model.config.d_model if hidden is None else hidden
    positive_int(hidden, "hidden")
    settings = {"n_tokens": n_tokens, "encoder": encoder, "hidden": hidden}
    prompt_encoder = PromptEncoder(n_tokens, model.config.d_model, hidden, encoder).to(model.device)
    return SoftPromptModel(model, prompt_encoder, "ptuning", settings)


def add(model: Transformer, n_tokens: int = 20, encoder: str = "lstm", hidden: int | None = None) -> SoftPromptModel:
    """P-tuning: freeze `model` and return it wrapped with `n_tokens` virtual tokens produced by a
    prompt encoder ("lstm" or "mlp") of width `hidden` (default: the model's width d).

    >>> from peftlab.model import ModelConfig, Transformer
    >>> from peftlab.measure import count_parameters
    >>> model = add(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)), 4, encoder="mlp", hidden=8)
    >>> count_parameters(model).trainable == num_parameters(4, 32, 8, "mlp")
    True
    """
    return attach(_build(model, n_tokens, encoder, hidden))


@torch.no_grad()
def fold(model: SoftPromptModel) -> SoftPromptModel:
    """Run the prompt encoder once and keep its output P as a plain soft prompt (n d parameters),
    in place: the outputs do not change; the model is then a prompt-tuning model.

    >>> from peftlab.model import ModelConfig, Transformer
    >>> from peftlab.measure import count_parameters
    >>> model = fold(add(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)), 4))
    >>> count_parameters(model).trainable, model.method
    (128, 'prompt')
    """
    if not isinstance(model, SoftPromptModel) or model.method != "ptuning":
        raise TypeError(f"model must be a wrapper returned by ptuning.add, got {type(model).__name__} "
                        f"({getattr(model, 'method', '')!r})")
    model.soft_prompt = SoftPrompt(model.soft_prompt().detach().clone())
    model.method = "prompt"
    model.settings = {"n_tokens": model.n_tokens, "init": "random", "init_text": None}  # weights replace the init
    return model


def num_parameters(n_tokens: int, d_model: int, hidden: int, encoder: str) -> int:
    """Trainable parameters of P-tuning (see the module docstring).

    >>> num_parameters(20, 256, 256, "mlp")
    202496
    """
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
    n, d, k = n_tokens, d_model, hidden
    if encoder == "mlp":
        return n * d + (d * k + k) + (k * k + k) + (k * d + d)
    # per LSTM layer and direction: 4 gates x (input weights + hidden weights + two biases)
    lstm = 2 * 4 * k * (d + k + 2) + 2 * 4 * k * (2 * k + k + 2)
    return n * d + lstm + (2 * k * 2 * k + 2 * k) + (2 * k * d + d)


def load(model: Transformer, path: str | Path) -> SoftPromptModel:
    """Wrap `model` with a prompt encoder written by `save`; checked against the model first.

    >>> import tempfile
    >>> from peftlab.model import ModelConfig, Transformer
    >>> cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)
    >>> path = save(add(Transformer(cfg), 4, hidden=8), tempfile.mkdtemp())
    >>> load(Transformer(cfg), path).settings["encoder"]
    'lstm'
    """
    return load_method(model, path, "ptuning", _build)
