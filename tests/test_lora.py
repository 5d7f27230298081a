import copy
import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from peftlab import lora
from peftlab.measure import count_parameters
from peftlab.model import ModelConfig, Transformer
from peftlab.train import train

CFG = ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=32)
IDS = torch.randint(0, 259, (2, 10), generator=torch.Generator().manual_seed(0))


@pytest.fixture
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(CFG).eval()


def randomize_B(model: nn.Module, std: float = 0.1) -> None:
    """B starts at zero; give it values so that adapters change the output."""
    with torch.no_grad():
        for m in lora._wrappers(model).values():
            for B in m.lora_B.values():
                B.normal_(std=std)


def snapshot(model: nn.Module) -> dict:
    """Everything a failed call must leave alone: tensors, requires_grad, module types, state."""
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "grad": {k: p.requires_grad for k, p in model.named_parameters()},
            "types": [(n, type(m).__name__) for n, m in model.named_modules()],
            "flags": [(m.active, m.merged, m.enabled) for m in lora._wrappers(model).values()]}


def assert_same(before: dict, after: dict) -> None:
    assert before["grad"] == after["grad"] and before["types"] == after["types"]
    assert before["flags"] == after["flags"] and before["state"].keys() == after["state"].keys()
    for k in before["state"]:
        assert torch.equal(before["state"][k], after["state"][k]), k


# --- the formula ------------------------------------------------------------------------------

def test_output_unchanged_at_init(model):
    before = model(IDS)
    lora.add(model, r=4, targets="all-linear")
    q = model.layers[0].self_attn.q_proj
    assert isinstance(q, lora.LoRALinear) and isinstance(q.base_layer, nn.Linear)
    assert torch.equal(q.lora_B["default"], torch.zeros(32, 4)) and q.lora_A["default"].abs().sum() > 0
    torch.testing.assert_close(model(IDS), before, rtol=0, atol=0)


@pytest.mark.parametrize("rslora, scaling", [(False, 16 / 4), (True, 16 / 2)])
def test_scaling_alpha_over_r_or_sqrt_r(rslora, scaling):
    base = nn.Linear(8, 6)
    model = lora.add(nn.Sequential(copy.deepcopy(base)), r=4, alpha=16, targets=("0",), rslora=rslora)
    randomize_B(model)
    layer, x = model[0], torch.randn(3, 8)
    assert layer.config["default"].scaling == scaling
    A, B = layer.lora_A["default"], layer.lora_B["default"]
    torch.testing.assert_close(model(x), base(x) + scaling * x @ A.T @ B.T)  # h = W0 x + s B A x


def test_dropout_acts_on_the_lora_input_in_training_only():
    model = lora.add(nn.Sequential(nn.Linear(8, 8)), r=4, targets=("0",), dropout=0.5)
    randomize_B(model)
    x = torch.randn(16, 8)
    assert isinstance(model[0].lora_dropout["default"], nn.Dropout)
    assert torch.equal(model.eval()(x), model(x))
    assert not torch.equal(model.train()(x), model(x))


def test_only_lora_trainable_with_closed_form_count(model):
    total = count_parameters(model).total
    lora.add(model, r=4, targets="all-linear")
    wrapped = lora._wrappers(model)
    # all-linear: the 7 projections per block, never the output head
    assert len(wrapped) == 7 * CFG.n_layers and "lm_head" not in wrapped
    expected = sum(4 * (m.in_features + m.out_features) for m in wrapped.values())
    assert count_parameters(model) == (expected, total + expected)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)


@pytest.mark.parametrize("targets, count", [
    (("q_proj", "v_proj"), 4),
    (["layers.0.self_attn.q_proj"], 1),
    ("layers\\.1\\..*_proj", 7),
    (("lm_head",), 1),
])
def test_target_forms(model, targets, count):
    assert len(lora._wrappers(lora.add(model, targets=targets))) == count
    assert model.device == torch.device("cpu")  # reads lm_head.weight, wrapped or not


# --- merge, unload, several adapters ------------------------------------------------------------

def test_merge_unmerge_round_trip(model):
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    lora.add(model, r=4, targets="all-linear")
    randomize_B(model)
    adapted = model(IDS)
    lora.merge(model)
    torch.testing.assert_close(model(IDS), adapted, rtol=1e-5, atol=1e-5)
    q = model.layers[0].self_attn.q_proj
    assert not torch.allclose(q.base_layer.weight, weights["layers.0.self_attn.q_proj.weight"])
    with pytest.raises(ValueError, match="already merged"):
        lora.merge(model)
    lora.unmerge(model)
    torch.testing.assert_close(q.base_layer.weight, weights["layers.0.self_attn.q_proj.weight"],
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(model(IDS), adapted, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="not merged"):
        lora.unmerge(model)


def test_unload_gives_plain_linear_with_same_outputs(model):
    lora.add(model, r=4, targets=("q_proj", "down_proj"))
    randomize_B(model)
    adapted = model(IDS)
    lora.unload(model)
    assert not lora._wrappers(model) and type(model.layers[1].mlp.down_proj) is nn.Linear
    assert list(model.state_dict()) == list(Transformer(CFG).state_dict())
    torch.testing.assert_close(model(IDS), adapted, rtol=1e-5, atol=1e-5)


def test_several_adapters_set_active_disabled_delete(model):
    base_out = model(IDS)
    lora.add(model, r=4, name="a")
    randomize_B(model)
    out_a = model(IDS)
    lora.add(model, r=2, targets=("q_proj", "o_proj"), name="b")
    assert lora.adapter_names(model) == ["a", "b"]
    q = model.layers[0].self_attn.q_proj
    assert q.active == "b" and list(q.lora_A) == ["a", "b"]  # same wrapper holds both
    # only the active adapter trains: b's r * (in + out) on 4 layers
    assert count_parameters(model).trainable == 4 * 2 * (32 + 32)
    torch.testing.assert_close(model(IDS), base_out, rtol=0, atol=0)  # b is still zero
    lora.set_active(model, "a")
    torch.testing.assert_close(model(IDS), out_a)
    assert q.lora_A["a"].requires_grad and not q.lora_A["b"].requires_grad
    with lora.disabled(model):
        torch.testing.assert_close(model(IDS), base_out)
    torch.testing.assert_close(model(IDS), out_a)
    lora.merge(model)
    with lora.disabled(model):
        torch.testing.assert_close(model(IDS), base_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(IDS), out_a, rtol=1e-5, atol=1e-5)
    assert q.merged
    lora.unmerge(model)
    lora.delete(model, "a")
    assert lora.adapter_names(model) == ["b"] and q.active is None
    torch.testing.assert_close(model(IDS), base_out, rtol=1e-5, atol=1e-5)


# --- combine ------------------------------------------------------------------------------------

def two_adapters() -> nn.Sequential:
    torch.manual_seed(0)
    model = lora.add(nn.Sequential(nn.Linear(12, 10), nn.Linear(10, 10)), r=3, targets=("0", "1"), name="a")
    lora.add(model, r=2, alpha=4, targets=("0", "1"), name="b")
    randomize_B(model)
    return model


def weighted_delta(layer, weights):
    return sum(w * layer.delta_weight(a) for a, w in weights.items())


def test_combine_cat_is_exact():
    model, weights = two_adapters(), {"a": 0.7, "b": -0.3}
    report = lora.combine(model, weights, "ab", method="cat")
    assert report["max_error"] < 1e-6 and set(report["errors"]) == {"0", "1"}
    for layer in lora._wrappers(model).values():
        assert layer.lora_A["ab"].shape == (5, layer.in_features) and layer.config["ab"].scaling == 1
        torch.testing.assert_close(layer.delta_weight("ab"), weighted_delta(layer, weights))
    assert lora.adapter_names(model)[-1] == "ab" and model[0].active == "ab"


def test_combine_svd_reports_error_and_is_exact_at_full_rank():
    model, weights = two_adapters(), {"a": 1.0, "b": 0.5}
    low = lora.combine(model, weights, "low", method="svd", rank=1)
    layer = model[0]
    D = weighted_delta(layer, weights)
    err = (torch.linalg.norm(layer.delta_weight("low") - D) / torch.linalg.norm(D)).item()
    assert 0.01 < low["max_error"] and math.isclose(low["errors"]["0"], err, rel_tol=1e-4)
    assert low["mean_error"] <= low["max_error"]
    full = lora.combine(model, weights, "full", method="svd", rank=5)  # rank(D) <= 3 + 2
    assert full["max_error"] < 1e-5 and layer.lora_A["full"].shape == (5, 12)
    torch.testing.assert_close(layer.delta_weight("full"), D, rtol=1e-4, atol=1e-5)


def test_combine_linear_is_not_the_weighted_sum_of_deltas():
    model = two_adapters()
    lora.combine(model, {"a": 2.0}, "a2")  # one adapter: exactly w * delta
    torch.testing.assert_close(model[0].delta_weight("a2"), 2.0 * model[0].delta_weight("a"))
    with pytest.raises(ValueError, match="equal rank"):
        lora.combine(model, {"a": 1.0, "b": 1.0}, "ab")
    lora.add(model, r=3, targets=("0", "1"), name="c")
    randomize_B(model)
    report = lora.combine(model, {"a": 1.0, "c": 1.0}, "ac")
    layer = model[0]
    s_a, s_c = (layer.config[n].scaling for n in "ac")
    A, B = layer.lora_A, layer.lora_B
    cross = math.sqrt(s_a * s_c) * (B["a"] @ A["c"] + B["c"] @ A["a"])  # the cross terms
    torch.testing.assert_close(layer.delta_weight("ac"), weighted_delta(layer, {"a": 1.0, "c": 1.0}) + cross)
    assert report["max_error"] > 0.01


# --- save and load --------------------------------------------------------------------------

def test_save_load_round_trip_peftlab_format(model, tmp_path):
    base = copy.deepcopy(model)
    lora.add(model, r=4, alpha=8, targets=("q_proj", "v_proj"), name="task")
    randomize_B(model)
    path = lora.save(model, tmp_path / "adapter", name="task")
    files = {p.name: p.stat().st_size for p in path.iterdir()}
    # 4 layers * (A + B) * 4 * 32 floats * 4 bytes = 4 KiB, plus a header under 1 KiB
    assert set(files) == {"lora.safetensors", "lora_config.json", "peftlab_manifest.json"}
    assert count_parameters(model).trainable * 4 == 4096
    assert 4096 < files["lora.safetensors"] < 5120 and files["lora_config.json"] < 2000
    lora.load(base, path, name="task")
    assert lora.adapter_names(base) == ["task"]
    torch.testing.assert_close(base(IDS), model(IDS), rtol=0, atol=0)
    assert count_parameters(base) == count_parameters(model)


def test_peft_format_round_trip_into_peftlab(model, tmp_path):
    base = copy.deepcopy(model)
    lora.add(model, r=4, targets="all-linear", rslora=True)
    randomize_B(model)
    lora.save(model, tmp_path, format="peft")
    lora.load(base, tmp_path)
    torch.testing.assert_close(base(IDS), model(IDS), rtol=0, atol=0)


def tiny_llama():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(config).eval()


def test_peft_format_loads_into_real_peft_on_hf_llama(tmp_path):
    peft = pytest.importorskip("peft")
    hf = tiny_llama()
    base = copy.deepcopy(hf)
    lora.add(hf, r=4, alpha=8, targets="all-linear", name="a")
    assert "lm_head" not in lora._wrappers(hf)  # found through get_output_embeddings()
    lora.add(hf, r=2, alpha=3, targets=("q_proj",), name="b", rslora=True)
    randomize_B(hf)
    lora.combine(hf, {"a": 0.5, "b": 2.0}, "ab", method="cat")  # rank 6 on q_proj, 4 elsewhere
    lora.save(hf, tmp_path, name="ab", format="peft")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 6 and config["rank_pattern"]["model.layers.0.self_attn.k_proj"] == 4
    peft_model = peft.PeftModel.from_pretrained(base, tmp_path).eval()
    ids = IDS % 64
    torch.testing.assert_close(peft_model(ids).logits, hf(ids).logits, rtol=0, atol=1e-4)
    with lora.disabled(hf):
        assert (hf(ids).logits - peft_model(ids).logits).abs().max() > 1e-2  # the adapter matters


def test_peft_format_of_peftlab_model_matches_peft_on_to_hf(model, tmp_path):
    peft = pytest.importorskip("peft")
    hf = pytest.importorskip("peftlab.hf")
    base = copy.deepcopy(model)
    lora.add(model, r=4, targets=("q_proj", "v_proj", "lm_head"))
    randomize_B(model)
    lora.save(model, tmp_path, format="peft")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["target_modules"] == ["lm_head", "q_proj", "v_proj"]
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in load_file(
        tmp_path / "adapter_model.safetensors")
    peft_model = peft.PeftModel.from_pretrained(hf.to_hf(base), tmp_path).eval()
    torch.testing.assert_close(peft_model(IDS).logits, model(IDS), rtol=0, atol=1e-4)


def test_adapter_saved_by_real_peft_loads_into_peftlab(tmp_path):
    peft = pytest.importorskip("peft")
    hf = tiny_llama()
    base = copy.deepcopy(hf)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], task_type="CAUSAL_LM")
    peft_model = peft.get_peft_model(hf, config).eval()
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    peft_model.save_pretrained(tmp_path)
    lora.load(base, tmp_path, name="from_peft")
    assert len(lora._wrappers(base)) == 4 and base.model.layers[1].mlp.down_proj.config["from_peft"].scaling == 2
    ids = IDS % 64
    torch.testing.assert_close(base(ids).logits, peft_model(ids).logits, rtol=0, atol=1e-5)


def tiny_gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    return transformers.GPT2LMHeadModel(config).eval()


def test_gpt2_conv1d_unchanged_at_init_trains_and_loads_into_peft(tmp_path):
    peft = pytest.importorskip("peft")
    hf = tiny_gpt2()
    base, ids = copy.deepcopy(hf), IDS % 64
    before = hf(ids).logits
    lora.add(hf, r=4, targets=("c_attn", "c_fc"))
    c_attn = hf.transformer.h[0].attn.c_attn
    assert c_attn.fan_in_fan_out and (c_attn.in_features, c_attn.out_features) == (32, 96)
    torch.testing.assert_close(hf(ids).logits, before, rtol=0, atol=0)
    opt = torch.optim.AdamW([p for p in hf.parameters() if p.requires_grad], lr=1e-2)
    hf.train()
    losses = []
    for _ in range(8):
        loss = hf(ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    hf.eval()
    assert losses[-1] < losses[0] - 0.1
    adapted = hf(ids).logits
    lora.save(hf, tmp_path, format="peft")
    peft_model = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
    torch.testing.assert_close(peft_model(ids).logits, adapted, rtol=0, atol=1e-4)
    lora.merge(hf)  # Conv1D weight is (in, out): the delta goes in transposed
    torch.testing.assert_close(hf(ids).logits, adapted, rtol=1e-4, atol=1e-4)


def test_training_reduces_loss(model):
    lora.add(model, r=8, targets="all-linear")
    history = train(model, ["abcabcabcabc"] * 4, steps=10, lr=1e-2, batch_size=4, progress=False)
    assert history.loss[-1] < history.loss[0] - 0.5


# --- bad input --------------------------------------------------------------------------------

BAD_ADD = [
    (dict(r=0), ValueError, "r must be a positive int"),
    (dict(r=2.0), TypeError, "r must be a positive int"),
    (dict(alpha=0), ValueError, "alpha must be a positive"),
    (dict(dropout=1.0), ValueError, r"dropout must be a number in \[0, 1\)"),
    (dict(dropout=-0.1), ValueError, "dropout"),
    (dict(targets=("nope",)), ValueError, "matches no linear layer.*q_proj"),
    (dict(targets="q_proj"), ValueError, "regex"),
    (dict(targets=3), TypeError, "targets must be"),
    (dict(name="default"), ValueError, "already in use"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD_ADD)
def test_bad_add_raises_and_leaves_model_unchanged(model, kwargs, error, message):
    lora.add(model, r=2)
    before = snapshot(model)
    with pytest.raises(error, match=message):
        lora.add(model, **{"name": "new", **kwargs})
    assert_same(before, snapshot(model))


@pytest.mark.parametrize("call, message", [
    (lambda m: lora.set_active(m, "nope"), "not an adapter.*'default'"),
    (lambda m: lora.delete(m, "nope"), "not an adapter"),
    (lambda m: lora.combine(m, {"nope": 1.0}, "x"), "weights must be"),
    (lambda m: lora.combine(m, {"default": 1.0}, "x", method="avg"), "method must be one of"),
    (lambda m: lora.combine(m, {"default": 1.0}, "x", method="svd"), "rank must be a positive int"),
    (lambda m: lora.combine(m, {"default": 1.0}, "default", method="cat"), "already in use"),
    (lambda m: lora.save(m, "/nonexistent/x", format="hf"), "format must be one of"),
])
def test_bad_calls_raise_and_leave_model_unchanged(model, call, message):
    lora.add(model, r=2)
    randomize_B(model)
    before = snapshot(model)
    with pytest.raises((ValueError, TypeError), match=message):
        call(model)
    assert_same(before, snapshot(model))


def test_calls_that_need_unmerge_raise_and_leave_model_unchanged(model):
    lora.add(model, r=2)
    randomize_B(model)
    lora.merge(model)
    before = snapshot(model)
    for call in (lora.merge, lambda m: lora.add(m, name="b"), lambda m: lora.set_active(m, "default"),
                 lambda m: lora.delete(m, "default")):
        with pytest.raises(ValueError, match="merge"):
            call(model)
        assert_same(before, snapshot(model))


def test_verbs_need_lora_layers(model):
    for verb in (lora.merge, lora.unload):
        with pytest.raises(ValueError, match="call lora.add"):
            verb(model)


def corrupt_weights(path):
    (path / "lora.safetensors").write_bytes(b"not a safetensors file")


def corrupt_config(path):
    (path / "lora_config.json").write_text("{ broken")


def drop_weights(path):
    (path / "lora.safetensors").unlink()


@pytest.mark.parametrize("manifest", [True, False], ids=["with manifest", "without (as PEFT writes)"])
@pytest.mark.parametrize("damage, error, message", [
    (corrupt_weights, ValueError, "corrupt"),
    (corrupt_config, ValueError, "corrupt"),
    (drop_weights, FileNotFoundError, "holds no LoRA adapter"),
])
def test_load_of_damaged_files_leaves_model_unchanged(model, tmp_path, damage, error, message, manifest):
    target = copy.deepcopy(model)
    lora.save(lora.add(model, r=2), tmp_path)
    if manifest:  # a damaged file no longer matches the manifest saved with it
        message = message if error is FileNotFoundError else "is not the file saved with the rest"
    else:
        (tmp_path / "peftlab_manifest.json").unlink()
    damage(tmp_path)
    before = snapshot(target)
    with pytest.raises(error, match=message):
        lora.load(target, tmp_path)
    assert_same(before, snapshot(target))


def test_load_mismatched_model_or_missing_dir_leaves_model_unchanged(model, tmp_path):
    lora.save(lora.add(model, r=2, targets=("q_proj", "gate_proj")), tmp_path)
    wider = Transformer(ModelConfig(d_model=64, n_layers=2, n_heads=2, d_ff=64, max_seq_len=32))
    shallower = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_seq_len=32))
    other = nn.Sequential(nn.Linear(32, 32))
    for target, error, message in [(wider, ValueError, r"needs lora_A \(2, 64\)"),
                                   (shallower, ValueError, "layers.1.self_attn.q_proj.*not linear layers"),
                                   (other, ValueError, "not linear layers")]:
        before = snapshot(target)
        with pytest.raises(error, match=message):
            lora.load(target, tmp_path)
        assert_same(before, snapshot(target))
    with pytest.raises(FileNotFoundError):
        lora.load(wider, tmp_path / "missing")
    lora.load(model, tmp_path, name="again")
    before = snapshot(model)
    with pytest.raises(ValueError, match="already in use"):
        lora.load(model, tmp_path, name="again")
    assert_same(before, snapshot(model))


def test_modules_to_save_trains_those_modules_in_full_and_refuses_unknown_names():
    from peftlab import ModelConfig, Transformer, count_parameters
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, vocab_size=10)
    model = lora.add(Transformer(cfg), r=4, modules_to_save=("embed_tokens", "lm_head"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"embed_tokens.weight", "lm_head.weight"} <= trainable
    assert not any("q_proj.base_layer" in n or "mlp" in n for n in trainable)  # the rest stays frozen
    assert count_parameters(model).trainable == 512 + 2 * 10 * 32
    untouched = Transformer(cfg)
    with pytest.raises(ValueError, match=r"modules_to_save: no module named \['head'\]"):
        lora.add(untouched, r=4, modules_to_save=("head",))
    assert not any(isinstance(m, lora.LoRALinear) for m in untouched.modules())  # refused before any change
    with pytest.raises(ValueError, match="modules_to_save must be a tuple of module names"):
        lora.add(Transformer(cfg), r=4, modules_to_save="lm_head")


def test_new_adapters_take_the_models_mode_so_dropout_is_off_in_eval():
    """A LoRA with dropout added to (or loaded into) an eval-mode model must not drop anything."""
    from peftlab import ModelConfig, Transformer
    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)).eval()
    lora.add(model, r=4, dropout=0.5)
    lora.randomize_B(model)
    ids = torch.randint(0, 256, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), model(ids))  # deterministic: dropout is off
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())  # and it follows the model afterwards


@pytest.mark.parametrize("name", ["a.b", "keys", "update", "training"])
def test_add_refuses_names_that_cannot_be_keys_before_any_change(name):
    from peftlab import ModelConfig, Transformer
    model = Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64))
    with pytest.raises(ValueError, match="name must not contain '.' or be an attribute of nn.ModuleDict"):
        lora.add(model, r=2, name=name)
    assert not any(isinstance(m, lora.LoRALinear) for m in model.modules())


def test_a_failed_allocation_leaves_the_model_as_it_was(monkeypatch):
    from peftlab import ModelConfig, Transformer
    model = lora.add(Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64)), r=2, name="first")
    before = {n: p.clone() for n, p in model.state_dict().items()}
    calls = {"n": 0}
    real = torch.zeros

    def fail_on_third(*args, **kwargs):  # the third B of four: two layers' tensors are already made
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "zeros", fail_on_third)
    with pytest.raises(RuntimeError, match="out of memory"):
        lora.add(model, r=4, name="second")
    monkeypatch.undo()
    assert lora.adapter_names(model) == ["first"]
    assert set(model.state_dict()) == set(before)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_combine_refuses_non_finite_weights_before_any_change(bad):
    from peftlab import ModelConfig, Transformer
    model = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    lora.add(lora.add(model, r=2, name="a"), r=2, name="b")
    with pytest.raises(ValueError, match="weights must be finite numbers"):
        lora.combine(model, {"a": 1.0, "b": bad}, "ab")
    assert lora.adapter_names(model) == ["a", "b"]


def _peft_tensors(names):
    return {f"{lora.PEFT_PREFIX}{n}.lora_{x}.weight": torch.zeros(2, 2) for n in names for x in "AB"}


@pytest.mark.parametrize("change, message", [
    ({"use_dora": True}, r"uses \['use_dora'\]"),
    ({"layer_replication": [[0, 2]]}, r"uses \['layer_replication'\]"),
    ({"target_modules": ["k_proj"]}, "target_modules .* do not name"),
    ({"rank_pattern": {"q_proj(": 4}}, "not a valid regular expression"),
])
def test_a_peft_config_peftlab_cannot_honour_is_refused(change, message):
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], **change}
    with pytest.raises(ValueError, match=message):
        lora._parse_peft(None, config, _peft_tensors(["model.layers.0.self_attn.q_proj"]))


# --- a save is one save: weights and config together ---------------------------------------------

def test_an_interrupted_save_is_refused_on_load_and_leaves_no_temporary_file(model, tmp_path, monkeypatch):
    """The failure the manifest exists for: new weights renamed into place, the config not yet."""
    first = lora.add(copy.deepcopy(model), r=2)
    randomize_B(first)
    lora.save(first, tmp_path)
    second = lora.add(copy.deepcopy(model), r=2, alpha=8)  # another config, so the old one cannot pass
    randomize_B(second)
    renames = []
    real_replace = os.replace

    def replace_then_fail(src, dst):
        renames.append(Path(dst).name)
        if len(renames) == 3:  # the manifest and the weights are in place; the config's rename fails
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_fail)
    with pytest.raises(OSError, match="disk full"):
        lora.save(second, tmp_path)
    monkeypatch.undo()
    assert renames == ["peftlab_manifest.json", "lora.safetensors", "lora_config.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora.safetensors", "lora_config.json",
                                                         "peftlab_manifest.json"]  # no temporary files
    target = copy.deepcopy(model)
    before = snapshot(target)
    with pytest.raises(ValueError, match="lora_config.json is not the file saved with the rest"):
        lora.load(target, tmp_path)
    assert_same(before, snapshot(target))
    lora.save(second, tmp_path)  # saving again repairs the folder
    torch.testing.assert_close(lora.load(copy.deepcopy(model), tmp_path)(IDS), second(IDS), rtol=0, atol=0)


def test_a_killed_save_leaves_temporary_files_that_the_next_save_removes(model, tmp_path):
    lora.save(lora.add(model, r=2), tmp_path)
    (tmp_path / ".lora.safetensors.123.peftlab-tmp").write_bytes(b"80 MB of a killed save")
    lora.save(model, tmp_path)
    assert not list(tmp_path.glob("*.peftlab-tmp")) and not list(tmp_path.glob(".*.peftlab-tmp"))


def test_saving_one_format_over_the_other_is_refused(model, tmp_path):
    plain = copy.deepcopy(model)
    lora.save(lora.add(model, r=2), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="already holds a peftlab-format adapter"):
        lora.save(model, tmp_path, format="peft")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written
    (tmp_path / "adapter_config.json").write_text("{}")  # both formats side by side, from elsewhere
    with pytest.raises(ValueError, match="holds adapters in both formats"):
        lora.load(plain, tmp_path)


def test_an_adapter_file_with_no_layers_is_named(model, tmp_path):
    (tmp_path / "lora_config.json").write_text(json.dumps({"format": "peftlab-lora", "layers": {}}))
    from safetensors.torch import save_file
    save_file({}, tmp_path / "lora.safetensors")
    with pytest.raises(ValueError, match="holds an adapter with no layers"):
        lora.load(model, tmp_path)


@pytest.mark.parametrize("rslora", [False, True], ids=["alpha/r", "rsLoRA"])
def test_combine_linear_matches_peft_with_mixed_signs(model, tmp_path, rslora):
    """Task negation (a negative weight): the sign goes on A as in PEFT's add_weighted_adapter, so the
    cross terms B_i A_j agree. With rsLoRA adapters PEFT gives the combined adapter scaling sqrt(r), not 1
    (its new LoraConfig keeps use_rslora and lora_alpha = r): PEFT's result is then sqrt(r) x the weighted
    sum, peftlab's is the sum itself."""
    peft = pytest.importorskip("peft")
    hf = pytest.importorskip("peftlab.hf")
    base = copy.deepcopy(model)
    for name, seed in (("a", 0), ("b", 1)):
        lora.add(model, r=4, alpha=8, targets=("q_proj", "v_proj"), name=name, rslora=rslora)
        torch.manual_seed(seed)
        randomize_B(model)
    weights = {"a": 1.0, "b": -0.5}
    for name in weights:
        lora.save(model, tmp_path / name, name=name, format="peft")
    peft_model = peft.PeftModel.from_pretrained(hf.to_hf(base), tmp_path / "a", adapter_name="a")
    peft_model.load_adapter(tmp_path / "b", adapter_name="b")
    peft_model.add_weighted_adapter(list(weights), list(weights.values()), "ab", combination_type="linear")
    peft_model.set_adapter("ab")
    lora.combine(model, weights, "ab", method="linear")
    for i in range(model.config.n_layers):
        for proj in ("q_proj", "v_proj"):
            ours = getattr(model.layers[i].self_attn, proj).delta_weight("ab")
            theirs = getattr(peft_model.base_model.model.model.layers[i].self_attn, proj).get_delta_weight("ab")
            # alpha/r: the same update; rsLoRA: PEFT's is sqrt(r) = 2 times it (its scaling should be 1)
            torch.testing.assert_close(theirs, (2.0 if rslora else 1.0) * ours, rtol=1e-5, atol=1e-6)
    if not rslora:
        with torch.no_grad():
            torch.testing.assert_close(peft_model.eval()(IDS).logits, model(IDS), rtol=0, atol=1e-4)


# --- several adapters in one batch -------------------------------------------------------------

def _two_adapters(base, r_b=4):
    model = lora.add(base, r=4, name="a")
    lora.add(model, r=r_b, name="b")
    return lora.randomize_B(model, seed=1)


def test_per_request_runs_each_rows_own_adapter(base):
    model = _two_adapters(base)
    ids = torch.randint(0, 256, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with lora.per_request(model, ["a", "b", "a"]):
            mixed = model(ids)
        alone = {}
        for name in ("a", "b"):
            lora.set_active(model, name)
            alone[name] = model(ids)
    for i, name in enumerate(["a", "b", "a"]):
        torch.testing.assert_close(mixed[i], alone[name][i], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(alone["a"][1], alone["b"][1])  # the two adapters really differ
    assert all(m.per_row is None for m in model.modules() if isinstance(m, lora.LoRALinear))


def test_per_request_refuses_what_it_cannot_batch(base):
    model = _two_adapters(base, r_b=8)
    with pytest.raises(ValueError, match="one rank"):
        with lora.per_request(model, ["a", "b"]):
            pass
    with pytest.raises(ValueError, match="not an adapter"):
        with lora.per_request(model, ["a", "c"]):
            pass
    with pytest.raises(ValueError, match="non-empty list"):
        with lora.per_request(model, "a"):
            pass
    with pytest.raises(ValueError, match="2 adapter names, one per row"):
        with lora.per_request(model, ["a", "a"]):
            model(torch.zeros(3, 4, dtype=torch.long))
    assert all(m.per_row is None for m in model.modules() if isinstance(m, lora.LoRALinear))
    lora.merge(model)
    with pytest.raises(ValueError, match="merged"):
        with lora.per_request(model, ["a"]):
            pass


def test_mirror_init_puts_the_zero_on_A(tiny_model):
    x = torch.randint(0, 256, (2, 8))
    with torch.no_grad():
        before = tiny_model(x)
    model = lora.add(tiny_model, r=4, init="mirror")
    layer = model.layers[0].self_attn.q_proj
    A, B = layer.lora_A["default"], layer.lora_B["default"]
    assert torch.count_nonzero(A) == 0 and torch.count_nonzero(B) == B.numel()
    assert B.abs().max() <= 1 / 4 ** 0.5  # Kaiming-uniform of a (out, r) weight: bound 1 / sqrt(r)
    with torch.no_grad():
        assert torch.equal(model(x), before)  # B A = 0 either way
    with pytest.raises(ValueError, match=r"init must be one of \('default', 'mirror'\), got 'zeros'"):
        lora.add(model, r=4, name="other", init="zeros")
    assert lora.adapter_names(model) == ["default"]
