"""QuantExplorer (notebook 05): a layer's weights, normalised by their block's absmax, against the NF4,
FP4 and int8 code points; the quantization error per block and the storage cost in bits per parameter.
"""

from __future__ import annotations

import math

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from .. import quant
from ..checkpoint import load_base
from ..qlora import quantizable_layers


CODEBOOKS = ("nf4", "fp4", "int8")
STYLE = {"nf4": ("#c44e52", "-"), "fp4": ("#4c72b0", "--"), "int8": ("#55a868", ":")}


class QuantExplorer:
    """Pick a layer and a blocksize: weight histogram (w / block absmax) with the code points of
    NF4, FP4 and int8 marked, quantization error per block, and bits per parameter.

    >>> ex = QuantExplorer()
    >>> r = ex.measure("layers.0.mlp.down_proj", 64)
    >>> r["bits"]["nf4"], round(r["bits"]["nf4_double_quant"], 3)
    (4.5, 4.127)
    """

    def __init__(self, model: torch.nn.Module | None = None, bins: int = 101):
        self.base = model if model is not None else load_base()
        self.weights = {n: m.weight.detach().float().cpu() for n, m in quantizable_layers(self.base).items()}
        self.bins = bins
        names = list(self.weights)
        self.layer = W.Dropdown(options=names, value=names[0], description="layer")
        self.blocksize = W.SelectionSlider(options=list(quant.BLOCKSIZES), value=64,
                                           description="blocksize")
        self.status = W.HTML()
        self.plot = W.Output()
        for control in (self.layer, self.blocksize):
            control.observe(self.update, names="value")

    def measure(self, layer: str, blocksize: int) -> dict:
        """Histogram of w / absmax(block), code points, error per block and bits per parameter."""
        if layer not in self.weights:
            raise ValueError(f"layer must be one of the quantizable layers {list(self.weights)}, got {layer!r}")
        w = self.weights[layer]
        packed, state = quant.quantize_4bit(w, "nf4", blocksize)  # checks blocksize
        _, state_dq = quant.quantize_4bit(w, "nf4", blocksize, double_quant=True)
        absmax = state.absmax.repeat_interleave(blocksize)[:w.numel()]
        normalised = w.reshape(-1) / absmax
        counts, edges = torch.histogram(normalised, bins=self.bins, range=(-1.0, 1.0))
        errors = {q: quant.quantization_error(w, q, blocksize) for q in CODEBOOKS}
        n_blocks = math.ceil(w.numel() / blocksize)
        return {
            "layer": layer, "shape": tuple(w.shape), "blocksize": blocksize, "blocks": n_blocks,
            "hist_counts": counts.tolist(), "hist_edges": edges.tolist(),
            "codes": {q: sorted(set(quant.CODEBOOKS[q]().tolist())) for q in CODEBOOKS},
            "mean_abs_error": {q: e["mean_abs"] for q, e in errors.items()},
            "error_per_block": {q: e["per_block"].tolist() for q, e in errors.items()},
            "bits": {"nf4": quant.bits_per_parameter(packed, state),
                     "nf4_double_quant": quant.bits_per_parameter(packed, state_dq),
                     "int8": 8 + 32 / blocksize},  # int8 codes + one fp32 absmax per block
        }

    def update(self, _=None) -> dict:
        r = self.measure(self.layer.value, self.blocksize.value)
        bits, err = r["bits"], r["mean_abs_error"]
        self.status.value = (f"<b>{r['layer']}</b> {r['shape']}, {r['blocks']:,} blocks of {r['blocksize']}: "
                             f"NF4 {bits['nf4']:.3f} bits/param, with double quantization "
                             f"{bits['nf4_double_quant']:.3f}; int8 {bits['int8']:.3f}. Mean |error| "
                             + ", ".join(f"{q.upper()} {err[q]:.2e}" for q in CODEBOOKS))
        with self.plot:
            self.plot.clear_output(wait=True)
            fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.4))
            edges = r["hist_edges"]
            ax1.stairs(r["hist_counts"], edges, fill=True, color="#dddddd", label="weights")
            top = max(r["hist_counts"])
            for q in ("nf4", "fp4"):
                color, style = STYLE[q]
                ax1.vlines(r["codes"][q], 0, top, colors=color, linestyles=style, lw=1, label=q.upper())
            ax1.vlines(r["codes"]["int8"], 0, 0.05 * top, colors=STYLE["int8"][0], lw=0.5, label="int8")
            ax1.set_xlabel("w / absmax of its block")
            ax1.legend(fontsize=8, loc="upper left")
            for q in CODEBOOKS:
                color, style = STYLE[q]
                ax2.plot(r["error_per_block"][q], color=color, ls=style, lw=0.8, label=q.upper())
            ax2.set_yscale("log")
            ax2.set_xlabel("block")
            ax2.set_ylabel("mean |w - dequant(quant(w))|")
            ax2.legend(fontsize=8)
            plt.tight_layout()
            plt.show()
        return r

    def show(self) -> None:
        display(W.VBox([W.HBox([self.layer, self.blocksize]), self.status, self.plot]))
        self.update()
