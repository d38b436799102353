"""The format grammar, plausibility rules, sampling, tasks and prompt assembly (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmgen.classification_tasks import (
    TASKS,
    ClassificationTask,
    Example,
    load_classification_task,
    load_jsonl_task,
    load_sni_task,
)
from llmgen.errors import LlmgenError
from llmgen.formats import (
    Field,
    Format,
    Header,
    Layout,
    Options,
    build_prompt,
    differing_attributes,
    implausibility,
    is_plausible,
    load_formats,
    number,
    sample_formats,
    save_formats,
)

FIXTURE = Path(__file__).parent / "fixtures" / "sni_task_sentiment.json"
TWO = Layout((Field("First number", "first"), Field("Second number", "second")), "Larger")
MC = Layout((Field("Sentence", "s"), Header("Options"), Options("opts", "Option")), "Answer")
ONE = Layout((Field("Review", "review"),), "Sentiment")


# --- rendering -------------------------------------------------------------------------------------

def test_original_format_renders_plain_fields():
    assert Format.original().render(TWO, {"first": "3", "second": "5"}) == "First number: 3\nSecond number: 5\nLarger: "
    assert Format().render(TWO, {"first": "3", "second": "5"}, "second") == (
        "First number: 3\nSecond number: 5\nLarger: second")


def test_separator_space_and_casing_are_shared_by_all_fields():
    fmt = Format(separator=" - ", space=" || ", casing="upper")
    assert fmt.render(TWO, {"first": "3", "second": "5"}, "first") == (
        "FIRST NUMBER - 3 || SECOND NUMBER - 5 || LARGER - first")
    fmt = Format(separator="::: ", space="; \n", casing="lower")
    assert fmt.render(ONE, {"review": "Fine."}) == "review::: Fine.; \nsentiment::: "


def test_enumeration_renders_descriptor_number_wrapper_and_separator():
    fmt = Format(separator=": ", space="\n", casing="title", option_space="\n", option_separator=" ",
                 wrapper="[x]", numbering="i")
    text = fmt.render(MC, {"s": "Hi", "opts": ["food", "sports", "travel"]})
    assert text == "Sentence: Hi\nOptions: \nOption [i]: food\nOption [ii]: sports\nOption [iii]: travel\nAnswer: "
    fmt = Format(separator=" ", space=" ", casing="upper", option_space=" , ", option_separator="",
                 wrapper="x )", numbering="1")
    assert fmt.render(MC, {"s": "Hi", "opts": ["a", "b"]}, "2") == "SENTENCE Hi OPTIONS  OPTION1 ) a , OPTION2 ) b ANSWER 2"
    no_desc = Layout((Field("Q", "q"), Options("opts")), "A")
    assert Format(wrapper="<x>", numbering="a").render(no_desc, {"q": "?", "opts": ["x", "y"]}) == "Q: ?\n<a>: x <b>: y\nA: "


def test_numberings_and_their_limits():
    assert [number(n, 3) for n in ("1", "A", "a", "I", "i")] == ["4", "D", "d", "IV", "iv"]
    assert number("i", 8) == "ix"
    with pytest.raises(LlmgenError, match="cannot label option 16"):
        number("I", 15)
    with pytest.raises(LlmgenError, match="cannot label option 16"):
        Format(numbering="i").render(MC, {"s": "x", "opts": [str(k) for k in range(16)]})


def test_render_errors_name_the_problem():
    with pytest.raises(LlmgenError, match="no field 'second'"):
        Format().render(TWO, {"first": "1"})
    with pytest.raises(LlmgenError, match="non-empty list"):
        Format().render(MC, {"s": "x", "opts": "not a list"})
    with pytest.raises(LlmgenError, match="unknown casing"):
        Format(casing="shouty")
    with pytest.raises(LlmgenError, match="at most one Options"):
        Layout((Options("a"), Options("b")))


# --- plausibility -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, layout, ok", [
    (Format(), MC, True),
    (Format(separator=""), ONE, False),  # "Review<text>"
    (Format(separator="\n\t", space="\n"), ONE, True),  # descriptor on its own line, fields on lines
    (Format(separator="\n\t", space=" || "), ONE, False),  # one line of fields, descriptors split off
    (Format(separator="\n ", space="\n", option_space=" "), MC, False),  # newline inside one-line options
    (Format(separator="\n ", space="\n", option_space=" \n"), MC, True),
    (Format(space=""), ONE, False),  # "Review: textSentiment: "
    (Format(separator=": ", space=""), Layout((Header("Say something"),), "Answer"), True),  # after a header
])
def test_plausibility_rules(fmt, layout, ok):
    assert is_plausible(fmt, layout) is ok
    assert (implausibility(fmt, layout) is None) is ok


# --- sampling and dedup ----------------------------------------------------------------------------

def test_enumeration_is_exhaustive_and_deduplicated_by_rendered_string():
    # 14 non-empty separators x 5 newline spaces + 10 newline-free separators x 9 non-empty
    # newline-free spaces = 160 choices of separator/space; "Review".title() == "Review", so only
    # 3 of the 4 casings render differently: 480 distinct plausible formats.
    formats = sample_formats(ONE, 10_000, seed=0)
    templates = [f.template(ONE) for f in formats]
    assert len(formats) == 480 and len(set(templates)) == 480
    assert formats[0] == Format.original()
    assert all(is_plausible(f, ONE) for f in formats)
    assert not any(f.casing == "title" for f in formats)  # identical to identity, dropped as duplicates


def test_descriptorless_layout_collapses_to_its_spaces():
    layout = Layout((Field("", "x"),), output="")
    formats = sample_formats(layout, 1000)
    assert len({f.template(layout) for f in formats}) == len(formats) == 14  # 15 spaces minus the empty one


def test_sampling_is_seeded_and_uniform_subset_of_valid():
    a, b, c = (sample_formats(MC, 60, seed=s) for s in (1, 1, 2))
    assert a == b and a != c
    assert len(a) == 60 and len({f.template(MC) for f in a}) == 60
    assert all(is_plausible(f, MC) for f in a)
    small = sample_formats(ONE, 30, seed=3)
    assert len(small) == 30 and small == sample_formats(ONE, 30, seed=3)


def test_formats_round_trip_through_json(tmp_path):
    formats = sample_formats(MC, 12, seed=0)
    path = save_formats(tmp_path / "f.json", formats, MC, seed=0)
    assert load_formats(path, MC) == formats
    assert json.loads(path.read_text())["templates"][0] == Format().template(MC)
    with pytest.raises(LlmgenError, match="different prompt layout"):
        load_formats(path, ONE)
    (tmp_path / "bad.json").write_text('{"formats": [{"colour": "red"}]}')
    with pytest.raises(LlmgenError, match="unknown format attribute 'colour'"):
        load_formats(tmp_path / "bad.json")


def test_differing_attributes_ignore_inert_choices():
    a = Format()
    assert differing_attributes(a, Format(wrapper="[x]"), ONE) == []  # no enumeration: wrapper is inert
    assert differing_attributes(a, Format(wrapper="[x]", casing="upper"), MC) == ["casing", "wrapper"]


# --- tasks and prompts -----------------------------------------------------------------------------

def test_prompt_is_instruction_demos_and_open_query():
    task = load_classification_task("comparison", n=10, seed=0)
    demo, query = task.examples[0], task.examples[1]
    text = task.prompt(Format(separator=" - ", space="\n"), [demo], query)
    assert text == (f"{task.instruction}\n\nFirst number - {demo.values['first']}\nSecond number - "
                    f"{demo.values['second']}\nLarger - {demo.label}\n\nFirst number - {query.values['first']}\n"
                    f"Second number - {query.values['second']}\nLarger - ")
    assert build_prompt(Format(), ONE, "", [], {"review": "ok"}) == "Review: ok\nSentiment: "


def test_option_labels_are_remapped_per_format():
    task = load_classification_task("topic", n=20, seed=0)
    ex = task.examples[0]
    assert task.answers(Format(numbering="A")) == ["A", "B", "C", "D"]
    assert task.answers(Format(numbering="i")) == ["i", "ii", "iii", "iv"]
    assert task.gold(ex, Format(numbering="1")) == str(ex.label + 1)
    demo_text = task.prompt(Format(numbering="I", wrapper="x."), [ex], task.examples[1]).split("\n\n")[1]
    assert demo_text.endswith("Answer: " + ["I", "II", "III", "IV"][ex.label])
    opts = ex.values["options"]
    assert f"\nI.: {opts[0]} II.: {opts[1]} III.: {opts[2]} IV.: {opts[3]}\n" in demo_text


def test_builtin_tasks_are_deterministic_and_balanced():
    assert set(TASKS) >= {"sentiment", "parity", "comparison", "topic"}
    for name in TASKS:
        a, b = load_classification_task(name, 100, 7), load_classification_task(name, 100, 7)
        assert [(e.values, e.label) for e in a.examples] == [(e.values, e.label) for e in b.examples]
        labels = [a.gold(e, Format()) for e in a.examples]
        assert len(set(labels)) >= 2 and max(labels.count(x) for x in set(labels)) < 80
    assert load_classification_task("parity", 5, 1).examples != load_classification_task("parity", 5, 2).examples
    with pytest.raises(LlmgenError, match="unknown classification task 'nope'"):
        load_classification_task("nope")


def test_sni_loader_reads_definition_examples_and_instances():
    task = load_sni_task(FIXTURE)
    assert task.instruction.startswith("In this task, you are given a short review.")
    assert task.classes == ("Negative", "Positive")
    assert len(task.examples) == 13 and len(task.demonstrations) == 2
    assert task.layout == Layout((Field("Input", "input"),), "Output")
    assert task.prompt(Format(), task.demonstrations[:1], task.examples[0]).endswith(
        "Output: Positive\n\nInput: " + task.examples[0].values["input"] + "\nOutput: ")


def test_sni_loader_rejects_bad_files(tmp_path):
    data = json.loads(FIXTURE.read_text())
    for inst in data["Instances"]:
        inst["output"] = []
    (tmp_path / "nolabels.json").write_text(json.dumps(data))
    with pytest.raises(LlmgenError, match="has no labels"):
        load_sni_task(tmp_path / "nolabels.json")
    (tmp_path / "noinst.json").write_text(json.dumps({"Definition": ["x"]}))
    with pytest.raises(LlmgenError, match="no 'Instances' list"):
        load_sni_task(tmp_path / "noinst.json")
    with pytest.raises(LlmgenError, match="file not found"):
        load_sni_task(tmp_path / "missing.json")


def test_jsonl_loader_with_fields_and_options(tmp_path):
    path = tmp_path / "mc.jsonl"
    rows = [{"input": {"Question": f"q{i}"}, "options": ["yes", "no", "maybe"], "output": ["no", "maybe"][i % 2],
             "instruction": "Answer."} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_jsonl_task(path)
    assert task.instruction == "Answer." and task.num_options == 3
    assert [e.label for e in task.examples] == [1, 2, 1, 2]
    assert task.prompt(Format(), [], task.examples[0]) == "Answer.\n\nQuestion: q0\nOptions: \n(A): yes (B): no (C): maybe\nAnswer: "
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"input": "x", "options": ["a"], "output": "b"}) + "\n")
    with pytest.raises(LlmgenError, match="not one of the options"):
        load_jsonl_task(bad)


def test_task_validation():
    with pytest.raises(LlmgenError, match="at least 2 classes"):
        ClassificationTask("t", "", ONE, [Example({"review": "x"}, "a")], ("a",))
    with pytest.raises(LlmgenError, match="is not a class"):
        ClassificationTask("t", "", ONE, [Example({"review": "x"}, "c")], ("a", "b"))
