"""4-bit NormalFloat (NF4) and FP4 blockwise quantization, the storage format of QLoRA
(Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs", arXiv:2305.14314).

A weight tensor is cut into blocks of `blocksize` values (64 in QLoRA). Each block keeps one
fp32 constant, its absolute maximum, and each value keeps the 4-bit index of the nearest entry
of a 16-value code book q_0..q_15 in [-1, 1] (paper, eq. 1-2):

    c_b = max_{i in b} |w_i|                       (absmax of block b)
    code_i = argmin_j | w_i / c_b - q_j |          (4 bits, two codes per byte)
    w_hat_i = c_b * q_{code_i}                     (dequantized)

NF4 (section 3) takes the q_j from quantiles of N(0, 1), since pretrained weights are close to
normal: 8 positive values at evenly spaced probabilities between 1/2 and `offset` =
1 - (1/32 + 1/30) / 2, 7 negative ones the same way, an exact 0 (so zero padding and zero
weights survive), all divided by the largest so the range is [-1, 1]:

    q_j = Phi^-1(p_j) / Phi^-1(offset)

FP4 is a 4-bit float instead (1 sign, 2 exponent, 1 mantissa bit): its values crowd near 0.

Double quantization (section 3) quantizes the constants too: the fp32 absmax values (32 bits
per block of 64 = 0.5 bit per parameter) minus their mean are quantized to 8 bits in blocks of
256 with bitsandbytes' 8-bit dynamic code book, leaving 8/64 + 32/(64 * 256) = 0.127 bit per
parameter: 4.5 -> 4.127 bits per parameter in all.

This module is the reference: it gives the same codes and the same dequantized values as
bitsandbytes' `quantize_4bit` / `dequantize_4bit` (its CPU kernels: nearest code, a tie going
to the lower code), and it runs with PyTorch alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

QUANT_TYPES = ("nf4", "fp4")
BLOCKSIZES = tuple(2 ** k for k in range(4, 13))  # 16 .. 4096 (bitsandbytes accepts 32 .. 4096)
NF4_OFFSET = 0.9677083  # = 1 - (1/32 + 1/30) / 2, bitsandbytes' create_normal_map default
NESTED_BLOCKSIZE = 256  # double quantization: blocks of 256 absmax constants (paper, section 3)


# --- code books ----------------------------------------------------------------------------

def nf4_codebook(offset: float = NF4_OFFSET) -> torch.Tensor:
    """The 16 NF4 values, sorted, from normal quantiles (as bitsandbytes' `create_normal_map`).

    >>> nf4_codebook()[[0, 7, 15]].tolist()
    [-1.0, 0.0, 1.0]
    """
    # probabilities in float32 like bitsandbytes' torch.linspace; Phi^-1 in float64 like scipy
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, 9)[:-1].double())  # 8 values > 0
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8)[:-1].double())  # 7 values < 0
    values = torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative]).float().sort().values
    return values / values.max()


def fp4_codebook() -> torch.Tensor:
    """The 16 FP4 values indexed by their 4-bit code, in bitsandbytes' bit layout.

    Code bits are [sign | exponent (2) | mantissa (1)]. bitsandbytes maps exponent field e = 1, 2, 3
    to 2^3, 2^2, 2^1 and e = 0 to the subnormals 0 and 0.0625; the mantissa bit adds half.
    Divided by the largest value (12), so the range is [-1, 1].

    >>> (fp4_codebook() * 12).tolist()[:8]
    [0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0]
    """
    values = []
    for code in range(16):
        sign = -1.0 if code & 0b1000 else 1.0
        exponent, mantissa = (code >> 1) & 0b11, code & 0b1
        magnitude = 0.0625 * mantissa if exponent == 0 else 2.0 ** (4 - exponent) * (1 + 0.5 * mantissa)
        values.append(sign * magnitude)
    values = torch.tensor(values)
    return values / values.abs().max()


def dynamic_codebook() -> torch.Tensor:
    """bitsandbytes' signed 8-bit dynamic code book (256 sorted values in [-1, 1]; Dettmers 2015,
    arXiv:1511.04561), used by double quantization for the absmax constants.

    Exponent i = 0..6 gets 2^i values: the midpoints of 2^i equal steps of [0.1, 1], times
    10^(i - 6), each with both signs; plus 0 and 1.

    >>> c = dynamic_codebook(); (c.numel(), round(c.min().item(), 4), c.max().item())
    (256, -0.993, 1.0)
    """
    values = []
    for i in range(7):
        edges = torch.linspace(0.1, 1, 2 ** i + 1)
        means = (edges[:-1] + edges[1:]) / 2.0 * 10 ** (i - 6)  # float32, as bitsandbytes
        values += means.tolist() + (-means).tolist()
    return torch.tensor(values + [0.0, 1.0]).sort().values


def int8_codebook() -> torch.Tensor:
    """Symmetric absmax int8: the 255 values k / 127, k = -127..127 (for comparing against NF4).

    >>> int8_codebook()[[0, 127, 254]].tolist()
    [-1.0, 0.0, 1.0]
    """
    return torch.arange(-127, 128, dtype=torch.float32) / 127


CODEBOOKS = {"nf4": nf4_codebook, "fp4": fp4_codebook, "int8": int8_codebook}


# --- blockwise quantization with any code book -------------------------------------------------

def quantize_blockwise(x: torch.Tensor, code: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (int64, one per value of flattened `x`) and absmax per block (fp32, the last block
    may be partial). Each value gets the index of its nearest `code` entry; a tie goes to the lower
    code value, as bitsandbytes' kernels (torch.bucketize against the midpoints).

    >>> codes, absmax = quantize_blockwise(torch.tensor([0.5, -1.0, 2.0, 0.0]), nf4_codebook(), 2)
    >>> codes.tolist(), absmax.tolist()
    ([12, 0, 15, 7], [1.0, 2.0])
    """
    flat = x.reshape(-1).float()
    n = flat.numel()
    blocks = math.ceil(n / blocksize)
    padded = torch.nn.functional.pad(flat, (0, blocks * blocksize - n)).view(blocks, blocksize)
    absmax = padded.abs().max(dim=1).values  # (blocks,): padding zeros never raise a maximum
    # multiply by the reciprocal (not divide), as bitsandbytes does, so the codes agree bit for bit
    scaled = torch.clamp(padded * (1.0 / absmax.clamp(min=1e-38))[:, None], -1, 1).reshape(-1)[:n]
    order = torch.argsort(code)  # FP4's codes are not sorted by value
    sorted_code = code[order]
    midpoints = (sorted_code[:-1] + sorted_code[1:]) / 2
    return order[torch.bucketize(scaled, midpoints)], absmax


def dequantize_blockwise(codes: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, blocksize: int) -> torch.Tensor:
    """Flat fp32 values code[codes] * absmax of their block (inverse of `quantize_blockwise`).

    >>> dequantize_blockwise(torch.tensor([12, 0, 15, 7]), torch.tensor([1.0, 2.0]), nf4_codebook(), 2).tolist()
    [0.44070982933044434, -1.0, 2.0, 0.0]
    """
    values = code[codes.long().reshape(-1)]
    return values * absmax.float().repeat_interleave(blocksize)[:values.numel()]


# --- 4-bit storage -----------------------------------------------------------------------------

@dataclass
class QuantState:
    """What dequantization needs besides the packed codes (the names of bitsandbytes' QuantState).

    Without double quantization `absmax` is fp32, one per block. With it, `absmax` holds the 8-bit
    codes of (absmax - offset), `offset` is their mean and `state2` the 8-bit level's own state
    (fp32 absmax per 256 constants, the dynamic code book).
    """
    absmax: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype
    blocksize: int
    quant_type: str
    code: torch.Tensor  # 16 values (4-bit) or 256 (8-bit dynamic, in state2)
    offset: torch.Tensor | None = None  # 0-dim fp32
    state2: QuantState | None = None

    @property
    def nested(self) -> bool:
        return self.state2 is not None

    def tensors(self, include_code_tables: bool = True) -> dict[str, torch.Tensor]:
        """Every tensor the state stores, by bitsandbytes' state-dict names."""
        out = {"absmax": self.absmax}
        if include_code_tables:
            out["quant_map"] = self.code
        if self.nested:
            out |= {"nested_absmax": self.state2.absmax, "nested_offset": self.offset}
            if include_code_tables:
                out["nested_quant_map"] = self.state2.code
        return out

    def dequantized_absmax(self) -> torch.Tensor:
        """The fp32 absmax per block (decoded from 8 bits when double-quantized)."""
        if not self.nested:
            return self.absmax.float()
        s2 = self.state2
        return dequantize_blockwise(self.absmax, s2.absmax, s2.code, s2.blocksize) + self.offset


def _check_quant_args(w, quant_type, blocksize, double_quant) -> None:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w must be a torch.Tensor, got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"w must be a floating-point tensor (fp32, fp16 or bf16), got {w.dtype}")
    if quant_type not in QUANT_TYPES:
        raise ValueError(f"quant_type must be one of {QUANT_TYPES}, got {quant_type!r}")
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize not in BLOCKSIZES:
        raise ValueError(f"blocksize must be a power of two in {BLOCKSIZES}, got {blocksize!r}")
    if not isinstance(double_quant, bool):
        raise TypeError(f"double_quant must be True or False, got {double_quant!r}")
    if w.numel() == 0:
        raise ValueError("w must hold at least one value")
    if not torch.isfinite(w).all():  # one NaN or inf would make its whole block (with its absmax) NaN
        bad = (~torch.isfinite(w)).nonzero()[0].tolist()
        raise ValueError(f"w must be finite: it holds {int((~torch.isfinite(w)).sum())} NaN or inf values "
                         f"(the first at index {bad}), and 4-bit codes cannot hold them")


def quantize_4bit(w: torch.Tensor, quant_type: str = "nf4", blocksize: int = 64,
                  double_quant: bool = False) -> tuple[torch.Tensor, QuantState]:
    """Blockwise 4-bit quantization of `w`: packed codes (uint8, shape (ceil(n/2), 1), the first
    of each pair in the high nibble, as bitsandbytes) and the `QuantState`.

    >>> packed, state = quantize_4bit(torch.randn(128, 64))
    >>> packed.shape, packed.dtype, state.absmax.shape
    (torch.Size([4096, 1]), torch.uint8, torch.Size([128]))
    """
    _check_quant_args(w, quant_type, blocksize, double_quant)
    code = CODEBOOKS[quant_type]().to(w.device)
    codes, absmax = quantize_blockwise(w.detach(), code, blocksize)
    zero = int(code.abs().argmin())  # an odd count is padded with the code of 0.0, as bitsandbytes
    codes = torch.nn.functional.pad(codes, (0, codes.numel() % 2), value=zero).to(torch.uint8)
    packed = ((codes[0::2] << 4) | codes[1::2]).unsqueeze(1)  # (n/2, 1): two codes per byte
    state = QuantState(absmax, w.shape, w.dtype, blocksize, quant_type, code)
    if double_quant:
        state.offset = absmax.mean()  # absmax > 0 always; centring uses the 8-bit code's sign bit
        dynamic = dynamic_codebook().to(w.device)
        qabsmax, absmax2 = quantize_blockwise(absmax - state.offset, dynamic, NESTED_BLOCKSIZE)
        state.absmax = qabsmax.to(torch.uint8)
        state.state2 = QuantState(absmax2, absmax.shape, torch.float32, NESTED_BLOCKSIZE, "dynamic", dynamic)
    return packed, state


def dequantize_4bit(packed: torch.Tensor, state: QuantState) -> torch.Tensor:
    """The tensor back, shape and dtype of the original: code[index] * absmax of its block.

    >>> w = torch.randn(64, 64)
    >>> (dequantize_4bit(*quantize_4bit(w)) - w).abs().max() < 0.25 * w.abs().max()
    tensor(True)
    """
    packed = packed.reshape(-1)
    codes = torch.stack([packed >> 4, packed & 0x0F], dim=1).reshape(-1)  # high nibble first
    n = math.prod(state.shape)
    values = dequantize_blockwise(codes[:n], state.dequantized_absmax(), state.code, state.blocksize)
    return values.reshape(state.shape).to(state.dtype)


def storage_bytes(packed: torch.Tensor, state: QuantState, include_code_tables: bool = False) -> int:
    """Bytes of the stored tensors: packed codes plus the state's constants.

    The code tables (16 fp32 values, and 256 for double quantization) are the same for every
    tensor, so the paper leaves them out of bits per parameter; `memory_report` counts them.

    >>> storage_bytes(*quantize_4bit(torch.randn(64, 64)))  # 4096 / 2 codes + 64 absmax * 4 bytes
    2304
    """
    tensors = [packed, *state.tensors(include_code_tables).values()]
    return sum(t.numel() * t.element_size() for t in tensors)


def bits_per_parameter(packed: torch.Tensor, state: QuantState, include_code_tables: bool = False) -> float:
    """Storage bits per quantized value, measured from the stored tensors: 4 + 32/64 = 4.5 for
    NF4 with blocksize 64, about 4 + 8/64 + 32/(64*256) = 4.127 with double quantization.

    >>> bits_per_parameter(*quantize_4bit(torch.randn(256, 256)))
    4.5
    """
    return 8 * storage_bytes(packed, state, include_code_tables) / math.prod(state.shape)


def quantization_error(w: torch.Tensor, quant_type: str = "nf4", blocksize: int = 64) -> dict:
    """Round-trip error of blockwise quantization of `w` with code book "nf4", "fp4" or "int8":
    mean and max absolute error, and the mean absolute error of each block (fp32).

    >>> e = quantization_error(torch.randn(64, 64), "int8")
    >>> e["mean_abs"] < quantization_error(torch.randn(64, 64), "nf4")["mean_abs"]
    True
    """
    if quant_type not in CODEBOOKS:
        raise ValueError(f"quant_type must be one of {tuple(CODEBOOKS)}, got {quant_type!r}")
    _check_quant_args(w, "nf4", blocksize, False)
    code = CODEBOOKS[quant_type]().to(w.device)
    codes, absmax = quantize_blockwise(w.detach(), code, blocksize)
    err = (dequantize_blockwise(codes, absmax, code, blocksize) - w.detach().reshape(-1).float()).abs()
    blocks = math.ceil(err.numel() / blocksize)
    per_block = torch.nn.functional.pad(err, (0, blocks * blocksize - err.numel())).view(blocks, blocksize)
    counts = torch.full((blocks,), float(blocksize), device=err.device)
    counts[-1] = err.numel() - (blocks - 1) * blocksize
    return {"mean_abs": err.mean().item(), "max_abs": err.max().item(),
            "per_block": per_block.sum(1) / counts}


# --- recognising and reading 4-bit layers, of either backend ----------------------------------

def is_4bit(module: torch.nn.Module) -> bool:
    """Is `module` a 4-bit linear layer (`peftlab.qlora.Linear4bit`, or bitsandbytes' `Linear4bit`)?

    >>> from peftlab.qlora import Linear4bit
    >>> is_4bit(Linear4bit(torch.randn(64, 64))), is_4bit(torch.nn.Linear(64, 64))
    (True, False)
    """
    return isinstance(module, torch.nn.Linear) and (
        isinstance(getattr(module, "quant_state", None), QuantState)
        or getattr(module.weight, "quant_state", None) is not None)


def quantized_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a 4-bit layer stores for its weight: packed codes and every quantization
    constant (absmax, code table, nested absmax, nested code table, offset); {} for other layers.

    >>> from peftlab.qlora import Linear4bit
    >>> sorted(quantized_tensors(Linear4bit(torch.randn(64, 64))))
    ['absmax', 'nested_absmax', 'nested_offset', 'nested_quant_map', 'quant_map', 'weight']
    """
    if not is_4bit(module):
        return {}
    own = getattr(module, "quant_state", None)
    state = own if isinstance(own, QuantState) else module.weight.quant_state
    tensors = {"absmax": state.absmax, "quant_map": state.code}
    if state.nested:
        tensors |= {"nested_absmax": state.state2.absmax, "nested_quant_map": state.state2.code,
                    "nested_offset": state.offset}
    return {"weight": module.weight, **tensors}
