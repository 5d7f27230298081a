import math

import pytest
import torch

from peftlab import quant

# /work/shared/REFERENCE.md: bitsandbytes get_4bit_type("nf4")
NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
       -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
       0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
       0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]


@pytest.fixture(scope="module")
def bnb_functional():
    bnb = pytest.importorskip("peftlab.qlora").import_bitsandbytes()
    if bnb is None:
        pytest.skip("bitsandbytes does not import")
    return bnb.functional


def test_nf4_codebook_is_the_published_table():
    assert quant.nf4_codebook().tolist() == NF4


def test_nf4_is_normal_quantiles_scaled_to_one():
    code = quant.nf4_codebook()
    assert code[7] == 0 and code.max() == 1 and code.min() == -1
    # the largest positive value is Phi^-1(offset) before scaling
    top = torch.special.ndtri(torch.tensor(quant.NF4_OFFSET, dtype=torch.float64))
    p = torch.special.ndtr(code[8:].double() * top)  # back to probabilities: evenly spaced
    assert torch.allclose(p.diff(), p.diff()[0].expand(7), atol=1e-6)


def test_codebooks_equal_bitsandbytes(bnb_functional):
    assert torch.equal(quant.nf4_codebook(), bnb_functional.get_4bit_type("nf4", device="cpu"))
    assert torch.equal(quant.fp4_codebook(), bnb_functional.get_4bit_type("fp4", device="cpu"))
    assert torch.equal(quant.dynamic_codebook(), bnb_functional.create_dynamic_map())


def test_fp4_values():
    assert sorted(set((quant.fp4_codebook() * 12).abs().tolist())) == [0, 0.0625, 2, 3, 4, 6, 8, 12]


# bitsandbytes 0.50.2's native CPU dequantize is right only when rows are whole blocks or odd-length
# (then it falls back to PyTorch); (33, 65) has an odd row, a partial last block and an odd count
@pytest.mark.parametrize("shape,blocksize", [((128, 256), 64), ((96, 128), 128), ((33, 65), 64)])
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_codes_and_dequantized_values_equal_bitsandbytes(bnb_functional, shape, blocksize, quant_type):
    torch.manual_seed(0)
    w = torch.randn(shape) * 0.02
    w[0, :3] = torch.tensor([0.0, w.abs().max(), -w.abs().max()])  # exact zero and a tie for absmax
    packed, state = quant.quantize_4bit(w, quant_type, blocksize)
    ref_packed, ref_state = bnb_functional.quantize_4bit(w, blocksize=blocksize, quant_type=quant_type)
    assert packed.shape == ref_packed.shape and torch.equal(packed, ref_packed)
    assert torch.equal(state.absmax, ref_state.absmax)
    assert torch.equal(quant.dequantize_4bit(packed, state), bnb_functional.dequantize_4bit(ref_packed, ref_state))


def test_double_quantization_close_to_bitsandbytes(bnb_functional):
    torch.manual_seed(0)
    w = torch.randn(256, 512) * 0.02
    packed, state = quant.quantize_4bit(w, double_quant=True)
    ref_packed, ref_state = bnb_functional.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
    assert torch.equal(packed, ref_packed)
    assert torch.equal(state.offset, ref_state.offset) and torch.equal(state.state2.absmax, ref_state.state2.absmax)
    # the 8-bit codes of the constants: bitsandbytes' CPU kernel breaks near-ties its own way
    assert (state.absmax != ref_state.absmax).float().mean() < 0.01
    ours, theirs = quant.dequantize_4bit(packed, state), bnb_functional.dequantize_4bit(ref_packed, ref_state)
    assert (ours - theirs).abs().max() < 0.01 * w.abs().max()


def test_round_trip_keeps_zero_and_block_maxima():
    torch.manual_seed(0)
    w = torch.randn(64, 64)
    w[3, 5] = 0.0
    out = quant.dequantize_4bit(*quant.quantize_4bit(w))
    assert out[3, 5] == 0
    blocks, back = w.reshape(-1, 64), out.reshape(-1, 64)
    idx = blocks.abs().argmax(1, keepdim=True)
    assert torch.equal(blocks.gather(1, idx), back.gather(1, idx))  # code +-1 times absmax is exact
    # nearest code: no value is off by more than half of NF4's largest gap (-1 to -0.696) times absmax
    gap = torch.tensor(NF4).diff().max()
    assert ((back - blocks).abs() <= 0.5 * gap * blocks.abs().amax(1, keepdim=True) + 1e-6).all()


def test_dtype_and_shape_come_back():
    w = torch.randn(32, 64, dtype=torch.bfloat16)
    out = quant.dequantize_4bit(*quant.quantize_4bit(w, "fp4"))
    assert out.dtype == torch.bfloat16 and out.shape == w.shape


def test_bits_per_parameter_measured_from_the_stored_tensors():
    w = torch.randn(256, 688)  # 176,128 values = 2,752 blocks of 64, 10.75 blocks of 256 constants
    packed, state = quant.quantize_4bit(w)
    assert packed.numel() == w.numel() // 2 and state.absmax.dtype == torch.float32
    assert quant.bits_per_parameter(packed, state) == 4.5  # 4 + 32/64
    packed, state = quant.quantize_4bit(w, double_quant=True)
    n, blocks = w.numel(), w.numel() // 64
    expected = 4 + 8 * blocks / n + 32 * math.ceil(blocks / 256) / n + 32 / n  # codes, 8-bit c2, fp32 c1, offset
    assert quant.bits_per_parameter(packed, state) == pytest.approx(expected, rel=1e-12)
    assert quant.bits_per_parameter(packed, state) == pytest.approx(4 + 8 / 64 + 32 / (64 * 256), abs=2e-3)
    with_tables = quant.bits_per_parameter(packed, state, include_code_tables=True)
    assert with_tables - quant.bits_per_parameter(packed, state) == pytest.approx(8 * (16 + 256) * 4 / n)


def test_nf4_beats_fp4_and_int8_beats_both_on_normal_weights():
    torch.manual_seed(0)
    w = torch.randn(256, 256) * 0.02
    err = {q: quant.quantization_error(w, q)["mean_abs"] for q in ("nf4", "fp4", "int8")}
    assert err["int8"] < err["nf4"] < err["fp4"]
    per_block = quant.quantization_error(w, "nf4", 128)["per_block"]
    assert per_block.shape == (256 * 256 // 128,)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"quant_type": "int4"}, ValueError, r"quant_type must be one of \('nf4', 'fp4'\)"),
    ({"blocksize": 48}, ValueError, r"power of two in \(16, 32"),
    ({"blocksize": 64.0}, ValueError, "blocksize"),
    ({"double_quant": 1}, TypeError, "double_quant must be True or False"),
])
def test_bad_arguments(kwargs, error, match):
    w = torch.randn(32, 32)
    before = w.clone()
    with pytest.raises(error, match=match):
        quant.quantize_4bit(w, **kwargs)
    assert torch.equal(w, before)


def test_non_floating_input_is_a_type_error():
    with pytest.raises(TypeError, match="floating-point"):
        quant.quantize_4bit(torch.ones(64, 64, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        quant.quantize_4bit([[0.5] * 64])
    with pytest.raises(ValueError, match=r"one of \('nf4', 'fp4', 'int8'\)"):
        quant.quantization_error(torch.randn(64, 64), "int4")


# --- the explorer (logic only, no browser) -----------------------------------------------------

@pytest.fixture(scope="module")
def explorer():
    from peftlab.explore.quant import QuantExplorer
    return QuantExplorer()


def test_explorer_measures_a_real_layer(explorer):
    r = explorer.measure("layers.1.self_attn.q_proj", 64)
    n = 256 * 256
    assert sum(r["hist_counts"]) == n and r["hist_edges"][0] == -1 and r["hist_edges"][-1] == 1
    assert r["codes"]["nf4"] == NF4 and len(r["codes"]["int8"]) == 255 and len(r["codes"]["fp4"]) == 15
    assert r["blocks"] == n // 64 and all(len(v) == n // 64 for v in r["error_per_block"].values())
    err = r["mean_abs_error"]
    assert err["int8"] < err["nf4"] < err["fp4"]  # NF4 fits the near-normal weights better than FP4
    assert r["bits"]["nf4"] == 4.5 and r["bits"]["int8"] == 8.5
    assert r["bits"]["nf4_double_quant"] == pytest.approx(4 + 8 / 64 + 32 / (64 * 256) + 32 / n)


def test_explorer_blocksize_trades_bits_for_error(explorer):
    small, large = (explorer.measure("layers.0.mlp.up_proj", b) for b in (32, 1024))
    assert small["bits"]["nf4"] == 5.0 and large["bits"]["nf4"] == 4 + 32 / 1024
    assert small["mean_abs_error"]["nf4"] < large["mean_abs_error"]["nf4"]


def test_explorer_bad_input(explorer):
    with pytest.raises(ValueError, match="quantizable layers"):
        explorer.measure("lm_head", 64)
    with pytest.raises(ValueError, match="power of two"):
        explorer.measure("layers.0.mlp.up_proj", 100)


def test_a_tensor_smaller_than_one_block_is_one_partial_block():
    w = torch.randn(3, 7, generator=torch.Generator().manual_seed(0))
    packed, state = quant.quantize_4bit(w, "nf4", 64)
    assert state.absmax.shape == (1,) and state.absmax.item() == w.abs().max().item()
    back = quant.dequantize_4bit(packed, state)
    assert back.shape == w.shape and (back - w).abs().max() <= w.abs().max() * 0.11  # NF4's widest gap, halved
    with pytest.raises(ValueError, match="at least one value"):
        quant.quantize_4bit(torch.zeros(0, 4))
    bnb = pytest.importorskip("bitsandbytes.functional")
    codes, bnb_state = bnb.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=False)
    assert torch.equal(codes, packed) and torch.equal(bnb_state.absmax, state.absmax)
