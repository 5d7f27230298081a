import copy

import pytest
import torch

from peftlab import lora
from peftlab.explore.checkpointing import CheckpointingExplorer
from peftlab.gradient_checkpointing import (checkpointing_sweep, enable_input_require_grads,
                                            measure_checkpointing, reentrant_checkpointing)
from peftlab.measure import memory_report
from peftlab.model import ModelConfig, Transformer
from peftlab.train import lm_loss, train

IDS = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))


def grads(model, checkpointing: bool, ids=IDS) -> dict[str, torch.Tensor]:
    model.set_gradient_checkpointing(checkpointing)
    model.zero_grad(set_to_none=True)
    lm_loss(model(ids), ids).backward()
    model.set_gradient_checkpointing(False)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def lora_model(tiny_model):
    model = lora.add(tiny_model, r=4, targets="all-linear")
    for name, p in model.named_parameters():  # B = 0 at init would leave A's gradient zero
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    return model


def test_full_fine_tuning_gradients_equal_with_and_without(tiny_model):
    without, with_ = grads(tiny_model, False), grads(tiny_model, True)
    assert len(without) == sum(1 for _ in tiny_model.parameters())
    torch.testing.assert_close(with_, without)


def test_lora_frozen_embedding_gradients_equal(tiny_model):
    model = lora_model(tiny_model)
    assert not model.embed_tokens.weight.requires_grad
    without, with_ = grads(model, False), grads(model, True)
    assert set(without) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(g.abs().sum() > 0 for g in without.values())
    torch.testing.assert_close(with_, without)


def test_reentrant_checkpoint_fails_with_frozen_embedding_and_the_fix(tiny_model):
    model = lora_model(tiny_model)
    reference = grads(model, False)
    model.set_gradient_checkpointing(True)
    with reentrant_checkpointing(model):
        with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="element 0 of tensors does not require grad"):
            lm_loss(model(IDS), IDS).backward()
        handle = enable_input_require_grads(model)
        model.zero_grad(set_to_none=True)
        lm_loss(model(IDS), IDS).backward()
        handle.remove()
    torch.testing.assert_close({n: p.grad for n, p in model.named_parameters() if p.grad is not None}, reference)
    # outside the context manager the blocks are non-reentrant again and need no fix
    torch.testing.assert_close(grads(model, True), reference)


def test_train_with_checkpointing_matches_without(tiny_model):
    batches = [(IDS, IDS)] * 3
    a, b = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    ha = train(a, iter(batches), steps=3, progress=False)
    hb = train(b, iter(batches), steps=3, progress=False, gradient_checkpointing=True)
    assert ha.loss == pytest.approx(hb.loss, rel=1e-5)
    assert not any(block.checkpoint for block in b.layers)  # train switches it off again
    torch.testing.assert_close(a.state_dict(), b.state_dict())


def test_activation_bytes_drop_to_block_inputs(tiny_model):
    r = measure_checkpointing(tiny_model, IDS, timed=False)
    assert r["activations_on"] < r["activations_recompute"] < r["activations_off"]
    # each checkpointed block keeps only its input: batch x seq x d_model fp32
    block_input = IDS.numel() * tiny_model.config.d_model * 4
    off_one = copy.deepcopy(tiny_model)
    off_one.set_gradient_checkpointing(True, blocks=[0])
    one = memory_report(off_one, IDS).activations
    recompute_extra = r["activations_recompute"] - r["activations_on"]
    assert r["activations_off"] - one == pytest.approx(recompute_extra, abs=block_input)
    assert r["total_off"] - r["total_on"] == r["activations_off"] - r["activations_on"]


def test_sweep_activations_grow_linearly_and_checkpointing_saves_more_with_depth():
    rows = checkpointing_sweep([1, 2, 4], d_model=32, n_heads=2, d_ff=64, batch_size=2, seq_len=16, timed=False)
    off = [r["activations_off"] for r in rows]
    on = [r["activations_on"] for r in rows]
    per_block_off, per_block_on = off[1] - off[0], on[1] - on[0]
    assert off[2] - off[1] == 2 * per_block_off and on[2] - on[1] == 2 * per_block_on
    assert per_block_on == 2 * 16 * 32 * 4  # one block input, batch 2 x seq 16 x d_model 32, fp32
    assert off[2] / on[2] > off[0] / on[0]


@pytest.mark.parametrize("kwargs, match", [({"depths": []}, "depths"), ({"depths": [0]}, "depths"),
                                           ({"depths": [1], "precision": "fp16"}, "bf16"),
                                           ({"depths": [1], "batch_size": 0}, "batch_size")])
def test_sweep_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        checkpointing_sweep(**kwargs, d_model=32, n_heads=2, d_ff=64, seq_len=16, timed=False)


def test_measure_rejects_other_models():
    with pytest.raises(TypeError, match="Transformer"):
        measure_checkpointing(torch.nn.Linear(2, 2), IDS)


def test_explorer_measure():
    ex = CheckpointingExplorer(d_model=32, n_heads=2, d_ff=64)
    a = ex.measure(2, 2, 16, False)
    b = ex.measure(2, 2, 16, True, timed=True)
    assert b["activations"] < a["activations"] and a["weights"] == b["weights"] == 4 * sum(
        p.numel() for p in Transformer(ModelConfig(d_model=32, n_heads=2, d_ff=64, n_layers=2)).parameters())
    assert a["step_s"] is None and b["step_s"] > 0 and b["label"] == "L2 b2 s16 ckpt"


def test_prompt_methods_with_checkpointing(tiny_model):
    prompt = pytest.importorskip("peftlab.prompt")
    prefix = pytest.importorskip("peftlab.prefix")
    for wrap in (lambda m: prompt.add(m, n_tokens=4), lambda m: prefix.add(m, n_tokens=4, hidden=16)):
        model = wrap(copy.deepcopy(tiny_model))
        assert not model.base_model.embed_tokens.weight.requires_grad
        without, with_ = grads(model, False), grads(model, True)
        assert without and all(g.abs().sum() > 0 for g in without.values())
        torch.testing.assert_close(with_, without)


def test_qlora_with_checkpointing(tiny_model):
    qlora = pytest.importorskip("peftlab.qlora")
    model = qlora.quantize(tiny_model, backend="reference")
    lora_model(model)
    without, with_ = grads(model, False), grads(model, True)
    assert without and all("lora_" in n for n in without)
    torch.testing.assert_close(with_, without)


def test_explorer_update_draws_without_a_browser():
    import matplotlib
    matplotlib.use("Agg")
    ex = CheckpointingExplorer(d_model=32, n_heads=2, d_ff=64)
    ex.seq_len.value = 32  # observing the control runs update()
    ex.checkpointing.value = True
    assert [r["label"] for r in ex.rows] == ["L4 b4 s32", "L4 b4 s32 ckpt"]
    assert ex.rows[1]["activations"] < ex.rows[0]["activations"] and "ckpt" in ex.status.value


# --- Chen et al.'s segments ------------------------------------------------------------------------

def test_segments_give_the_same_gradients_and_keep_one_input_per_segment():
    from peftlab.gradient_checkpointing import segment_sweep
    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_model=32, n_layers=4, n_heads=2, d_ff=64, max_seq_len=64))
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))

    def grads(segment):
        m = copy.deepcopy(model)
        m.set_gradient_checkpointing(True, segment=segment)
        lm_loss(m(ids), ids).backward()
        return {n: p.grad for n, p in m.named_parameters()}

    reference = copy.deepcopy(model)
    lm_loss(reference(ids), ids).backward()
    for segment in (1, 2, 4):
        torch.testing.assert_close(grads(segment), {n: p.grad for n, p in reference.named_parameters()})
    rows = {r["segment"]: r for r in segment_sweep(model, ids, [0, 1, 2, 4])}
    block_input = ids.numel() * 32 * 4
    assert rows[1]["kept"] - rows[2]["kept"] == 2 * block_input  # 4 inputs kept -> 2
    assert rows[2]["kept"] - rows[4]["kept"] == block_input
    # one segment rebuilt at a time: longer segments, higher peak once the kept inputs are small
    assert rows[1]["peak"] < rows[4]["peak"] and rows[0]["peak"] == max(r["peak"] for r in rows.values())
    assert rows[0]["kept"] > rows[1]["kept"]


@pytest.mark.parametrize("kwargs, match", [({"segment": 0}, "segment must be"), ({"segment": 5}, "segment must be"),
                                           ({"segment": 2, "blocks": [0]}, "blocks=None")])
def test_segment_bad_input(tiny_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_model.set_gradient_checkpointing(True, **kwargs)
    assert tiny_model.segment == 1 and not any(b.checkpoint for b in tiny_model.layers)
