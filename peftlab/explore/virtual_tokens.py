"""VirtualTokenExplorer (notebooks 06, 07 and 17): train a fresh prompt / P-tuning / prefix wrapper
briefly on the Q/A task and report the loss curve, the held-out answer loss and exact match.
"""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from .. import data, methods
from ..checkpoint import load_base
from ..evaluate import evaluate_loss, exact_match
from ..measure import count_parameters
from ..model import Transformer
from ..prompt import INITS
from ..tokenizer import ByteTokenizer
from ..train import train
from ..virtual_tokens import VirtualTokenModel


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
        self.base = model if model is not None else load_base()
        self.qa = data.qa_task()
        self.batch_size, self.test = batch_size, self.qa["test"][:n_eval]
        self.history: list[dict] = []
        self.last_model: VirtualTokenModel | None = None  # the model of the latest `run`

    def make(self, method: str, n_tokens: int, option: str) -> VirtualTokenModel:
        """A fresh wrapper on a copy of the base model (`methods.prepare`)."""
        if method not in self.METHODS or option not in self.METHODS[method][1]:
            raise ValueError(f"method and option must be one of {self.METHODS}, got {method!r}, {option!r}")
        if method == "prompt":
            text = self.INIT_TEXT if option == "text" else None
            if text is not None and len(ByteTokenizer().encode(text)) > n_tokens:
                text = text[-n_tokens:]  # the end of the format: "A:" next to the question
            return methods.prepare(self.base, "prompt", n_tokens=n_tokens, init=option, init_text=text)
        if method == "ptuning":
            return methods.prepare(self.base, "ptuning", n_tokens=n_tokens, encoder=option)
        return methods.prepare(self.base, "prefix", n_tokens=n_tokens, reparametrize=option == "mlp")

    def run(self, method: str = "prompt", n_tokens: int = 20, option: str = "vocab", steps: int = 40,
            seed: int = 0) -> dict:
        """Train `steps` steps; the loss curve, held-out answer loss, exact match, trainable count."""
        torch.manual_seed(seed)
        model = self.make(method, n_tokens, option)
        lr = self.LR["prefix-direct" if (method, option) == ("prefix", "direct") else method]
        hist = train(model, self.qa["train"], steps=steps, lr=lr, batch_size=self.batch_size, seed=seed,
                     progress=False)
        self.last_model = model
        return {"loss": hist.loss, "heldout_loss": evaluate_loss(model, self.test, loss_on="response"),
                "accuracy": exact_match(model, self.test), "trainable": count_parameters(model).trainable}

    def show(self, method: str = "prompt") -> None:
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
