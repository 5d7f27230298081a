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

This file also holds what the three virtual-token methods share (prompt tuning, P-tuning in
`ptuning.py`, prefix tuning in `prefix.py`): the wrapper with its calling convention, `generate`,
`disabled`, `save` and `load`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .model import KV, Transformer
from .tokenizer import ByteTokenizer

INITS = ("random", "vocab", "text")
VOCAB_IDS = range(32, 127)  # printable ASCII: the bytes the pre-training text is made of


# --- shared by prompt tuning, P-tuning and prefix tuning -------------------------------------

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
        return Transformer.generate(self, ids, max_new_tokens, **kwargs)


def _check_n_tokens(value, param: str = "n_tokens") -> None:
    """`value` is a positive int (n_tokens: the number of virtual tokens; or a width such as hidden)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{param} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{param} must be a positive int, got {value}")


def _check_model(model) -> None:
    if not isinstance(model, Transformer):
        raise TypeError(f"model must be a peftlab Transformer (it takes inputs_embeds= and prefix_kv=), "
                        f"got {type(model).__name__}")


def _check_new(model, n_tokens) -> None:
    """The checks every method's `add` makes first: a peftlab model, and n_tokens that fit its context."""
    _check_model(model)
    _check_n_tokens(n_tokens)
    if n_tokens >= model.config.max_seq_len:
        raise ValueError(f"n_tokens={n_tokens} virtual tokens leave no room for input in the model's "
                         f"context of max_seq_len={model.config.max_seq_len}")


def _attach(wrapper: VirtualTokenModel) -> VirtualTokenModel:
    """Freeze the base model: only the wrapper's own parameters train."""
    wrapper.base_model.requires_grad_(False)
    return wrapper


@contextmanager
def disabled(model: VirtualTokenModel) -> Iterator[VirtualTokenModel]:
    """Run the base model unchanged inside the block, no virtual tokens; restore afterwards.

    >>> from peftlab.model import ModelConfig, Transformer
    >>> base = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    >>> model, ids = add(base, 4), torch.zeros(1, 3, dtype=torch.long)
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


def _files(method: str) -> tuple[str, str]:
    return f"{method}_config.json", f"{method}.safetensors"


def save(model: VirtualTokenModel, path: str | Path) -> Path:
    """Write the virtual tokens' weights (safetensors) and settings (JSON) to directory `path`;
    the base model is not saved. Works for prompt tuning, P-tuning and prefix tuning.

    >>> import tempfile
    >>> from peftlab.model import ModelConfig, Transformer
    >>> model = add(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)), 4)
    >>> sorted(p.name for p in save(model, tempfile.mkdtemp()).iterdir())
    ['prompt.safetensors', 'prompt_config.json']
    """
    if not isinstance(model, VirtualTokenModel):
        raise TypeError(f"model must be a wrapper returned by prompt/ptuning/prefix.add, got {type(model).__name__}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
               if not k.startswith("base_model.")}
    cfg = model.config
    config = {"format": f"peftlab-{model.method}", "settings": model.settings,
              "base": {"d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads}}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config_file, weights_file = _files(model.method)
    save_file(tensors, path / weights_file)
    (path / config_file).write_text(json.dumps(config, indent=2))
    return path


def _load_method(model: Transformer, path: str | Path, method: str,
                 build: Callable[..., VirtualTokenModel]) -> VirtualTokenModel:
    """`load` of one method: every check runs before the base model is frozen and wrapped."""
    _check_model(model)
    path = Path(path)
    config_file, weights_file = _files(method)
    if not (path / config_file).is_file() or not (path / weights_file).is_file():
        found = sorted(p.name for p in path.glob("*_config.json")) if path.is_dir() else []
        raise FileNotFoundError(f"{path} holds no {method} weights: expected {config_file} + {weights_file}"
                                + (f"; found {found} (load it with the matching module)" if found else ""))
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
    wrapper = build(model, **settings)
    want = {k: tuple(v.shape) for k, v in wrapper.state_dict().items() if not k.startswith("base_model.")}
    have = {k: tuple(v.shape) for k, v in tensors.items()}
    if want != have:
        raise ValueError(f"{path / weights_file} does not match its settings {settings}: "
                         f"expected tensors {want}, the file has {have}")
    wrapper.load_state_dict(tensors, strict=False)
    return _attach(wrapper)


# --- prompt tuning ---------------------------------------------------------------------------

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
    _check_new(model, n_tokens)
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
    return _attach(_build(model, n_tokens, init, init_text))


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
    return _load_method(model, path, "prompt", _build)


# --- explorer for notebooks 06, 07 and 17 ----------------------------------------------------

class VirtualTokenExplorer:
    """Train a fresh prompt / P-tuning / prefix wrapper briefly on the Q/A task and report the
    loss curve, the held-out answer loss and exact match. `run()` returns a plain dict (tested
    without a browser); `show()` draws sliders and a plot around it.

    >>> ex = VirtualTokenExplorer(n_eval=8)
    >>> r = ex.run("prompt", n_tokens=4, option="vocab", steps=2)
    >>> sorted(r)
    ['accuracy', 'heldout_loss', 'loss', 'trainable']
    """

    METHODS = {"prompt": ("init", INITS), "ptuning": ("encoder", ("lstm", "mlp")),
               "prefix": ("reparametrize", ("mlp", "direct"))}
    LR = {"prompt": 0.1, "ptuning": 1e-2, "prefix": 3e-3, "prefix-direct": 0.1}  # from short sweeps
    INIT_TEXT = "Q: Who? What?\nA:"  # the task's format, as Lester's class-label init uses the task's words

    def __init__(self, model: Transformer | None = None, batch_size: int = 8, n_eval: int = 96):
        from . import data
        from .checkpoint import load_base
        self.base = model if model is not None else load_base()
        self.qa = data.qa_task()
        self.batch_size, self.test = batch_size, self.qa["test"][:n_eval]
        self.history: list[dict] = []
        self.last_model: VirtualTokenModel | None = None  # the model of the latest `run`

    def make(self, method: str, n_tokens: int, option: str) -> VirtualTokenModel:
        """A fresh wrapper on a copy of the base model."""
        import copy

        from . import prefix, ptuning
        if method not in self.METHODS or option not in self.METHODS[method][1]:
            raise ValueError(f"method and option must be one of {self.METHODS}, got {method!r}, {option!r}")
        base = copy.deepcopy(self.base)
        if method == "prompt":
            text = self.INIT_TEXT if option == "text" else None
            if text is not None and len(ByteTokenizer().encode(text)) > n_tokens:
                text = text[-n_tokens:]  # the end of the format: "A:" next to the question
            return add(base, n_tokens, init=option, init_text=text)
        if method == "ptuning":
            return ptuning.add(base, n_tokens, encoder=option)
        return prefix.add(base, n_tokens, reparametrize=option == "mlp")

    def run(self, method: str = "prompt", n_tokens: int = 20, option: str = "vocab", steps: int = 40,
            seed: int = 0) -> dict:
        """Train `steps` steps; the loss curve, held-out answer loss, exact match, trainable count."""
        from .measure import count_parameters
        from .train import evaluate_loss, exact_match, train
        torch.manual_seed(seed)
        model = self.make(method, n_tokens, option)
        lr = self.LR["prefix-direct" if (method, option) == ("prefix", "direct") else method]
        hist = train(model, self.qa["train"], steps=steps, lr=lr, batch_size=self.batch_size, seed=seed,
                     progress=False)
        self.last_model = model
        return {"loss": hist.loss, "heldout_loss": evaluate_loss(model, self.test, loss_on="response"),
                "accuracy": exact_match(model, self.test), "trainable": count_parameters(model).trainable}

    def show(self, method: str = "prompt") -> None:
        import ipywidgets as W
        import matplotlib.pyplot as plt
        from IPython.display import display
        name, options = self.METHODS[method]
        n_tokens = W.SelectionSlider(options=[1, 2, 5, 10, 20, 50], value=10, description="tokens")
        option = W.ToggleButtons(options=list(options), description=name)
        steps = W.SelectionSlider(options=[20, 40, 80, 160], value=40, description="steps")
        button, result, plot = W.Button(description="Train", button_style="primary"), W.HTML(), W.Output()

        def update(_=None):
            result.value = "training..."
            r = self.run(method, n_tokens.value, option.value, steps.value)
            label = f"{n_tokens.value} {option.value} {steps.value}"
            self.history.append({"label": label, **r})
            result.value = (f"<b>{label}</b>: {r['trainable']:,} trainable, held-out answer loss "
                            f"{r['heldout_loss']:.3f}, exact match {r['accuracy']:.0%}")
            with plot:
                plot.clear_output(wait=True)
                fig, ax = plt.subplots(figsize=(7, 3))
                for h in self.history[-6:]:
                    ax.plot(h["loss"], label=f"{h['label']}: {h['heldout_loss']:.2f}")
                ax.set(xlabel="step", ylabel="training loss (answer tokens)", title=f"{method} tuning on Q/A")
                ax.legend(fontsize=8)
                plt.show()

        button.on_click(update)
        display(W.VBox([W.HBox([n_tokens, steps]), W.HBox([option, button]), result, plot]))
