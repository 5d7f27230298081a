"""CheckpointingExplorer (notebook 15): depth, batch, sequence length, checkpointing on/off -> measured
bytes by category and the step time.
"""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from ..measure import memory_report, time_step, train_step_fn
from ..model import ModelConfig, Transformer
from .plots import stacked_bars


class CheckpointingExplorer:
    """Depth, batch, sequence length, checkpointing on/off -> measured bytes by category (one
    stacked bar per setting) and the step time, on a random-init model of the base's width.

    >>> ex = CheckpointingExplorer(d_model=32, n_heads=2, d_ff=64)
    >>> a = ex.measure(depth=2, batch_size=2, seq_len=16, checkpointing=False)
    >>> b = ex.measure(depth=2, batch_size=2, seq_len=16, checkpointing=True)
    >>> b["activations"] < a["activations"], a["weights"] == b["weights"]
    (True, True)
    """

    def __init__(self, d_model: int = 256, n_heads: int = 8, d_ff: int = 688, device: str = "cpu",
                 max_bars: int = 6):
        self.shape, self.device = dict(d_model=d_model, n_heads=n_heads, d_ff=d_ff), device
        self.max_bars, self.rows = max_bars, []
        self.depth = W.SelectionSlider(options=[2, 4, 8, 16], value=4, description="layers")
        self.batch_size = W.SelectionSlider(options=[1, 2, 4, 8, 16], value=4, description="batch")
        self.seq_len = W.SelectionSlider(options=[32, 64, 128, 256], value=128, description="seq len")
        self.checkpointing = W.Checkbox(value=False, description="gradient checkpointing")
        self.status = W.HTML()
        self.plot = W.Output()
        for control in (self.depth, self.batch_size, self.seq_len, self.checkpointing):
            control.observe(self.update, names="value")

    def measure(self, depth: int, batch_size: int, seq_len: int, checkpointing: bool, timed: bool = False) -> dict:
        """Bytes by category of one training step (and with `timed` the median step time)."""
        torch.manual_seed(0)
        cfg = ModelConfig(**self.shape, n_layers=depth, max_seq_len=max(seq_len, 256))
        model = Transformer(cfg).to(self.device)
        model.set_gradient_checkpointing(checkpointing)
        ids = torch.randint(0, 256, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
        row = {**memory_report(model, ids).as_dict(), "step_s": None,
               "label": f"L{depth} b{batch_size} s{seq_len}{' ckpt' if checkpointing else ''}"}
        if timed:
            row["step_s"] = time_step(train_step_fn(model, ids), warmup=1, repeats=3)
        return row

    def update(self, _=None) -> dict:

        row = self.measure(self.depth.value, self.batch_size.value, self.seq_len.value,
                           self.checkpointing.value, timed=True)
        self.rows = (self.rows + [row])[-self.max_bars:]
        self.status.value = (f"<b>{row['label']}</b>: total {row['total'] / 2**20:.1f} MiB, activations "
                             f"{row['activations'] / 2**20:.1f} MiB, step {row['step_s'] * 1e3:.0f} ms")
        with self.plot:
            self.plot.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 3.2))
            stacked_bars(ax, self.rows, [r["label"].replace(" ckpt", "\nckpt") for r in self.rows])
            ax.set_title("One training step, measured")
            plt.show()
        return row

    def show(self) -> None:
        display(W.VBox([W.HBox([self.depth, self.batch_size]), W.HBox([self.seq_len, self.checkpointing]),
                        self.status, self.plot]))
        self.update()
