"""QAFineTuneExplorer (notebook 10): how many people the Q/A fine-tuning set covers and how long it
trains, against accuracy on trained people, held-out people, strangers and fact completion.
"""

from __future__ import annotations

import copy

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from .. import data
from ..checkpoint import load_base
from ..evaluate import exact_match
from ..train import train


class QAFineTuneExplorer:
    """Fine-tune the base model on Q/A about some people, then ask about everyone: how many
    people the fine-tuning set covers and how long it trains, against accuracy on the people
    it was trained on, on people it never saw in Q/A form, and on fact completion.

    >>> from peftlab import ModelConfig, Transformer
    >>> ex = QAFineTuneExplorer(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)))
    >>> r = ex.run(n_people=10, steps=1)
    >>> sorted(r)
    ['fact_completion', 'heldout_qa', 'new_people_qa', 'trained_qa']
    """

    def __init__(self, model: torch.nn.Module | None = None, lr: float = 1e-4, batch_size: int = 16):
        self.base = model if model is not None else load_base()
        self.lr, self.batch_size = lr, batch_size
        self.qa = data.qa_task()
        self.n_people = W.SelectionSlider(options=[2, 5, 10, 20, 40, 60], value=60, description="Q/A people")
        self.steps = W.SelectionSlider(options=[0, 10, 25, 50, 100, 150], value=50, description="steps")
        self.button = W.Button(description="Fine-tune and ask", button_style="primary")
        self.result = W.HTML()
        self.plot = W.Output()
        self.button.on_click(self.update)
        self.history: list[dict] = []

    def run(self, n_people: int, steps: int) -> dict:
        """Full fine-tuning on Q/A about the first `n_people` training people; accuracies after."""
        per_person = len(data.ATTRIBUTES)
        train_set = self.qa["train"][:n_people * per_person]
        model = copy.deepcopy(self.base)
        if steps > 0:
            train(model, train_set, steps=steps, lr=self.lr, batch_size=self.batch_size, progress=False)
        return {"trained_qa": exact_match(model, train_set),
                "heldout_qa": exact_match(model, self.qa["test"]),
                "new_people_qa": exact_match(model, data.stranger_qa()),
                "fact_completion": exact_match(model, data.fact_completion())}

    def update(self, _=None) -> dict:
        self.result.value = "training..."
        r = self.run(self.n_people.value, self.steps.value)
        self.history.append({"label": f"{self.n_people.value}p/{self.steps.value}s", **r})
        self.result.value = " | ".join(f"{k.replace('_', ' ')}: <b>{v:.0%}</b>" for k, v in r.items())
        with self.plot:
            self.plot.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 3))
            for key in r:
                ax.plot([h["label"] for h in self.history], [h[key] for h in self.history], "o-", label=key)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel("accuracy")
            ax.legend(fontsize=8)
            plt.show()
        return r

    def show(self) -> None:
        display(W.VBox([W.HBox([self.n_people, self.steps, self.button]), self.result, self.plot]))
