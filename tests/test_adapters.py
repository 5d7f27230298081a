import copy

import matplotlib
import pytest
import torch

from peftlab import adapters
from peftlab.measure import count_parameters
from peftlab.model import ModelConfig, Transformer
from peftlab.evaluate import evaluate_loss
from peftlab.explore.plots import plot_fusion_weights
from peftlab.train import train

matplotlib.use("Agg")

IDS = torch.tensor([[5, 9, 2, 77, 31, 8], [100, 3, 3, 64, 12, 250]])
TEXT = ["abcabcabcabc", "xyzxyzxyzxyz", "abcxyzabcxyz", "cabcabcabcab"]


def randomize(model, name, seed=1):
    """Give adapter `name` non-zero up-projections, so that it changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for w in adapters._wrappers(model):
            if name in w.adapters:
                up = w.adapters[name].up
                up.weight.copy_(torch.randn(up.weight.shape, generator=gen) * 0.5)
                up.bias.copy_(torch.randn(up.bias.shape, generator=gen) * 0.5)


def snapshot(model):
    """Everything a failed call must leave as it was: weights, structure, trainability, routing."""
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(n, type(m).__name__) for n, m in model.named_modules()],
            [(n, p.requires_grad) for n, p in model.named_parameters()],
            [w.active for w in adapters._wrappers(model)])


def assert_same(before, after):
    assert before[0].keys() == after[0].keys()
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:] == after[1:]


@pytest.mark.parametrize("placement", [("mlp",), ("attn", "mlp")])
@pytest.mark.parametrize("nonlinearity", ["relu", "gelu", "silu"])
def test_output_unchanged_at_init(tiny_model, placement, nonlinearity):
    base = tiny_model(IDS)
    adapters.add(tiny_model, bottleneck=8, placement=placement, nonlinearity=nonlinearity)
    assert torch.equal(tiny_model(IDS), base)  # zero W_up, b_up: exactly h + 0


def test_only_adapter_params_trainable(tiny_model):
    adapters.add(tiny_model, bottleneck=8, placement=("attn", "mlp"))
    trainable = [n for n, p in tiny_model.named_parameters() if p.requires_grad]
    assert trainable and all(".adapters.default." in n for n in trainable)
    assert {n.split(".")[2] for n in trainable} == {"self_attn", "mlp"}


@pytest.mark.parametrize("placement", [("mlp",), ("attn", "mlp")])
def test_parameter_count_closed_form(tiny_model, placement):
    total = count_parameters(tiny_model).total
    d, m, n_layers = 32, 8, 2
    adapters.add(tiny_model, bottleneck=m, placement=placement)
    added = n_layers * len(placement) * (2 * d * m + m + d)
    assert count_parameters(tiny_model) == (added, total + added)


def test_attention_adapter_passes_kv_through(tiny_model):
    _, base_kv = tiny_model(IDS, return_kv=True)
    adapters.add(tiny_model, bottleneck=8, placement=("attn",))
    randomize(tiny_model, "default")
    logits, kv = tiny_model(IDS, return_kv=True)
    # layer 0's keys and values come before any adapter; later layers see adapted inputs
    assert torch.equal(kv[0][0], base_kv[0][0]) and torch.equal(kv[0][1], base_kv[0][1])
    assert not torch.equal(kv[1][0], base_kv[1][0])
    assert tiny_model.generate(IDS[:1], 3).shape == (1, 9)  # the KV cache still works


def test_training_lowers_loss(tiny_model):
    adapters.add(tiny_model, bottleneck=8)
    before = evaluate_loss(tiny_model, TEXT)
    frozen = {n: p.clone() for n, p in tiny_model.named_parameters() if not p.requires_grad}
    train(tiny_model, TEXT, steps=10, lr=3e-2, batch_size=4, progress=False)
    # the frozen random lm_head (std 0.02) bounds what any change to the hidden states can gain
    assert evaluate_loss(tiny_model, TEXT) < before - 0.2
    with adapters.disabled(tiny_model):
        assert evaluate_loss(tiny_model, TEXT) == pytest.approx(before)
    assert all(torch.equal(p, frozen[n]) for n, p in tiny_model.named_parameters() if n in frozen)


def test_several_adapters_switch_disable_delete(tiny_model):
    base_modules = [n for n, _ in tiny_model.named_modules()]
    base = tiny_model(IDS)
    adapters.add(tiny_model, 8, name="a")
    adapters.add(tiny_model, 4, name="b", placement=("attn", "mlp"), nonlinearity="gelu")
    randomize(tiny_model, "a", seed=1)
    randomize(tiny_model, "b", seed=2)
    assert adapters.adapter_names(tiny_model) == ["a", "b"]
    out_b = tiny_model(IDS)
    adapters.set_active(tiny_model, "a")
    out_a = tiny_model(IDS)
    assert not torch.allclose(out_a, out_b) and not torch.allclose(out_a, base)
    assert all(".adapters.a." in n for n, p in tiny_model.named_parameters() if p.requires_grad)
    with adapters.disabled(tiny_model):
        torch.testing.assert_close(tiny_model(IDS), base)
    torch.testing.assert_close(tiny_model(IDS), out_a)  # restored after the block
    adapters.delete(tiny_model, "a")  # the active one: the attention adapters of "b" stay, unused
    assert adapters.adapter_names(tiny_model) == ["b"]
    torch.testing.assert_close(tiny_model(IDS), base)
    adapters.set_active(tiny_model, "b")
    torch.testing.assert_close(tiny_model(IDS), out_b)
    adapters.delete(tiny_model, "b")
    assert [n for n, _ in tiny_model.named_modules()] == base_modules  # every sublayer unwrapped


@pytest.fixture
def fused(tiny_model):
    adapters.add(tiny_model, 8, name="a")
    adapters.add(tiny_model, 8, name="b")
    randomize(tiny_model, "a", seed=1)
    randomize(tiny_model, "b", seed=2)
    adapters.add_fusion(tiny_model, ["a", "b"], name="f")
    return tiny_model


def test_fusion_trains_only_fusion(fused):
    trainable = [n for n, p in fused.named_parameters() if p.requires_grad]
    assert trainable and all(".fusions.f." in n for n in trainable)
    assert count_parameters(fused).trainable == 2 * 3 * 32 ** 2  # n_layers * 3 d^2
    before = {n: p.clone() for n, p in fused.named_parameters()}
    train(fused, TEXT, steps=3, lr=1e-2, batch_size=4, progress=False)
    for n, p in fused.named_parameters():
        assert torch.equal(p, before[n]) != (".fusions.f." in n), n  # only fusion params moved


def test_fusion_weights_shape_and_rows_sum_to_one(fused):
    w = adapters.fusion_weights(fused, IDS)
    assert w.shape == (2, 2, 6, 2)  # (n_layers, batch, seq, n_adapters)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 6))
    assert w.min() > 0 and not torch.allclose(w, torch.full_like(w, 0.5))  # per token, not uniform


def test_fusion_of_untrained_adapters_is_the_base_model(tiny_model):
    base = tiny_model(IDS)
    adapters.add(tiny_model, 8, name="a")
    adapters.add(tiny_model, 8, name="b")
    adapters.add_fusion(tiny_model, ["a", "b"])
    assert torch.equal(tiny_model(IDS), base)  # every a_n = 0, so h + sum_n s_n V 0 = h


def test_fusion_of_two_copies_equals_the_single_adapter(tiny_model):
    adapters.add(tiny_model, 8, name="a")
    randomize(tiny_model, "a")
    single = tiny_model(IDS)
    adapters.add(tiny_model, 8, name="copy")
    for w in adapters._wrappers(tiny_model):
        w.adapters["copy"].load_state_dict(w.adapters["a"].state_dict())
    adapters.add_fusion(tiny_model, ["a", "copy"])
    # weights sum to 1 over equal outputs, and V starts as the identity (up to 1e-6 off-diagonal)
    torch.testing.assert_close(tiny_model(IDS), single, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        for w in adapters._wrappers(tiny_model):
            w.fusions["fusion"].value.weight.copy_(torch.eye(32))
    torch.testing.assert_close(tiny_model(IDS), single)


def test_plot_fusion_weights(fused):
    w = adapters.fusion_weights(fused, IDS)
    ax = plot_fusion_weights(w, ["a", "b"])
    torch.testing.assert_close(torch.tensor(ax.images[0].get_array()), w.mean(dim=(1, 2)))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    with pytest.raises(ValueError, match="adapter_names"):
        plot_fusion_weights(w, ["a"])


BAD_CALLS = {
    "bottleneck zero": (lambda m: adapters.add(m, 0, name="new"), "bottleneck"),
    "bottleneck float": (lambda m: adapters.add(m, 2.5, name="new"), "bottleneck"),
    "bottleneck bool": (lambda m: adapters.add(m, True, name="new"), "bottleneck"),
    "unknown placement": (lambda m: adapters.add(m, 4, name="new", placement=("attn", "ffn")), "placement"),
    "empty placement": (lambda m: adapters.add(m, 4, name="new", placement=()), "placement"),
    "repeated placement": (lambda m: adapters.add(m, 4, name="new", placement=("mlp", "mlp")), "placement"),
    "unknown nonlinearity": (lambda m: adapters.add(m, 4, name="new", nonlinearity="tanh"), "nonlinearity"),
    "adapter name in use": (lambda m: adapters.add(m, 4, name="a", placement=("attn", "mlp")), "in use"),
    "name taken by a fusion": (lambda m: adapters.add(m, 4, name="f"), "in use"),
    "name with a dot": (lambda m: adapters.add(m, 4, name="x.y"), "name"),
    "reserved name": (lambda m: adapters.add(m, 4, name="keys"), "name"),
    "set_active unknown": (lambda m: adapters.set_active(m, "nope"), "name must be one of"),
    "delete unknown": (lambda m: adapters.delete(m, "nope"), "name must be one of"),
    "delete fused adapter": (lambda m: adapters.delete(m, "a"), "used by the fusion"),
    "fuse unknown": (lambda m: adapters.add_fusion(m, ["a", "nope"], name="g"), "names"),
    "fuse one": (lambda m: adapters.add_fusion(m, ["a"], name="g"), "names"),
    "fuse a string": (lambda m: adapters.add_fusion(m, "ab", name="g"), "names"),
    "fuse other placement": (lambda m: adapters.add_fusion(m, ["a", "c"], name="g"), "placement"),
    "fusion name in use": (lambda m: adapters.add_fusion(m, ["a", "b"], name="c"), "in use"),
}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_input_raises_before_any_change(fused, case):
    adapters.add(fused, 4, name="c", placement=("attn", "mlp"))
    adapters.set_active(fused, "f")
    call, message = BAD_CALLS[case]
    before = snapshot(fused)
    with pytest.raises(ValueError, match=message):
        call(fused)
    assert_same(before, snapshot(fused))


def test_fusion_weights_needs_an_active_fusion(tiny_model):
    adapters.add(tiny_model, 4)
    with pytest.raises(ValueError, match="no fusion is active"):
        adapters.fusion_weights(tiny_model, IDS)


# --- save and load ---------------------------------------------------------------------------------

def _trained_pair():
    """A base and a model with two trained adapters and a fusion over them (random weights stand in)."""
    torch.manual_seed(0)
    base = Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64))
    model = copy.deepcopy(base)
    adapters.add(model, 4, name="qa", placement=("attn", "mlp"), nonlinearity="gelu")
    adapters.add(model, 4, name="sql", placement=("attn", "mlp"))
    adapters.add_fusion(model, ["qa", "sql"])
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".adapters." in n or ".fusions." in n:
                p.add_(0.05 * torch.randn_like(p))
    return base, model


def test_adapters_and_a_fusion_round_trip_through_files(tmp_path):
    base, model = _trained_pair()
    for name in ("qa", "sql", "fusion"):
        adapters.save(model, tmp_path / name, name=name)
    loaded = copy.deepcopy(base)
    for name in ("qa", "sql", "fusion"):
        adapters.load(loaded, tmp_path / name, name=name)
    ids = torch.randint(0, 259, (2, 9), generator=torch.Generator().manual_seed(1))
    for name in ("qa", "sql", "fusion"):
        adapters.set_active(model, name)
        adapters.set_active(loaded, name)
        torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)
    assert adapters.adapter_names(loaded) == ["qa", "sql"] and adapters.fusion_names(loaded) == ["fusion"]


def test_adapter_load_refuses_before_changing_the_model(tmp_path):
    base, model = _trained_pair()
    adapters.save(model, tmp_path / "fusion", name="fusion")
    adapters.save(model, tmp_path / "qa", name="qa")
    target = copy.deepcopy(base)
    with pytest.raises(ValueError, match=r"load \['qa', 'sql'\] first"):
        adapters.load(target, tmp_path / "fusion", name="fusion")
    wider = Transformer(ModelConfig(d_model=64, n_layers=2, n_heads=2, d_ff=64))
    with pytest.raises(ValueError, match="was trained on a model with"):
        adapters.load(wider, tmp_path / "qa", name="qa")
    weights = tmp_path / "qa" / "bottleneck.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + bytes(8))  # changed after the save
    with pytest.raises(ValueError, match="is not the file saved with the rest"):
        adapters.load(target, tmp_path / "qa", name="qa")
    with pytest.raises(FileNotFoundError, match="must hold one saved adapter"):
        adapters.load(target, tmp_path, name="qa")
    assert adapters.adapter_names(target) == [] and all(p.requires_grad for p in target.parameters())
