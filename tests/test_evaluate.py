"""The evaluations: one empty-input check for all, the model's training flag restored, bad train() input."""

import pytest
import torch

from peftlab import data
from peftlab.evaluate import complete, evaluate_loss, exact_match, greedy_accuracy, ranking_accuracy, token_accuracy
from peftlab.tokenizer import ByteTokenizer
from peftlab.train import train

EVALUATIONS = [evaluate_loss, exact_match, greedy_accuracy, token_accuracy]


@pytest.mark.parametrize("evaluation", EVALUATIONS, ids=lambda f: f.__name__)
def test_empty_input_is_a_value_error_naming_the_parameter(tiny_model, evaluation):
    with pytest.raises(ValueError, match=r"(examples|data) is empty"):
        evaluation(tiny_model, [])


@pytest.mark.parametrize("evaluation", EVALUATIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("training", [True, False])
def test_each_evaluation_restores_the_training_flag(tiny_model, evaluation, training):
    tiny_model.train(training)
    evaluation(tiny_model, data.qa_task()["test"][:3])
    assert tiny_model.training is training


def test_complete_restores_the_training_flag_and_refuses_no_prompts(tiny_model):
    tiny_model.train()
    assert len(complete(tiny_model, ["Q:", "A longer prompt"], 3)) == 2
    assert tiny_model.training
    with pytest.raises(ValueError, match="prompts is empty"):
        complete(tiny_model, [], 3)


def test_greedy_accuracy_and_exact_match_agree_on_a_trained_model(tiny_model):
    qa = data.qa_task()
    train(tiny_model, qa["train"], steps=3, lr=3e-3, batch_size=4, progress=False)
    assert greedy_accuracy(tiny_model, qa["test"][:16]) == exact_match(tiny_model, qa["test"][:16])


@pytest.mark.parametrize("kwargs, param", [({"steps": "3"}, "steps"), ({"steps": 0}, "steps"),
                                           ({"steps": 2, "lr": -1e-3}, "lr"), ({"steps": 2, "lr": 0.0}, "lr"),
                                           ({"steps": 2, "batch_size": 2.5}, "batch_size"),
                                           ({"steps": 2, "grad_accum": True}, "grad_accum"),
                                           ({"steps": 2, "warmup_steps": -1}, "warmup_steps")])
def test_bad_train_arguments_are_value_errors_before_anything_changes(tiny_model, kwargs, param):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"^{param} must be"):
        train(tiny_model, data.qa_task()["train"], progress=False, **kwargs)
    assert all(torch.equal(v, before[k]) for k, v in tiny_model.state_dict().items())


def test_evaluate_loss_refuses_an_unknown_loss_on():
    from peftlab import ModelConfig, Transformer, data
    from peftlab.evaluate import evaluate_loss
    with pytest.raises(ValueError, match=r"loss_on must be one of \('response', 'all'\), got 'bogus'"):
        evaluate_loss(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)), data.qa_task()["test"][:2],
                      loss_on="bogus")


def test_complete_names_an_empty_prompt():
    from peftlab import ModelConfig, Transformer
    from peftlab.evaluate import complete
    with pytest.raises(ValueError, match=r"prompts must be non-empty strings.*prompts \[1\]"):
        complete(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)), ["ok", ""], 3)


def _log_likelihood(model, prompt: str, continuation: str) -> float:
    """The naive way: one sequence at a time, the log-probabilities of the continuation's tokens."""
    tok = ByteTokenizer()
    ids = torch.tensor([tok.encode(prompt + continuation)])
    with torch.no_grad():
        logp = model(ids)[0, :-1].log_softmax(-1)
    n = len(tok.encode(prompt))
    return sum(logp[i - 1, ids[0, i]].item() for i in range(n, ids.shape[1]))


def test_ranking_accuracy_picks_the_most_likely_choice_like_a_naive_loop(tiny_model):
    facts = data.fact_completion()[:12]
    choices = [[f" {v}" for v in data.ATTRIBUTES[f.meta["attribute"]]] for f in facts]
    naive = sum(max(cs, key=lambda c: _log_likelihood(tiny_model.eval(), f.prompt, c)) == f.response
                for f, cs in zip(facts, choices)) / len(facts)
    assert ranking_accuracy(tiny_model, facts, choices, batch_size=7) == naive  # batches split mid-example
    assert ranking_accuracy(tiny_model, facts, [[f.response] for f in facts]) == 1.0  # a single choice


def test_ranking_accuracy_refuses_choices_without_the_truth_or_of_another_length(tiny_model):
    facts = data.fact_completion()[:2]
    with pytest.raises(ValueError, match=r"choices\[1\] must contain the true response"):
        ranking_accuracy(tiny_model, facts, [[facts[0].response], [" nowhere"]])
    with pytest.raises(ValueError, match="choices must give one list of candidates per example"):
        ranking_accuracy(tiny_model, facts, [[facts[0].response]])
