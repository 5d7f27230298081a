"""Prompt tuning (Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt
Tuning", arXiv:2104.08691).

The whole model stays frozen. A soft prompt P of n virtual tokens, n vectors of size d that are
not the embedding of any token, is put in front of the embedded input (section 2):

    x = [P ; E(ids)],   P: (n, d),   E(ids): (seq, d)   ->   the frozen model runs on n + seq positions

Only P trains: n * d parameters (20 tokens x 256 = 5,120 here). Initialisation (section 3.2):
"random" (normal, with the embedding table's spread), "vocab" (embeddings of tokens sampled from
the vocabulary; the paper samples the 5,000 most common, here the printable bytes), or "text"
(the embeddings of a given text, repeated to fill n, as PEFT does; the paper's class-label init).

The model is causal with right padding, so nothing needs a mask: the virtual tokens sit before
every real one, every real position attends to all of them, and padding at the end is never seen
by a real position. `forward(ids)` drops the n virtual positions from the logits, so they stay
aligned with `ids` and the labels: `train`, `memory_report` and `exact_match` work unchanged.

What the three virtual-token methods share (this file, P-tuning in `ptuning.py`, prefix tuning in
`prefix.py`): the wrapper with its calling convention, `generate`, `disabled`, `save` and `load`,
is in `peftlab.virtual_tokens`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .model import Transformer
from .tokenizer import ByteTokenizer
from .virtual_tokens import SoftPrompt, SoftPromptModel, attach, check_new, disabled, load_method, save

__all__ = ["add", "save", "load", "disabled", "num_parameters", "initial_prompt", "SoftPrompt", "SoftPromptModel",
           "INITS"]

INITS = ("random", "vocab", "text")
VOCAB_IDS = range(32, 127)  # printable ASCII: the bytes the pre-training text is made of


def initial_prompt(model: Transformer, n_tokens: int, init: str, init_text: str | None) -> torch.Tensor:
    """P at step 0, (n, d), by Lester et al.'s three initialisations (section 3.2)."""
    table = model.embed_tokens.weight.detach()  # (vocab, d)
    if init == "random":
        return torch.randn(n_tokens, table.shape[1], device=table.device) * table.std()
    if init == "vocab":
        choice = torch.randint(0, len(VOCAB_IDS), (n_tokens,))
        return table[torch.tensor(VOCAB_IDS, device=table.device)[choice.to(table.device)]].clone()
    ids = ByteTokenizer().encode(init_text)
    repeats = -(-n_tokens // len(ids))
    return table[torch.tensor((ids * repeats)[:n_tokens], device=table.device)].clone()


def _check_init(n_tokens: int, init, init_text) -> None:
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if (init == "text") != (init_text is not None):
        raise ValueError("init='text' needs init_text (a string), and init_text is used only with init='text'")
    if init == "text":
        if not isinstance(init_text, str) or not init_text:
            raise TypeError(f"init_text must be a non-empty string, got {init_text!r}")
        n_text = len(ByteTokenizer().encode(init_text))
        if n_text > n_tokens:
            raise ValueError(f"init_text is {n_text} tokens long, more than the prompt's n_tokens={n_tokens}; "
                             f"shorten the text or lengthen the prompt")


def _build(model: Transformer, n_tokens: int, init: str = "random", init_text: str | None = None) -> SoftPromptModel:
    check_new(model, n_tokens)
    _check_init(n_tokens, init, init_text)
    settings = {"n_tokens": n_tokens, "init": init, "init_text": init_text}
    return SoftPromptModel(model, SoftPrompt(initial_prompt(model, n_tokens, init, init_text)), "prompt", settings)


def add(model: Transformer, n_tokens: int = 20, init: str = "random", init_text: str | None = None) -> SoftPromptModel:
    """Prompt tuning: freeze `model` and return it wrapped with a trainable soft prompt of
    `n_tokens` vectors, initialised as `init` ("random", "vocab", or "text" from `init_text`).

    >>> from peftlab.model import ModelConfig, Transformer
    >>> from peftlab.measure import count_parameters
    >>> model = add(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)), n_tokens=4)
    >>> count_parameters(model).trainable == num_parameters(4, 32)
    True
    >>> model(torch.zeros(2, 5, dtype=torch.long)).shape  # logits for the 5 real positions only
    torch.Size([2, 5, 259])
    """
    return attach(_build(model, n_tokens, init, init_text))


def num_parameters(n_tokens: int, d_model: int) -> int:
    """Trainable parameters of prompt tuning: n * d.

    >>> num_parameters(20, 256)
    5120
    """
    return n_tokens * d_model


def load(model: Transformer, path: str | Path) -> SoftPromptModel:
    """Wrap `model` with a soft prompt written by `save`; checked against the model first.

    >>> import tempfile
    >>> from peftlab.model import ModelConfig, Transformer
    >>> cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)
    >>> path = save(add(Transformer(cfg), 4), tempfile.mkdtemp())
    >>> load(Transformer(cfg), path).n_tokens
    4
    """
    return load_method(model, path, "prompt", _build)
