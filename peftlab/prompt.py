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

Hugging Face PEFT's prompt tuning (`PromptTuningConfig`) is the same method with two differences a
learner comparing the two will see: PEFT's forward returns logits for the n virtual positions too
(n + seq of them; here only seq), and its "RANDOM" init draws P from N(0, 1), where "random" here
uses the spread of the embedding table. `save(..., format="peft")` writes PEFT's files and `load`
reads them, so a soft prompt moves between the two (tested against PEFT).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as tensors_to_bytes

from .files import check_together, write_together
from .model import Transformer
from .tokenizer import ByteTokenizer
from .virtual_tokens import SoftPrompt, SoftPromptModel, attach, check_model, check_new, disabled, load_method
from .virtual_tokens import save as _save

__all__ = ["add", "save", "load", "disabled", "num_parameters", "initial_prompt", "SoftPrompt", "SoftPromptModel",
           "INITS"]

INITS = ("random", "vocab", "text")
FORMATS = ("peftlab", "peft")
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")  # PEFT's config and weights
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


def save(model: SoftPromptModel, path: str | Path, format: str = "peftlab") -> Path:
    """Write the soft prompt to directory `path` as one save (`files.write_together`). format="peft"
    writes PEFT's prompt-tuning files (`adapter_config.json` with peft_type PROMPT_TUNING,
    `adapter_model.safetensors` holding `prompt_embeddings`, (n, d)), which
    `peft.PeftModel.from_pretrained` loads onto `peftlab.hf.to_hf(base)`.

    >>> import tempfile
    >>> from peftlab.model import ModelConfig, Transformer
    >>> model = add(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)), 4)
    >>> sorted(p.name for p in save(model, tempfile.mkdtemp(), format="peft").iterdir())
    ['adapter_config.json', 'adapter_model.safetensors', 'peftlab_manifest.json']
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if not isinstance(model, SoftPromptModel) or model.method != "prompt":
        raise TypeError(f"model must be a prompt-tuning model (prompt.add or prompt.load), got "
                        f"{type(model).__name__} {getattr(model, 'method', '')!r}")
    if format == "peftlab":
        return _save(model, path)
    cfg, P = model.config, model.soft_prompt.weight
    config = {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": P.shape[0],
              "token_dim": cfg.d_model, "num_transformer_submodules": 1, "num_attention_heads": cfg.n_heads,
              "num_layers": cfg.n_layers, "prompt_tuning_init": "RANDOM",  # the weights below replace any init
              "inference_mode": True}
    weights = tensors_to_bytes({"prompt_embeddings": P.detach().cpu().contiguous()})
    return write_together(path, {PEFT_FILES[1]: weights, PEFT_FILES[0]: json.dumps(config, indent=2).encode()})


def load(model: Transformer, path: str | Path) -> SoftPromptModel:
    """Wrap `model` with a soft prompt written by `save` (either format) or by PEFT's prompt tuning;
    checked against the model first.

    >>> import tempfile
    >>> from peftlab.model import ModelConfig, Transformer
    >>> cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)
    >>> path = save(add(Transformer(cfg), 4), tempfile.mkdtemp())
    >>> load(Transformer(cfg), path).n_tokens
    4
    """
    path = Path(path)
    if not (path / PEFT_FILES[0]).is_file():
        return load_method(model, path, "prompt", _build)
    check_model(model)
    if (path / "prompt_config.json").is_file():
        raise ValueError(f"{path} holds a soft prompt in both formats (prompt_config.json and {PEFT_FILES[0]}); "
                         f"keep one of them")
    check_together(path, PEFT_FILES)
    try:
        config = json.loads((path / PEFT_FILES[0]).read_text())
        P = load_file(path / PEFT_FILES[1])["prompt_embeddings"]
    except Exception as e:  # JSON, safetensors and a missing key raise their own types
        raise ValueError(f"{path} holds no readable PEFT prompt-tuning adapter: {type(e).__name__}: {e}") from e
    if config.get("peft_type") != "PROMPT_TUNING":
        raise ValueError(f"{path / PEFT_FILES[0]} is a PEFT {config.get('peft_type')!r} adapter, not prompt tuning "
                         f"(a LORA adapter loads with lora.load)")
    if config.get("num_transformer_submodules", 1) != 1 or tuple(P.shape) != (P.shape[0], model.config.d_model):
        raise ValueError(f"{path}: prompt_embeddings {tuple(P.shape)} for {config.get('num_transformer_submodules')} "
                         f"submodules do not fit this decoder-only model of d_model={model.config.d_model}")
    wrapper = _build(model, P.shape[0])
    with torch.no_grad():
        wrapper.soft_prompt.weight.copy_(P)
    return attach(wrapper)
