import copy
import math

import pytest
import torch

from peftlab.explore.precision import PrecisionExplorer
from peftlab.model import ModelConfig, Transformer
from peftlab.mixed_precision import (gradient_magnitudes, gradient_underflow, loss_scale_sweep,
                                     number_formats, precision_sweep)

IDS = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))


def test_number_formats_match_ieee_layouts():
    f = {r["name"]: r for r in number_formats()}
    layouts = [(f[n]["exponent_bits"], f[n]["mantissa_bits"]) for n in ("fp32", "bf16", "fp16")]
    assert layouts == [(8, 23), (8, 7), (5, 10)]
    assert f["fp16"]["max"] == 65504.0
    assert f["fp16"]["smallest_normal"] == 2.0 ** -14 and f["fp16"]["smallest_subnormal"] == 2.0 ** -24
    assert f["bf16"]["smallest_normal"] == f["fp32"]["smallest_normal"] == 2.0 ** -126
    assert f["bf16"]["smallest_subnormal"] == 2.0 ** -133
    # the smallest subnormal is representable and half of it rounds to zero
    assert torch.tensor(2.0 ** -24, dtype=torch.float16).item() == 2.0 ** -24
    assert torch.tensor(2.0 ** -26, dtype=torch.float16).item() == 0.0
    with pytest.raises(ValueError, match="fp8"):
        number_formats(["fp8"])


def test_fp16_underflow_and_loss_scaling(tiny_model):
    # a tiny learning signal: scale the model's output down so the gradients are small
    torch.nn.init.normal_(tiny_model.lm_head.weight, std=1e-4)
    rows = loss_scale_sweep(tiny_model, IDS, [1.0, 2.0 ** 16, 2.0 ** 40])
    none, scaled, too_large = rows
    assert none["weight_entries"] == sum(p.numel() for p in tiny_model.parameters())
    assert none["weight_zeroed"] + none["activation_zeroed"] > 0 and none["weight_overflow"] == 0
    assert scaled["weight_zeroed"] + scaled["activation_zeroed"] < none["weight_zeroed"] + none["activation_zeroed"]
    assert scaled["weight_overflow"] == scaled["activation_overflow"] == 0
    assert scaled["relative_error"] < none["relative_error"]
    assert too_large["weight_overflow"] > 0 and math.isnan(too_large["relative_error"])
    assert none["loss_fp32"] == pytest.approx(none["loss"], rel=1e-2)


def test_bf16_needs_no_loss_scale(tiny_model):
    torch.nn.init.normal_(tiny_model.lm_head.weight, std=1e-4)
    fp16 = gradient_underflow(tiny_model, IDS, "fp16")
    bf16 = gradient_underflow(tiny_model, IDS, "bf16")
    assert bf16["weight_zeroed"] + bf16["activation_zeroed"] < fp16["weight_zeroed"] + fp16["activation_zeroed"]
    big = gradient_underflow(tiny_model, IDS, "bf16", 2.0 ** 40)
    assert big["weight_overflow"] == big["activation_overflow"] == 0


def test_sweep_leaves_the_model_unchanged(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    tiny_model.eval()
    gradient_underflow(tiny_model, IDS)
    assert not tiny_model.training and all(p.dtype == torch.float32 and p.grad is None for p in tiny_model.parameters())
    torch.testing.assert_close(tiny_model.state_dict(), before, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, match", [({"precision": "fp32"}, "precision"), ({"loss_scale": 0.0}, "loss_scale"),
                                           ({"loss_scale": float("inf")}, "loss_scale"),
                                           ({"ids": IDS.float()}, "ids")])
def test_underflow_bad_input(tiny_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gradient_underflow(tiny_model, **{"ids": IDS, **kwargs})


def test_gradient_magnitudes(tiny_model):
    m = gradient_magnitudes(tiny_model, IDS)
    n_nonzero = sum(int((p.grad != 0).sum()) for p in tiny_model.parameters() if p.grad is not None)
    assert n_nonzero == 0  # computed on a copy
    assert m["weights"].numel() > 0 and torch.isfinite(m["weights"]).all() and m["weights"].max() < 10


def test_precision_sweep_memory_and_fp16_on_cpu_error(tiny_model):
    rows = precision_sweep(tiny_model, IDS, repeats=1)
    assert [r["precision"] for r in rows] == ["fp32", "bf16"]
    fp32, bf16 = rows
    n = fp32["parameters"]
    # fp32 master weights: the parameter-proportional bytes do not change under autocast
    assert fp32["weights"] == bf16["weights"] == 4 * n and fp32["optimizer"] == bf16["optimizer"] == 8 * n
    assert fp32["step_s"] > 0 and bf16["tokens_per_s"] > 0
    with pytest.raises(ValueError, match="bf16"):
        precision_sweep(tiny_model, IDS, ["fp32", "fp16"])
    with pytest.raises(ValueError, match="precision"):
        precision_sweep(tiny_model, IDS, ["fp8"])


def test_bf16_halves_activations_at_large_batch():
    from peftlab.model import ModelConfig, Transformer
    model = Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=128))
    ids = torch.randint(0, 256, (8, 128))
    fp32, bf16 = precision_sweep(model, ids, repeats=1)
    assert bf16["activations"] < 0.8 * fp32["activations"]


def test_explorer_measure(tiny_model):
    ex = PrecisionExplorer(tiny_model, IDS)
    r = ex.measure("bf16", 1.0)
    assert r["memory"]["weights"] == 4 * sum(p.numel() for p in tiny_model.parameters())
    r16 = ex.measure("fp16", 2.0 ** 32)
    assert r16["memory"] is None and r16["weight_overflow"] > 0
    assert ex.SCALES[0] == 1.0 and ex.SCALES[-1] == 2.0 ** 32


def test_explorer_update_draws_without_a_browser(tiny_model):
    import matplotlib
    matplotlib.use("Agg")
    ex = PrecisionExplorer(tiny_model, IDS)
    ex.precision.value = "bf16"  # observing the control runs update()
    assert "bf16" in ex.status.value and "MiB" in ex.status.value
    r = ex.update()
    assert r["precision"] == "bf16" and r["loss_scale"] == 1.0


# --- underflow in training, master weights -----------------------------------------------------

def test_simulated_fp16_gradients_underflow_without_a_scale_and_overflow_with_a_huge_one():
    from peftlab.mixed_precision import simulated_16bit_gradients
    torch.manual_seed(0)
    m = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    ids = torch.randint(0, 256, (2, 8))
    tiny = {n: p for n, p in m.named_parameters()}
    exact = simulated_16bit_gradients(m, ids, ids, loss_scale=1.0, precision="bf16")
    with torch.no_grad():
        for p in tiny.values():
            p.mul_(1e-3)  # shrink the weights: every gradient below the head shrinks with them
    zeroed = simulated_16bit_gradients(m, ids, ids, loss_scale=1.0)
    scaled = simulated_16bit_gradients(m, ids, ids, loss_scale=2.0**16)
    count = lambda g: sum(int((v == 0).sum()) for v in g.values())
    assert count(zeroed) > count(scaled)
    assert exact.keys() == zeroed.keys() and all(torch.isfinite(v).all() for v in scaled.values())


def test_bf16_weights_lose_small_updates_and_fp32_keeps_them():
    from peftlab.mixed_precision import lost_updates, train_with_16bit_weights
    torch.manual_seed(0)
    m = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    ids = torch.randint(0, 256, (2, 8))
    small, large = lost_updates(m, ids, ids, lr=1e-5), lost_updates(m, ids, ids, lr=1e-1)
    assert small["unchanged_share"] > large["unchanged_share"]
    assert torch.tensor(1.0 + 1e-3).bfloat16().item() == 1.0
    batches = iter([(ids, ids)] * 3)
    ref = train_with_16bit_weights(copy.deepcopy(m), iter([(ids, ids)] * 3), 3, lr=1e-5, dtype="fp32")
    low = train_with_16bit_weights(copy.deepcopy(m), batches, 3, lr=1e-5, dtype="bf16")
    assert min(low["unchanged_share"]) > max(ref["unchanged_share"]) + 0.2  # fp32: only zero-gradient rows stay


@pytest.mark.parametrize("call, match", [
    (lambda m, x: __import__("peftlab.mixed_precision").mixed_precision.lost_updates(m, x, x, dtype="fp8"), "dtype"),
    (lambda m, x: __import__("peftlab.mixed_precision").mixed_precision.simulated_16bit_gradients(m, x, x, 0.0), "loss_scale"),
    (lambda m, x: __import__("peftlab.mixed_precision").mixed_precision.train_with_16bit_weights(m, iter([]), 0), "steps"),
])
def test_precision_experiments_refuse_bad_input(call, match):
    m = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    with pytest.raises(ValueError, match=match):
        call(m, torch.randint(0, 256, (2, 8)))
