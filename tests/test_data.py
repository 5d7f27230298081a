import pytest

from peftlab import data
from peftlab.tokenizer import ByteTokenizer

# Pinned: changing the generator must change DATA_VERSION and this hash together.
CORPUS_SHA256 = "956ae60faa387888180df848db33fcff3f9e58eedd062b04e58faebda3de13c7"


def test_same_seed_same_bytes():
    assert data.DATA_VERSION == 1
    assert data.corpus_sha256() == CORPUS_SHA256


def test_other_seed_other_world():
    assert data.world(1) != data.world(0)


def _key(x):
    return (x.prompt, x.response) if isinstance(x, data.Example) else x


@pytest.mark.parametrize("task", [data.pretraining_corpus, data.qa_task, data.sql_task, data.python_task,
                                  data.dna_task, data.instructions])
def test_splits_never_overlap(task):
    splits = task()
    keys = {k: {_key(x) for x in v} for k, v in splits.items()}
    assert set(splits) == {"train", "val", "test"}
    assert all(len(v) > 0 for v in splits.values())
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"] and not keys["val"] & keys["test"]


def test_qa_split_by_person_half_never_asked():
    qa = data.qa_task()
    people = {k: {e.meta["person"] for e in v} for k, v in qa.items()}
    assert not people["train"] & (people["val"] | people["test"])
    assert len(people["train"]) == len(data.world()) // 2


def test_pretraining_text_has_no_question_answer_format():
    text = "\n".join(data.pretraining_corpus()["train"])
    assert "Q:" not in text and "?" not in text
    for p, attribute, value in data.facts(data.world()):
        assert data.PHRASINGS[attribute][0].format(n=p.name, v=value) in text


def test_dna_is_absent_from_pretraining():
    text = "\n".join(data.pretraining_corpus()["train"])
    assert "ATG" not in text and "|" not in text


def test_tokenizer_round_trips_every_corpus():
    tok = ByteTokenizer()
    texts = [*data.pretraining_corpus()["train"], *(e.text for e in data.qa_task()["train"]),
             *(e.text for e in data.sql_task()["train"]), *(e.text for e in data.python_task()["train"]),
             *data.dna_task()["train"], *(r.output for r in data.instructions()["train"]), "héllo ✓"]
    for t in texts:
        assert tok.decode(tok.encode(t, bos=True, eos=True)) == t


def test_instruction_outputs_follow_their_rule():
    for r in data.instructions()["test"]:
        if r.family == "reverse":
            assert r.output == r.input[::-1]
        if r.family == "sort":
            assert r.output.split() == sorted(r.input.split())


def test_wrong_answers_replace_a_share_with_another_value_of_the_attribute():
    train = data.qa_task()["train"]
    before = [e.response for e in train]
    noisy = data.wrong_answers(train, 0.3)
    assert [e.response for e in train] == before  # the input is not changed
    changed = [(a, b) for a, b in zip(train, noisy) if a.response != b.response]
    assert len(changed) == round(0.3 * len(train)) == 72
    for a, b in changed:
        assert b.prompt == a.prompt and b.meta["wrong"]
        assert b.response.strip() in data.ATTRIBUTES[a.meta["attribute"]] and b.response.endswith("\n")
    assert noisy == data.wrong_answers(train, 0.3)  # seeded
    assert data.wrong_answers(train, 0.0) == train
    for bad in (-0.1, 1.01, "half", True, float("nan")):
        with pytest.raises(ValueError, match=r"share \(the wrong-answer share\) must be a number in \[0, 1\]"):
            data.wrong_answers(train, bad)
    with pytest.raises(ValueError, match="examples must be Q/A examples"):
        data.wrong_answers(data.sql_task()["train"], 0.5)


def test_the_one_phrasing_corpus_states_each_fact_once_as_often():
    full, one = data.pretraining_corpus(), data.pretraining_corpus(phrasings="one")
    probes = {e.prompt + e.response + "." for e in data.fact_completion()}
    assert set(one["train"]) == probes  # only the first phrasing of each fact, no stories
    assert len(one["train"]) == len(full["train"]) - 1200  # the fact documents of the full corpus, less its 1,200 stories
    assert one["val"] == full["val"] and one["test"] == full["test"]
