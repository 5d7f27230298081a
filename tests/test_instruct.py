import math

import pytest
import torch
from torch import nn

from peftlab import data
from peftlab.data import Instruction
from peftlab.instruct import (DEFAULT_TEMPLATE, NEW_FAMILIES, RULES, TERMINATOR, TRAINED_PHRASINGS,
                              Template, evaluate, fixed_width_batches, heldout_suite,
                              respond, to_examples, training_records)
from peftlab.explore.instruct import InstructionExplorer
from peftlab.model import ModelConfig
from peftlab.tokenizer import EOS, ByteTokenizer
from peftlab.train import IGNORE, collate, example_batches

REC = Instruction("reverse", "Reverse the letters of the word.", "apple", "elppa")


class Scripted(nn.Module):
    """Generates a fixed continuation for every row; uniform logits in forward (loss = ln 259)."""

    def __init__(self, continuation: str, eos: bool = True):
        super().__init__()
        self.config = ModelConfig()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.tail = ByteTokenizer().encode(continuation) + ([EOS] if eos else [])

    def forward(self, ids):
        return torch.zeros(*ids.shape, self.config.vocab_size) + 0 * self.dummy

    def generate(self, ids, max_new_tokens, **kw):
        tail = torch.tensor(self.tail[:max_new_tokens]).expand(ids.shape[0], -1)
        return torch.cat([ids, tail], dim=1)


def test_prompt_with_and_without_input():
    assert DEFAULT_TEMPLATE.prompt("Name a pet.") == "Instruction: Name a pet.\nResponse: "
    assert DEFAULT_TEMPLATE.prompt(REC.instruction, "apple") == \
        "Instruction: Reverse the letters of the word.\nInput: apple\nResponse: "
    assert DEFAULT_TEMPLATE.prompt("Echo {braces}.", "{x}").count("{x}") == 1  # user braces stay as they are


def test_training_example_is_prompt_plus_response_plus_terminator():
    ex = to_examples([REC])[0]
    assert ex.prompt == DEFAULT_TEMPLATE.prompt(REC.instruction, REC.input)  # the prompt generation uses
    assert ex.response == "elppa" + TERMINATOR
    ids, labels = collate([ex], ByteTokenizer(), "response")
    target = labels[labels != IGNORE].tolist()
    assert target == list(b"elppa\n") + [EOS]  # loss on response, terminator and EOS only
    _, labels_all = collate([ex], ByteTokenizer(), "all")
    assert int((labels_all != IGNORE).sum()) == ids.shape[1]


@pytest.mark.parametrize("instruction", ["", "   ", None])
def test_empty_instruction_is_rejected(instruction):
    with pytest.raises(ValueError, match="instruction"):
        DEFAULT_TEMPLATE.prompt(instruction, "apple")
    with pytest.raises(ValueError, match="instruction"):
        to_examples([Instruction("reverse", instruction, "apple", "elppa")])


@pytest.mark.parametrize("text, message", [
    ("Instruction: {instruction}\nInput: {input}\n", "response"),          # no response slot
    ("{response} after {instruction}", "response"),                          # response not last
    ("{instruction} {response}{response}", "response"),
    ("{input}\nResponse: {response}", "instruction"),
    ("{instruction} {context} {response}", "unknown slots"),
])
def test_bad_templates_are_rejected(text, message):
    with pytest.raises(ValueError, match=message):
        Template(text)


def test_output_with_terminator_is_rejected():
    with pytest.raises(ValueError, match="output"):
        to_examples([Instruction("x", "Do it.", "", "two\nlines")])


def test_respond_stops_at_terminator_and_evaluate_scores_per_family():
    model = Scripted("elppa\nInstruction: more text")
    assert respond(model, [REC, ("Say hi.", "")]) == ["elppa", "elppa"]
    other = Instruction("count", "Count the letters in the word.", "river", "5")
    r = evaluate(model, [REC, other])
    assert r["exact_match"] == 0.5
    assert r["per_family"] == {"count": 0.0, "reverse": 1.0}
    assert r["loss"] == pytest.approx(math.log(259), rel=1e-5)  # uniform logits


def test_fixed_width_batches_pad_without_changing_the_targets():
    examples = to_examples(training_records()[:8])
    ids, labels = next(fixed_width_batches(examples, 4, seed=3))
    assert ids.shape[1] % 32 == 0 and ids.shape[1] <= 256
    width = int((ids != ByteTokenizer.pad_id).sum(1).max())
    assert (labels[:, width:] == IGNORE).all() and (ids[:, width:] == ByteTokenizer.pad_id).all()
    # the same targets as the unpadded batch
    ref_ids, ref_labels = next(example_batches(examples, 4, seed=3))
    assert torch.equal(ids[:, :ref_ids.shape[1]], ref_ids) and torch.equal(labels[:, :ref_labels.shape[1]], ref_labels)


def test_heldout_suite_is_held_out():
    train = training_records()
    suite = heldout_suite()
    seen = {(r.instruction, r.input) for r in train}
    assert not seen & {(r.instruction, r.input) for r in suite["new inputs"]}
    assert {r.instruction for r in suite["new phrasings"]}.isdisjoint({r.instruction for r in train})
    assert {r.family for r in suite["new families"]} == set(NEW_FAMILIES)
    trained_people = {r.input for r in train if r.family == "fact_qa"}
    assert not trained_people & {r.input for r in suite["held-out facts"]}
    people = {p.name: p for p in data.world()}
    for r in suite["held-out facts"]:  # the answer is the world's
        name = next(n for n in people if n in r.input)
        assert r.output in {people[name].city, people[name].job, people[name].pet, people[name].color}
    for r in suite["new families"]:
        assert RULES[r.family](r.input) == r.output


def test_explorer_compares_models_side_by_side():
    ex = InstructionExplorer({"base": Scripted("I do not know.\n"), "tuned": Scripted("elppa\n")})
    r = ex.compare(TRAINED_PHRASINGS["reverse"], "apple")
    assert r["answers"] == {"base": "I do not know.", "tuned": "elppa"}
    assert r["rule"] == "elppa" and r["prompt"].endswith("Response: ")
    assert ex.compare("Paint the fence.", "")["rule"] is None
    with pytest.raises(ValueError, match="instruction"):
        ex.compare("", "apple")
    with pytest.raises(ValueError, match="models"):
        InstructionExplorer({})


def test_heldout_words_are_in_no_training_set():
    from peftlab.instruct import HELDOUT_WORDS
    from peftlab.teacher import TEACHER_VOCABULARY, pseudo_words
    assert len(set(HELDOUT_WORDS)) == len(HELDOUT_WORDS) == 40
    assert not set(HELDOUT_WORDS) & (set(data.WORDS) | set(TEACHER_VOCABULARY) | set(pseudo_words()))
    lengths = [len(w) for w in HELDOUT_WORDS]  # no one count answers most words (notebook 19's old artifact)
    assert max(lengths.count(n) for n in set(lengths)) / len(lengths) < 0.2


def test_new_wordings_are_far_from_every_trained_wording():
    from peftlab.instruct import NEW_WORDINGS, PARAPHRASES, nearest_trained
    assert set(NEW_WORDINGS) == set(PARAPHRASES)
    assert all(nearest_trained(w) <= 0.2 for w in NEW_WORDINGS.values())
    assert nearest_trained(PARAPHRASES["sort"]) > 0.8  # the old held-out wordings were near copies
    assert nearest_trained(TRAINED_PHRASINGS["count"]) == 1.0


def test_instruct_sets_hold_every_input_out_of_training():
    from peftlab.instruct import HELDOUT_WORDS, NEW_WORDINGS, instruct_sets
    from peftlab.teacher import teacher_tasks
    sets = instruct_sets()
    trained = {(e.prompt, e.response) for e in sets["train"]} | {
        (e.prompt, e.response) for e in to_examples(teacher_tasks())}
    for name in ("val", "test", "wordings", "families", "facts"):
        assert not {(e.prompt, e.response) for e in sets[name]} & trained, name
    words = lambda e: set(e.prompt.split("Input: ")[1].split("\n")[0].lower().split())
    assert all(words(e) <= set(data.WORDS) for e in sets["val"] if e.meta["family"] != "fact_qa")  # in distribution
    assert all(words(e) <= set(HELDOUT_WORDS) for e in sets["test"] + sets["wordings"] + sets["families"])
    assert [e.response for e in sets["wordings"]] == [e.response for e in sets["test"]]
    assert {e.prompt.split("\n")[0] for e in sets["wordings"]} == {f"Instruction: {w}" for w in NEW_WORDINGS.values()}
    families = [e.meta["family"] for e in sets["test"]]
    assert all(families.count(f) == 40 for f in set(families)) and len(set(families)) == 6


@pytest.mark.parametrize("family, generated, ok", [
    ("count", "7\n", True), ("count", "7", False), ("count", "seven\n", False), ("count", "7 letters\n", False),
    ("uppercase", "TIGER ZEBRA\n", True), ("uppercase", "Tiger\n", False), ("repeat", "a a a\n", True),
    ("repeat", "a a\n", False), ("sort", "apple zebra\n", True), ("fact_qa", "goat\n", True),
    ("fact_qa", "a goat\n", False)])
def test_well_formed_checks_the_form_and_the_terminator(family, generated, ok):
    from peftlab.instruct import well_formed
    assert well_formed(family, generated) is ok


def test_format_rate_counts_well_formed_answers_and_checks_its_input():
    from peftlab.instruct import format_rate, well_formed
    examples = to_examples([REC, Instruction("count", "Count the letters in the word.", "river", "5")])
    assert format_rate(Scripted("elppa\nInstruction: more"), examples) == 0.5  # right form for reverse only
    assert format_rate(Scripted("elppa"), examples) == 0.0  # no terminator: the answer never ends
    with pytest.raises(ValueError, match="family must be one of"):
        well_formed("poetry", "x\n")
    with pytest.raises(ValueError, match="examples"):
        format_rate(Scripted("x"), [])
