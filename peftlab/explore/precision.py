"""PrecisionExplorer (notebook 16): a 16-bit format and a loss scale -> gradient entries that underflow
or overflow, and the memory of one training step in that precision.
"""

from __future__ import annotations

import copy
import math

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
from IPython.display import display
from torch import nn

from ..checkpoint import load_base
from ..measure import memory_report
from ..mixed_precision import LOW_PRECISIONS, gradient_underflow


class PrecisionExplorer:
    """Pick a 16-bit format and a loss scale; see how many gradient entries vanish (underflow)
    or blow up (overflow) against fp32, and the memory of one training step in that precision.

    >>> from peftlab import ModelConfig, Transformer
    >>> ex = PrecisionExplorer(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)),
    ...                        torch.randint(0, 256, (2, 16)))
    >>> r = ex.measure("fp16", 2.0**30)
    >>> r["weight_overflow"] > 0, r["memory"] is None  # no fp16 training step on the CPU
    (True, True)
    """
    SCALES = [1.0] + [2.0 ** k for k in range(4, 33, 4)]

    def __init__(self, model: nn.Module | None = None, ids: torch.Tensor | None = None):

        self.model = model if model is not None else load_base()
        if ids is None:
            ids = torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(0))
        self.ids = ids
        self.precision = W.ToggleButtons(options=list(LOW_PRECISIONS), value="fp16", description="format")
        self.scale = W.SelectionSlider(options=[(f"2^{int(math.log2(s))}", s) for s in self.SCALES], value=1.0,
                                       description="loss scale")
        self.status = W.HTML()
        self.plot = W.Output()
        for control in (self.precision, self.scale):
            control.observe(self.update, names="value")

    def measure(self, precision: str, loss_scale: float) -> dict:
        """Gradient counts at this setting; the memory report of one autocast training step in
        `precision` when this device can train in it (fp16 needs CUDA), else None."""
        row = gradient_underflow(self.model, self.ids, precision, loss_scale)
        device = next(self.model.parameters()).device
        trainable = precision != "fp16" or device.type == "cuda"
        row["memory"] = memory_report(copy.deepcopy(self.model), self.ids, precision=precision).as_dict() \
            if trainable else None
        return row

    def update(self, _=None) -> dict:
        r = self.measure(self.precision.value, self.scale.value)
        memory = f", one step: {r['memory']['total'] / 2**20:.1f} MiB" if r["memory"] else ""
        self.status.value = (f"<b>{r['precision']}, S = {r['loss_scale']:.0f}</b>: weight gradients zeroed "
                             f"{r['weight_zeroed']:,} / overflowed {r['weight_overflow']:,} "
                             f"of {r['weight_entries']:,}; "
                             f"activation gradients zeroed {r['activation_zeroed']:,} / overflowed "
                             f"{r['activation_overflow']:,} of {r['activation_entries']:,}{memory}")
        with self.plot:
            self.plot.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(6, 2.8))
            kinds = ["weight", "activation"]
            ax.bar([k + "\nzeroed" for k in kinds], [100 * r[f"{k}_zeroed"] / r[f"{k}_entries"] for k in kinds],
                   color="#4c72b0")
            ax.bar([k + "\noverflow" for k in kinds], [100 * r[f"{k}_overflow"] / r[f"{k}_entries"] for k in kinds],
                   color="#c44e52")
            ax.set_ylabel("% of entries")
            ax.set_title(f"{r['precision']} backward, loss scale {r['loss_scale']:.0f}")
            plt.show()
        return r

    def show(self) -> None:
        display(W.VBox([W.HBox([self.precision, self.scale]), self.status, self.plot]))
        self.update()
