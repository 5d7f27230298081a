import pytest
import torch

from peftlab.measure import count_parameters, memory_report, time_step, train_step_fn


def test_full_fine_tuning_fp32_adamw_is_16_bytes_per_parameter(tiny_model):
    n = count_parameters(tiny_model).total
    r = memory_report(tiny_model, torch.randint(0, 256, (2, 16)))
    assert r.weights == 4 * n and r.gradients == 4 * n and r.optimizer == 8 * n
    assert r.weights + r.gradients + r.optimizer == 16 * n
    # one 0-dim step counter per parameter tensor, reported apart
    assert r.optimizer_step_counters == 4 * len(list(tiny_model.parameters()))
    assert r.total == r.weights + r.gradients + r.optimizer + r.activations


def test_frozen_parameters_cost_only_their_weights(tiny_model):
    for p in tiny_model.parameters():
        p.requires_grad_(False)
    tiny_model.lm_head.weight.requires_grad_(True)
    head = tiny_model.lm_head.weight.numel()
    r = memory_report(tiny_model, torch.randint(0, 256, (2, 16)))
    assert r.gradients == 4 * head and r.optimizer == 8 * head
    assert r.weights == 4 * count_parameters(tiny_model).total


def test_activations_grow_linearly_with_batch(tiny_model):
    a1 = memory_report(tiny_model, torch.randint(0, 256, (1, 32))).activations
    a4 = memory_report(tiny_model, torch.randint(0, 256, (4, 32))).activations
    assert 3.5 < a4 / a1 <= 4.0 + 1e-9  # the input ids and per-step constants do not scale


def test_gradient_checkpointing_saves_activations(tiny_model):
    batch = torch.randint(0, 256, (2, 32))
    plain = memory_report(tiny_model, batch).activations
    tiny_model.set_gradient_checkpointing(True)
    assert memory_report(tiny_model, batch).activations < 0.5 * plain


def test_bad_batch_is_a_value_error(tiny_model):
    with pytest.raises(ValueError, match="LongTensor"):
        memory_report(tiny_model, torch.zeros(2, 8))


def test_time_step_returns_a_median(tiny_model):
    t = time_step(train_step_fn(tiny_model, torch.randint(0, 256, (1, 8))), warmup=1, repeats=3)
    assert 0 < t < 5
