"""QLoRA: LoRA adapters on a frozen 4-bit base (Dettmers et al. 2023, "QLoRA: Efficient Finetuning
of Quantized LLMs", arXiv:2305.14314).

The base's linear layers are stored in 4-bit NF4 with double-quantized constants (`peftlab.quant`)
and dequantized to the compute dtype on the fly, in the forward and again in the backward pass
(paper, eq. 5-6); only the LoRA factors train, in full precision:

    Y = X doubleDequant(c1, c2, W_nf4) + s X L1 L2         (L1 L2 = the LoRA factors A, B)

So the frozen weights cost about 4.127 bits per parameter instead of 16 or 32, and gradients and
optimizer state exist only for the adapters. The verbs:

* `quantize(model)`: replace every linear layer but the output head by a 4-bit one (in place).
  Then `peftlab.lora.add(model, ...)` and `peftlab.train.train(model, ...)` work unchanged.
* `merge(model)`: fold the adapter into the 4-bit base: dequantize, add s B A, requantize. The
  result is 4-bit again, so the merge rounds; the figures it returns say by how much.
* `paged_adamw(params, lr)`: bitsandbytes' paged AdamW (optimizer state in CUDA unified memory,
  paged to the CPU under memory pressure, section 3 "Paged Optimizers"); CUDA only.

Backends: "bitsandbytes" uses its `Linear4bit` (the library QLoRA was published with);
"reference" uses `Linear4bit` below, built on `peftlab.quant` and readable, with the same codes.
"auto" picks bitsandbytes on CUDA and the reference on the CPU: the native CPU kernel of
bitsandbytes 0.50.2 dequantizes wrongly when a weight of more than one row and more than one block
has rows whose length is a multiple of 16 but not of the blocksize (our down_proj's rows of 688 =
43 x 16 = 10.75 blocks of 64). Measured on 10,672 shapes (blocksizes 32 to 256, 1 to 64 rows, widths
1 to 200, NF4 and FP4): exactly those decode wrongly; widths such as 37, 100 or 136 decode correctly,
and so does any single row. `bitsandbytes_cpu_decodes` is that rule, and on the CPU the bitsandbytes
backend is refused for exactly those layers.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from . import lora, quant
from .quant import is_4bit

BACKENDS = ("auto", "bitsandbytes", "reference")


def import_bitsandbytes():
    """The bitsandbytes module, or None where it does not import (not installed, no kernel)."""
    # its CPU backend logs a warning about an optional kernel package at import; it changes nothing
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    try:
        import bitsandbytes
    except Exception:  # ImportError, or a RuntimeError from a library that does not load
        return None
    return bitsandbytes


# --- the reference 4-bit layer ---------------------------------------------------------------

class _Dequantized(torch.autograd.Function):
    """y = x W^T with W dequantized from 4 bits in forward, and again in backward, so that no
    full-precision copy of W is kept between the passes (what QLoRA's memory saving rests on)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: Linear4bit) -> torch.Tensor:
        ctx.layer = layer  # not a saved tensor: only the packed buffers stay alive
        return F.linear(x, layer.dequantize().to(x.dtype))

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        # the base is frozen: the gradient flows to the input only, dL/dx = dL/dy W
        return grad_out @ ctx.layer.dequantize().to(grad_out.dtype), None


class Linear4bit(nn.Linear):
    """A frozen linear layer stored in 4 bits: packed codes and constants as buffers, named as in
    bitsandbytes' state dict (weight, absmax, quant_map, nested_absmax, nested_quant_map,
    nested_offset), so they move with `.to()` and are counted by `memory_report`.

    >>> layer = Linear4bit(torch.randn(32, 64))  # weight (out, in)
    >>> layer.weight.dtype, tuple(layer.weight.shape), layer(torch.ones(2, 64)).shape
    (torch.uint8, (1024, 1), torch.Size([2, 32]))
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, quant_type: str = "nf4",
                 double_quant: bool = True, blocksize: int = 64):
        nn.Module.__init__(self)  # not nn.Linear's: it would allocate a float weight
        self.out_features, self.in_features = weight.shape
        packed, state = quant.quantize_4bit(weight.detach(), quant_type, blocksize, double_quant)
        self.quant_type, self.blocksize, self.double_quant, self.dtype = quant_type, blocksize, double_quant, weight.dtype
        self.register_buffer("weight", packed)
        for name, tensor in state.tensors().items():
            self.register_buffer(name, tensor)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @property
    def quant_state(self) -> quant.QuantState:
        """The state, rebuilt from the buffers (so it always sees the buffers' current device)."""
        state = quant.QuantState(self.absmax, torch.Size((self.out_features, self.in_features)),
                                 self.dtype, self.blocksize, self.quant_type, self.quant_map)
        if hasattr(self, "nested_absmax"):
            state.offset = self.nested_offset
            state.state2 = quant.QuantState(self.nested_absmax, self.absmax.shape, torch.float32,
                                            quant.NESTED_BLOCKSIZE, "dynamic", self.nested_quant_map)
        return state

    def dequantize(self) -> torch.Tensor:
        """The weight (out, in) in its original dtype, decoded from 4 bits."""
        return quant.dequantize_4bit(self.weight, self.quant_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _Dequantized.apply(x, self)
        return out if self.bias is None else out + self.bias.to(out.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, quant_type={self.quant_type}, blocksize={self.blocksize}"


# --- reading 4-bit layers of either backend --------------------------------------------------

def dequantize(module: nn.Module) -> torch.Tensor:
    """The fp32 weight (out, in) of a 4-bit layer of either backend.

    >>> dequantize(Linear4bit(torch.randn(64, 64))).shape
    torch.Size([64, 64])
    """
    if isinstance(module, Linear4bit):
        return module.dequantize().float()
    bnb = import_bitsandbytes()
    return bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state).float()


def _bitsandbytes_layer(weight: torch.Tensor, bias: torch.Tensor | None, quant_type: str,
                        double_quant: bool, blocksize: int) -> nn.Module:
    bnb = import_bitsandbytes()
    out_features, in_features = weight.shape
    layer = bnb.nn.Linear4bit(in_features, out_features, bias=bias is not None, quant_type=quant_type,
                              compress_statistics=double_quant, device="meta")
    layer.weight = bnb.nn.Params4bit(weight.detach().float().cpu(), requires_grad=False, blocksize=blocksize,
                                     quant_type=quant_type, compress_statistics=double_quant, module=layer)
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    # bitsandbytes repacks CPU weights for fast bf16 inference (bf16 absmax) the first time an
    # eval-mode forward runs; keep the QLoRA storage format that merge and memory_report read
    layer.support_avx512bf16_for_cpu = False
    return layer.to(weight.device)  # quantizes here, on the weight's device


def _layer_4bit(weight: torch.Tensor, bias: torch.Tensor | None, backend: str, quant_type: str,
                double_quant: bool, blocksize: int) -> nn.Module:
    if backend == "bitsandbytes":
        return _bitsandbytes_layer(weight, bias, quant_type, double_quant, blocksize)
    return Linear4bit(weight, bias, quant_type, double_quant, blocksize)


def _format(layer: nn.Module) -> tuple[str, str, bool, int]:
    """(backend, quant_type, double_quant, blocksize) of a 4-bit layer."""
    if isinstance(layer, Linear4bit):
        return "reference", layer.quant_type, layer.double_quant, layer.blocksize
    state = layer.weight.quant_state
    return "bitsandbytes", state.quant_type, state.nested, state.blocksize


# --- the verbs -------------------------------------------------------------------------------

def _method_modules() -> tuple[type, ...]:
    """The modules a PEFT method adds around the base model (their layers train; they are never quantized)."""
    from .adapters import BottleneckAdapter, Fusion
    from .prefix import PrefixEncoder
    from .ptuning import PromptEncoder
    return BottleneckAdapter, Fusion, PrefixEncoder, PromptEncoder


def _method_parts(model: nn.Module) -> list[str]:
    return [n + "." for n, m in model.named_modules() if isinstance(m, _method_modules())]


def quantizable_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """Every plain linear layer of the base model but the output head, by name (QLoRA keeps embeddings
    and head in 16 bits); not the layers of a method's own modules (bottleneck adapters, fusions, the
    prompt or prefix encoders), which train.

    >>> from peftlab import load_base
    >>> list(quantizable_layers(load_base()))[:2]
    ['layers.0.self_attn.q_proj', 'layers.0.self_attn.k_proj']
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    added = _method_parts(model)
    return {n: m for n, m in model.named_modules()
            if type(m) is nn.Linear and m is not head and n.rsplit(".", 1)[-1] != "lm_head"
            and not any(n.startswith(a) for a in added)}


def bitsandbytes_cpu_decodes(shape: tuple[int, int], blocksize: int = 64) -> bool:
    """Whether bitsandbytes 0.50.2's CPU kernel dequantizes a 4-bit (out, in) weight correctly: it
    fails exactly when in is a multiple of 16 but not of `blocksize`, with more than one row and more
    than one block (see the module docstring for the measurement).

    >>> [bitsandbytes_cpu_decodes((256, w)) for w in (256, 688, 100, 136, 37)]
    [True, False, True, True, True]
    """
    rows, width = shape
    return not (width % 16 == 0 and width % blocksize != 0 and rows > 1 and rows * width > blocksize)


def resolve_backend(backend: str, device: torch.device | str = "cpu") -> str:
    """The backend "auto" stands for on `device`; checks the name and that bitsandbytes imports.

    >>> resolve_backend("auto", "cpu")
    'reference'
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        cuda = torch.device(device).type == "cuda"
        return "bitsandbytes" if cuda and import_bitsandbytes() is not None else "reference"
    if backend == "bitsandbytes" and import_bitsandbytes() is None:
        raise ValueError("backend='bitsandbytes' but bitsandbytes does not import here "
                         "(pip install bitsandbytes); use backend='reference'")
    return backend


def quantize(model: nn.Module, quant_type: str = "nf4", double_quant: bool = True, backend: str = "auto",
             blocksize: int = 64) -> nn.Module:
    """Replace the linear layers of the base model (not the output head, not the embeddings, not the
    layers of a method's own modules: `quantizable_layers`) by 4-bit ones, in place, and freeze the
    base; returns it. Add adapters afterwards with `peftlab.lora.add`. Every argument is checked and
    every 4-bit layer is built before the model changes.

    >>> from peftlab import ModelConfig, Transformer, count_parameters
    >>> model = quantize(Transformer(ModelConfig(d_model=64, n_layers=1, n_heads=2, d_ff=128)))
    >>> type(model.layers[0].self_attn.q_proj).__name__, count_parameters(lora.add(model, r=4)).trainable
    ('Linear4bit', 1024)
    """
    if quant_type not in quant.QUANT_TYPES:
        raise ValueError(f"quant_type must be one of {quant.QUANT_TYPES}, got {quant_type!r}")
    if not isinstance(double_quant, bool):
        raise TypeError(f"double_quant must be True or False, got {double_quant!r}")
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize not in quant.BLOCKSIZES:
        raise ValueError(f"blocksize must be an int, a power of two in {quant.BLOCKSIZES}, got {blocksize!r}")
    if lora.adapter_names(model):
        raise ValueError("the model already has LoRA adapters; quantize the base first, then lora.add")
    layers = quantizable_layers(model)
    if not layers:
        raise ValueError("`model` has no plain nn.Linear layer to quantize (already quantized?)")
    device = next(iter(layers.values())).weight.device
    backend = resolve_backend(backend, device)
    if backend == "bitsandbytes" and device.type == "cpu":
        wrong = [n for n, m in layers.items() if not bitsandbytes_cpu_decodes(tuple(m.weight.shape), blocksize)]
        if wrong:
            raise ValueError(f"bitsandbytes' CPU kernel (0.50.2) dequantizes wrongly when rows are a multiple of 16 "
                             f"but not of blocksize={blocksize} values long; layers {wrong[:3]} are: use "
                             f"backend='reference' (same codes) or a CUDA device")
    not_finite = [n for n, m in layers.items() if not torch.isfinite(m.weight).all()]
    if not_finite:
        raise ValueError(f"layers {not_finite[:3]} hold NaN or inf weights, which quantization would spread "
                         f"over their whole block; fix the model first")
    try:  # all 4-bit layers first (bitsandbytes refuses some settings only when it runs), then swap them in
        built = {name: _layer_4bit(linear.weight.detach(), linear.bias, backend, quant_type, double_quant, blocksize)
                 for name, linear in layers.items()}
    except (RuntimeError, ValueError, AssertionError, NotImplementedError) as e:
        raise ValueError(f"backend {backend!r} cannot quantize with quant_type={quant_type!r}, "
                         f"blocksize={blocksize}: {type(e).__name__}: {e}") from e
    added = _method_parts(model)
    for name, p in model.named_parameters():  # the base freezes; a method's own modules keep training
        if not any(name.startswith(a) for a in added):
            p.requires_grad_(False)
    for name, layer in built.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer)
    return model


@torch.no_grad()
def merge(model: nn.Module, ids: torch.Tensor | None = None) -> dict:
    """Fold the active LoRA adapter into the 4-bit base and drop the adapters: each layer becomes
    requant(dequant(W0) + s B A), a 4-bit layer of the same kind. Returns the rounding:

    * `max_abs_error`, `mean_abs_error`: merged 4-bit weight vs the exact dequant(W0) + s B A;
    * `update_mean_abs`: mean |s B A|, the size of what was learned, for scale;
    * with `ids` (token ids (batch, seq)): `logits_max_abs_diff`, merged model vs the adapter model.

    >>> from peftlab import ModelConfig, Transformer
    >>> _ = torch.manual_seed(0)  # the weights, and so their rounding, depend on the random init
    >>> model = lora.add(quantize(Transformer(ModelConfig(d_model=64, n_layers=1, n_heads=2, d_ff=128))))
    >>> merge(model)["max_abs_error"] < 1e-4  # B = 0: only the 8-bit constants round again
    True
    """
    wrappers = {n: m for n, m in model.named_modules() if isinstance(m, lora.LoRALinear) and is_4bit(m.base_layer)}
    if not wrappers:
        raise ValueError("`model` has no LoRA layer on a 4-bit base; call qlora.quantize, then lora.add")
    if any(m.active is None for m in wrappers.values()):
        raise ValueError("no adapter is active; lora.set_active(model, name) first")
    before = model(ids) if ids is not None else None
    errors, updates, count = [], 0.0, 0
    for name, wrapper in wrappers.items():
        base = wrapper.base_layer
        exact = dequantize(base)
        if wrapper.active in wrapper.config:
            exact = exact + wrapper.delta_weight(wrapper.active).float()
            updates += wrapper.delta_weight(wrapper.active).abs().sum().item()
        merged = _layer_4bit(exact, base.bias, *_format(base))
        errors.append((dequantize(merged) - exact).abs())
        count += exact.numel()
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, merged)
    report = {"layers": len(wrappers), "max_abs_error": max(e.max().item() for e in errors),
              "mean_abs_error": sum(e.sum().item() for e in errors) / count, "update_mean_abs": updates / count}
    if ids is not None:
        report["logits_max_abs_diff"] = (model(ids) - before).abs().max().item()
    return report


def paged_adamw(params, lr: float = 1e-3, **kwargs) -> torch.optim.Optimizer:
    """bitsandbytes' PagedAdamW: Adam's state lives in CUDA unified memory and pages to the CPU
    when the GPU runs out, instead of failing (QLoRA, section 3). CUDA only.

    >>> paged_adamw([torch.nn.Parameter(torch.ones(2))]) if torch.cuda.is_available() else None
    """
    params = list(params)
    if not torch.cuda.is_available() or any(p.device.type != "cuda" for p in params):
        raise RuntimeError("paged_adamw needs CUDA: paged optimizers use CUDA unified memory, which "
                           "pages GPU memory to the CPU; on the CPU use torch.optim.AdamW")
    bnb = import_bitsandbytes()
    if bnb is None:
        raise RuntimeError("paged_adamw needs bitsandbytes (pip install bitsandbytes)")
    return bnb.optim.PagedAdamW(params, lr=lr, **kwargs)
