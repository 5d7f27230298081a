import copy

import pytest
import torch
from torch import nn

from peftlab import count_parameters, data, lora, qlora, quant
from peftlab.model import ModelConfig, Transformer
from peftlab.train import train


@pytest.fixture
def square_model() -> Transformer:
    """Every linear layer has in_features a multiple of 64 (bitsandbytes' CPU kernel needs it)."""
    torch.manual_seed(0)
    return Transformer(ModelConfig(d_model=64, n_layers=1, n_heads=2, d_ff=128, max_seq_len=64))


@pytest.fixture(scope="module")
def bnb():
    module = qlora.import_bitsandbytes()
    if module is None:
        pytest.skip("bitsandbytes does not import")
    return module


IDS = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _dequantized_copy(model: nn.Module) -> nn.Module:
    """The fp32 model whose linear layers hold the 4-bit layers' dequantized weights."""
    plain = copy.deepcopy(model)
    for name, m in model.named_modules():
        if qlora.is_4bit(m):
            linear = nn.Linear(m.in_features, m.out_features, bias=False)
            linear.weight.data = qlora.dequantize(m)
            parent, _, child = name.rpartition(".")
            setattr(plain.get_submodule(parent), child, linear)
    return plain


def test_quantize_replaces_every_linear_but_the_head(tiny_model):
    qlora.quantize(tiny_model, backend="reference")
    kinds = {n.rsplit(".", 1)[-1]: type(m).__name__ for n, m in tiny_model.named_modules() if isinstance(m, nn.Linear)}
    assert kinds == {**{n: "Linear4bit" for n in LINEAR}, "lm_head": "Linear"}
    assert isinstance(tiny_model.embed_tokens, nn.Embedding)
    assert count_parameters(tiny_model).trainable == 0
    layer = tiny_model.layers[0].self_attn.q_proj
    assert layer.weight.dtype == torch.uint8 and layer.weight.numel() == 32 * 32 // 2


def test_forward_is_the_model_with_dequantized_weights(tiny_model):
    qlora.quantize(tiny_model, backend="reference")
    torch.testing.assert_close(tiny_model(IDS), _dequantized_copy(tiny_model)(IDS))


def test_lora_on_a_4bit_base_starts_unchanged_and_trains(tiny_model):
    reference = copy.deepcopy(tiny_model)
    qlora.quantize(tiny_model, backend="reference")
    before = tiny_model(IDS)
    lora.add(tiny_model, r=4, targets="all-linear")
    lora.add(reference, r=4, targets="all-linear")
    assert count_parameters(tiny_model).trainable == count_parameters(reference).trainable
    assert torch.equal(tiny_model(IDS), before)  # B = 0 at init
    A = tiny_model.layers[0].mlp.down_proj.lora_A["default"]
    assert A.dtype == torch.float32 and A.shape == (4, 64)
    frozen = {k: v.clone() for k, v in tiny_model.state_dict().items() if "lora_" not in k}
    hist = train(tiny_model, data.qa_task()["train"][:32], steps=8, lr=3e-3, batch_size=8, progress=False)
    assert hist.loss[-1] < hist.loss[0]
    assert all("lora_" in n for n, p in tiny_model.named_parameters() if p.requires_grad)
    assert all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in frozen.items())  # 4-bit base untouched


def test_backward_does_not_keep_a_dequantized_weight(tiny_model):
    qlora.quantize(tiny_model, backend="reference")
    lora.add(tiny_model, r=4, targets="all-linear")
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        tiny_model(IDS[:1, :5]).sum().backward()  # 5 tokens: no activation shares a weight's shape
    weight_shapes = {(32, 32), (64, 32), (32, 64)}  # (out, in) of the 4-bit layers
    assert not weight_shapes & set(saved)


def test_bitsandbytes_backend_matches_the_reference(bnb, square_model):
    ours = qlora.quantize(copy.deepcopy(square_model), double_quant=False, backend="reference")
    theirs = qlora.quantize(square_model, double_quant=False, backend="bitsandbytes")
    assert isinstance(theirs.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    for (name, a), (_, b) in zip(qlora_layers(ours), qlora_layers(theirs)):
        assert torch.equal(a.weight, b.weight.data.view(torch.uint8)), name
    ours.eval(), theirs.eval()  # eval mode: where bitsandbytes would repack CPU weights to bf16, if let
    with torch.no_grad():
        torch.testing.assert_close(ours(IDS), theirs(IDS), atol=1e-5, rtol=1e-5)
    assert theirs.layers[0].self_attn.q_proj.weight.shape == (64 * 64 // 2, 1)  # still QLoRA's packed layout
    lora.add(theirs, r=4, targets="all-linear")
    hist = train(theirs, data.qa_task()["train"][:32], steps=4, lr=3e-3, batch_size=8, progress=False)
    assert hist.steps == 4 and all(p.grad is None for p in theirs.parameters())


def qlora_layers(model):
    return [(n, m) for n, m in model.named_modules() if qlora.is_4bit(m)]


def test_bitsandbytes_on_cpu_refuses_ragged_rows(bnb, tiny_model):
    # tiny_model's rows are 32 or 64 values long; blocks of 64 cross rows where in_features = 32
    before = copy.deepcopy(tiny_model.state_dict())
    with pytest.raises(ValueError, match="backend='reference'"):
        qlora.quantize(tiny_model, backend="bitsandbytes")
    assert all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("kwargs,error,match", [
    ({"backend": "gptq"}, ValueError, r"backend must be one of \('auto', 'bitsandbytes', 'reference'\)"),
    ({"quant_type": "int4"}, ValueError, r"quant_type must be one of \('nf4', 'fp4'\)"),
    ({"double_quant": "yes"}, TypeError, "double_quant"),
    ({"blocksize": 100}, ValueError, "power of two"),
])
def test_bad_arguments_change_nothing(tiny_model, kwargs, error, match):
    with pytest.raises(error, match=match):
        qlora.quantize(tiny_model, **kwargs)
    assert type(tiny_model.layers[0].self_attn.q_proj) is nn.Linear
    assert count_parameters(tiny_model).trainable == count_parameters(tiny_model).total


def test_missing_bitsandbytes_is_a_clear_error(tiny_model, monkeypatch):
    monkeypatch.setattr(qlora, "import_bitsandbytes", lambda: None)
    with pytest.raises(ValueError, match="bitsandbytes does not import"):
        qlora.quantize(tiny_model, backend="bitsandbytes")
    assert type(tiny_model.layers[0].self_attn.q_proj) is nn.Linear
    assert qlora.resolve_backend("auto", "cuda") == "reference"


def test_quantize_after_lora_or_twice_is_refused(tiny_model):
    qlora.quantize(tiny_model, backend="reference")
    with pytest.raises(ValueError, match="no plain nn.Linear"):
        qlora.quantize(tiny_model)
    lora.add(tiny_model)
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        qlora.quantize(tiny_model)


def _trained(model):
    qlora.quantize(model, backend="reference")
    lora.add(model, r=4, targets="all-linear")
    with torch.no_grad():  # a learned update, of a realistic size relative to the weights
        for m in model.modules():
            if isinstance(m, lora.LoRALinear):
                m.lora_B["default"].normal_(0, 0.02)
    return model


def test_merge_requantizes_and_reports_the_rounding(tiny_model):
    model = _trained(tiny_model)
    wrapper = model.layers[0].mlp.up_proj
    exact = qlora.dequantize(wrapper.base_layer) + wrapper.delta_weight("default")
    adapter_logits = model(IDS)
    report = qlora.merge(model, IDS)
    merged = model.layers[0].mlp.up_proj
    assert isinstance(merged, qlora.Linear4bit) and not lora.adapter_names(model)
    # the merged layer is exactly the requantized sum ...
    packed, state = quant.quantize_4bit(exact, double_quant=True)
    assert torch.equal(merged.weight, packed)
    torch.testing.assert_close(qlora.dequantize(merged), quant.dequantize_4bit(packed, state))
    # ... whose error against the exact sum is the rounding the report gives
    err = (qlora.dequantize(merged) - exact).abs()
    assert 0 < err.max().item() <= report["max_abs_error"]
    assert report["layers"] == 7 * 2 and report["update_mean_abs"] > 0
    assert report["logits_max_abs_diff"] == pytest.approx((model(IDS) - adapter_logits).abs().max().item())
    assert report["logits_max_abs_diff"] > 0


def test_lora_merge_on_a_4bit_base_points_to_qlora_merge(tiny_model):
    model = _trained(tiny_model)
    before = model(IDS)
    with pytest.raises(ValueError, match=r"qlora.merge"):
        lora.merge(model)
    with pytest.raises(ValueError, match=r"qlora.merge"):
        lora.unload(model)
    assert torch.equal(model(IDS), before) and not any(m.merged for m in model.modules()
                                                       if isinstance(m, lora.LoRALinear))


def test_merge_without_adapters_is_an_error(tiny_model):
    qlora.quantize(tiny_model, backend="reference")
    with pytest.raises(ValueError, match="lora.add"):
        qlora.merge(tiny_model)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU error")
def test_paged_adamw_needs_cuda():
    with pytest.raises(RuntimeError, match="CUDA unified memory"):
        qlora.paged_adamw([nn.Parameter(torch.ones(2))], lr=1e-3)


# --- only the base model's layers, and nothing changes before everything is checked ----------------

def _tiny():
    torch.manual_seed(0)
    return Transformer(ModelConfig(d_model=64, n_layers=1, n_heads=2, d_ff=128))


@pytest.mark.parametrize("method", ["adapters", "ptuning"])
def test_quantize_leaves_a_methods_own_layers_trainable_and_unquantized(method):
    from peftlab import adapters, ptuning
    model = adapters.add(_tiny(), bottleneck=8) if method == "adapters" else ptuning.add(_tiny(), 4, "mlp")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    qlora.quantize(model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable  # still trains
    kinds = {n: type(m).__name__ for n, m in model.named_modules()}
    assert kinds[next(n for n in kinds if n.endswith("self_attn.q_proj"))] == "Linear4bit"  # the base is 4-bit
    own = [n for n in kinds if kinds[n] in ("BottleneckAdapter", "PromptEncoder")]  # the method's modules
    inside = [n for n in kinds if any(n.startswith(o + ".") for o in own) and kinds[n].startswith("Linear")]
    assert inside and all(kinds[n] == "Linear" for n in inside)  # none of them quantized


@pytest.mark.parametrize("kwargs, message", [({"blocksize": 64.0}, "blocksize must be an int"),
                                             ({"backend": "bitsandbytes", "blocksize": 16}, "cannot quantize")])
def test_bad_quantize_settings_leave_the_model_untouched(kwargs, message):
    if kwargs.get("backend") == "bitsandbytes":
        pytest.importorskip("bitsandbytes")
    model = _tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=message):
        qlora.quantize(model, **kwargs)
    assert all(p.requires_grad for p in model.parameters())  # not frozen
    assert all(type(m).__name__ != "Linear4bit" for m in model.modules())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_a_nan_weight_is_refused_before_quantizing():
    model = _tiny()
    with torch.no_grad():
        model.layers[0].mlp.up_proj.weight[3, 5] = float("nan")
    with pytest.raises(ValueError, match="hold NaN or inf weights"):
        qlora.quantize(model)
    assert all(p.requires_grad for p in model.parameters())  # nothing frozen, nothing swapped
    w = torch.randn(64, 64)
    w[0, 0] = float("inf")
    with pytest.raises(ValueError, match="w must be finite: it holds 1 NaN or inf values"):
        quant.quantize_4bit(w)


@pytest.mark.parametrize("shape", [(64, 16), (3, 32), (64, 48), (8, 688), (64, 37), (64, 100), (64, 136), (1, 688),
                                   (3, 16), (64, 256)])
def test_the_cpu_rule_is_what_bitsandbytes_does(bnb, shape):
    """`bitsandbytes_cpu_decodes` against bitsandbytes itself: its decode equals the reference's exactly
    where the rule says it does, and differs where the rule says it does not."""
    import bitsandbytes.functional as F
    from peftlab import quant
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    codes, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=False)
    packed, ours = quant.quantize_4bit(w, "nf4", 64)
    decoded_right = torch.equal(F.dequantize_4bit(codes, state).float(), quant.dequantize_4bit(packed, ours).float())
    assert decoded_right == qlora.bitsandbytes_cpu_decodes(shape, 64)


def test_bitsandbytes_on_cpu_accepts_widths_it_decodes(bnb):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 136), nn.Linear(136, 37))
    reference = qlora.quantize(copy.deepcopy(model), backend="reference")
    theirs = qlora.quantize(copy.deepcopy(model), backend="bitsandbytes")
    for i in (0, 1):
        torch.testing.assert_close(qlora.dequantize(theirs[i]).float(), qlora.dequantize(reference[i]).float())
