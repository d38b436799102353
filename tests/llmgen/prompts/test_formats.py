"""The format grammar, plausibility rules, sampling, tasks and prompt assembly (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmgen.errors import LlmgenError
from llmgen.prompts.formats import (
    NUMBERINGS,
    Enumeration,
    Field,
    Format,
    Group,
    Header,
    Layout,
    build_prompt,
    implausibility,
    is_plausible,
    load_formats,
    number,
    parse_input,
    sample_formats,
    save_formats,
)
from llmgen.prompts.render import PromptStructure, answers_in, gold_in, prompt_in, prompt_structure
from llmgen.tasks.classification import (
    TASKS,
    classes_of,
    classification_task,
    example,
    load_classification_task,
    load_jsonl_task,
    load_sni_task,
    num_options,
)

# a real SNI task (allenai/natural-instructions tasks/task363_sst2_polarity_classification.json, trimmed)
FIXTURE = Path(__file__).parents[2] / "fixtures" / "sni_unformatted" / "task363_sst2_polarity_classification.json"
TWO = Layout((Field("First number", "first"), Field("Second number", "second")), "Larger")
MC = Layout((Field("Sentence", "s"), Group("block", (Header("Options"), Enumeration("opts", "Option")))), "Answer")
ONE = Layout((Field("Review", "review"),), "Sentiment")


# --- rendering -------------------------------------------------------------------------------------

def test_original_format_renders_plain_fields():
    assert Format.original().render(TWO, {"first": "3", "second": "5"}) == "First number: 3\nSecond number: 5\nLarger: "
    assert Format().render(TWO, {"first": "3", "second": "5"}, "second") == (
        "First number: 3\nSecond number: 5\nLarger: second")
    assert Format().render(TWO, {"first": "3", "second": "5"}, output=False) == "First number: 3\nSecond number: 5"


def test_separator_space_and_casing_are_shared_by_all_fields():
    fmt = Format(separator=" - ", space=" || ", casing="upper")
    assert fmt.render(TWO, {"first": "3", "second": "5"}, "first") == (
        "FIRST NUMBER - 3 || SECOND NUMBER - 5 || LARGER - first")
    fmt = Format(separator="::: ", space="; \n", casing="lower")
    assert fmt.render(ONE, {"review": "Fine."}) == "review::: Fine.; \nsentiment::: "


def test_enumeration_has_its_own_separator_spacing_wrapper_and_numbering():
    """As the reference's NewEnumerationPromptFormat: descriptor + option separator + wrapped number
    + the enumeration's own separator + text, items joined by the item spacing; the group holding
    the header and the enumeration has its own spacing."""
    fmt = Format({"block.space": " ", "opts.separator": "", "opts.item_space": "\n", "opts.option_separator": "\t",
                  "opts.wrapper": "[x]", "opts.numbering": "i"}, casing="title")
    text = fmt.render(MC, {"s": "Hi", "opts": ["food", "sports", "travel"]})
    assert text == "Sentence: Hi\nOptions:  Option\t[i]food\nOption\t[ii]sports\nOption\t[iii]travel\nAnswer: "
    fmt = Format({"block.space": "\n", "opts.separator": " - ", "opts.item_space": " , ", "opts.option_separator": "",
                  "opts.wrapper": "x )", "opts.numbering": "Ⅰ"}, separator=" ", space=" ", casing="upper")
    assert fmt.render(MC, {"s": "Hi", "opts": ["a", "b"]}, "Ⅱ") == (
        "SENTENCE Hi OPTIONS \nOPTIONⅠ ) - a , OPTIONⅡ ) - b ANSWER Ⅱ")
    shared = Layout((Enumeration("e", "Fact", own_separator=False, own_casing=True),), "A")
    fmt = Format({"e.casing": "lower", "e.wrapper": "x", "e.option_separator": ""}, separator=" :: ", casing="upper")
    assert fmt.render(shared, {"e": ["x", "y"]}) == "fact1 :: x fact2 :: y\nA :: "
    fixed_numbers = Layout((Enumeration("s", "Sentence", numbers=(0, 2)),), "A")
    assert Format({"s.wrapper": "x"}).render(fixed_numbers, {"s": ["p", "q"]}, output=False) == "Sentence 1: p Sentence 3: q"


def test_numberings_and_their_limits():
    assert [number(n, 3) for n in NUMBERINGS] == ["4", "D", "d", "Ⅳ", "iv", "IV"]  # Ⅳ is U+2163
    assert number("i", 8) == "ix" and number("Ⅰ", 11) == "Ⅻ"
    with pytest.raises(LlmgenError, match="cannot label option 13"):
        number("Ⅰ", 12)  # the reference's Unicode numerals stop at twelve
    with pytest.raises(LlmgenError, match="cannot label option 16"):
        number("I", 15)
    with pytest.raises(LlmgenError, match="cannot label option 16"):
        Format({"opts.numbering": "i"}).render(MC, {"s": "x", "opts": [str(k) for k in range(16)]})


def test_render_errors_name_the_problem():
    with pytest.raises(LlmgenError, match="no field 'second'"):
        Format().render(TWO, {"first": "1"})
    with pytest.raises(LlmgenError, match="non-empty list"):
        Format().render(MC, {"s": "x", "opts": "not a list"})
    with pytest.raises(LlmgenError, match="unknown casing"):
        Format(casing="shouty")
    with pytest.raises(LlmgenError, match="unknown format attribute 'colour'"):
        Format({"colour": "red"})
    with pytest.raises(LlmgenError, match="must be unique"):
        Layout((Enumeration("a"), Group("a", (Field("x", "x"),))))


def test_instruction_names_options_as_the_format_numbers_them():
    layout = Layout((Enumeration("enum1", "", sizes=(2,)),), "Answer")
    text = "Answer '{enum1_1}' or '{enum1_2}'; keep {other_1} and {braces}."
    assert Format({"enum1.numbering": "a"}).instruction(text, layout) == "Answer 'a' or 'b'; keep {other_1} and {braces}."
    assert build_prompt(Format({"enum1.numbering": "I"}), layout, text, [], {"enum1": ["x", "y"]}).startswith(
        "Answer 'I' or 'II'")


def test_raw_text_parses_back_into_fields_and_enumerations():
    layout = Layout((Field("Title", "t"), Enumeration("s", "Sentence", sizes=(3, 2, 1))), "Answer")
    fmt = Format({"s.wrapper": "x", "s.item_space": " "}, space=" ")
    assert parse_input("Title: A: B Sentence 1: c. Sentence 2: d.", layout, fmt) == {"t": "A: B", "s": ["c.", "d."]}
    assert parse_input("Title: x", layout, fmt) is None


# --- plausibility -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, layout, ok", [
    (Format(), MC, True),
    (Format(separator=""), ONE, False),  # "Review<text>"
    (Format(separator="\n\t", space="\n"), ONE, True),  # descriptor on its own line, fields on lines
    (Format(separator="\n\t", space=" || "), ONE, False),  # one line of fields, descriptors split off
    (Format({"opts.separator": "\n "}), MC, False),  # newline inside one-line options
    (Format({"opts.separator": "\n ", "opts.item_space": " \n"}), MC, True),
    (Format({"opts.separator": ""}), MC, True),  # an enumeration's own separator may be empty
    (Format({"block.space": " ", "opts.separator": "\n", "opts.item_space": "\n"}), MC, False),  # block on one line
    (Format({"block.space": ""}), MC, True),  # "Options: (1) ..." : empty spacing after a header
    (Format(space=""), ONE, False),  # "Review: textSentiment: "
    (Format(separator=": ", space=""), Layout((Header("Say something"),), "Answer"), True),  # after a header
])
def test_plausibility_rules(fmt, layout, ok):
    assert is_plausible(fmt, layout) is ok
    assert (implausibility(fmt, layout) is None) is ok


def test_whitespace_only_groups_reject_printing_spacings():
    layout = Layout((Group("g", (Header("Options"), Enumeration("e")), whitespace_only=True),), "A")
    assert is_plausible(Format({"g.space": " \n"}), layout)
    assert not is_plausible(Format({"g.space": ", "}), layout)
    assert not is_plausible(Format({"g.space": ""}), layout)  # "".isspace() is False, as in the reference


def test_relevant_attributes_follow_what_each_element_controls():
    assert ONE.relevant_attributes() == ("separator", "space", "casing")
    assert MC.relevant_attributes() == ("separator", "space", "casing", "block.space", "opts.item_space",
                                        "opts.wrapper", "opts.numbering", "opts.separator", "opts.option_separator")
    bare = Layout((Enumeration("e", "", own_separator=False),), "A", fixed=("casing",))
    assert bare.relevant_attributes() == ("separator", "space", "e.item_space", "e.wrapper", "e.numbering")


# --- sampling and dedup ----------------------------------------------------------------------------

def test_small_spaces_take_every_plausible_assignment():
    # 14 non-empty separators x 5 newline spaces + 10 newline-free separators x 9 non-empty
    # newline-free spaces = 160 choices of separator/space, x 4 casings = 640 plausible value
    # assignments (the reference's 16 spaces count " -- " twice: 15 x 16 x 4 = 960 <= 9999
    # combinations, so all are taken). "Review".title() == "Review": title and identity assignments
    # render the same template and are both kept, as in the reference (distinct assignments).
    formats = sample_formats(ONE, 10_000, seed=0)
    templates = [f.template(ONE) for f in formats]
    assert len(formats) == 640 and len(set(templates)) == 480
    assert formats[0] == Format.original()
    assert all(is_plausible(f, ONE) for f in formats)
    assert sum(f.casing == "title" for f in formats) == 160


def test_descriptorless_layout_collapses_to_its_spaces():
    layout = Layout((Field("", "x"),), output="")
    formats = sample_formats(layout, 1000)
    assert len({f.template(layout) for f in formats}) == len(formats) == 14  # 15 spaces minus the empty one


# grammar_definition.py's value lists, written out in the reference's order (the " -- " twice)
REF_LISTS = {
    "separator": ['', '::: ', ':: ', ': ', ' \n\t', '\n    ', ' : ', ' - ', ' ', '\n ', '\n\t', ':', '::', '- ', '\t'],
    "space": ['', ' ', '\n', ' \n', ' -- ', '  ', '; \n', ' || ', ' <sep> ', ' -- ', ', ', ' \n ', ' , ', '\n ', '. ',
              ' ,  '],
    "option_separator": ['', ' ', '  ', '\t'],
    "casing": ["identity", "title", "upper", "lower"],  # lambda x: x, x.title(), x.upper(), x.lower()
    "wrapper": ["(x)", "x.", "x)", "x )", "[x]", "<x>"],
    "numbering": ["1", "A", "a", "Ⅰ", "i", "I"],
}
REF_LISTS["item_space"] = REF_LISTS["space"]


def _reference_sample(layout: Layout, n_to_analyze: int, seed: int) -> set[tuple[str, ...]]:
    """main.py ``_sample_value_assignments`` (sampling branch), written out: every slot's value by
    ``random.choice`` over its list, kept when valid, a set of assignments until ``n_to_analyze``
    (here the original's own assignment is not kept, as llmgen documents)."""
    import random

    attrs = layout.relevant_attributes()
    options = [REF_LISTS[a.rsplit(".", 1)[-1]] for a in attrs]
    original = tuple(Format().settings(layout)[a] for a in attrs)
    rng, chosen = random.Random(seed), set()
    while len(chosen) < n_to_analyze:
        assignment = tuple(rng.choice(o) for o in options)
        if assignment != original and is_plausible(Format().replace(dict(zip(attrs, assignment, strict=True))), layout):
            chosen.add(assignment)
    return chosen


def test_sampling_draws_value_assignments_as_the_reference():
    for layout, n, seed in ((MC, 60, 1), (TWO, 320, 0), (MC, 321, 4)):
        formats = sample_formats(layout, n, seed=seed)
        attrs = layout.relevant_attributes()
        ours = [tuple(f.settings(layout)[a] for a in attrs) for f in formats[1:]]
        assert len(ours) == len(set(ours)) == n - 1 and formats[0] == Format()
        assert set(ours) == _reference_sample(layout, n - 1, seed)
    # " -- " is listed twice among 16 spaces: a drawn space is " -- " with P = 2/16 (not 1/15)
    from llmgen.prompts.formats import SPACES

    assert len(SPACES) == 16 and SPACES.count(" -- ") == 2 and list(SPACES) == REF_LISTS["space"]


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




def values(doc: dict) -> dict:
    """A classification document's field values (everything but its label)."""
    return {k: v for k, v in doc.items() if k != "label"}


# --- tasks and prompts -----------------------------------------------------------------------------

def test_prompt_is_instruction_demos_and_open_query():
    task = load_classification_task("comparison", n=10, seed=0)
    demo, query = task.docs[0], task.docs[1]
    text = prompt_in(task, Format(separator=" - ", space="\n"), [demo], query)
    assert text == (f"{task.instruction}\n\nFirst number - {demo['first']}\nSecond number - "
                    f"{demo['second']}\nLarger - {demo['label']}\n\nFirst number - {query['first']}\n"
                    f"Second number - {query['second']}\nLarger - ")
    assert build_prompt(Format(), ONE, "", [], {"review": "ok"}) == "Review: ok\nSentiment: "


def test_option_labels_are_remapped_per_format():
    task = load_classification_task("topic", n=20, seed=0)
    ex = task.docs[0]
    assert answers_in(task, prompt_structure(task).original) == ["A", "B", "C", "D"]
    assert answers_in(task, Format({"options.numbering": "i"})) == ["i", "ii", "iii", "iv"]
    assert gold_in(task, Format({"options.numbering": "1"}), ex) == str(ex["label"] + 1)
    fmt = prompt_structure(task).original.replace({"options.numbering": "I", "options.wrapper": "x."})
    demo_text = prompt_in(task, fmt, [ex], task.docs[1]).split("\n\n")[1]
    assert demo_text.endswith("Answer: " + ["I", "II", "III", "IV"][ex["label"]])
    opts = ex["options"]
    assert f"\nOptions: I. {opts[0]} II. {opts[1]} III. {opts[2]} IV. {opts[3]}\n" in demo_text


def test_builtin_tasks_are_deterministic_and_balanced():
    assert set(TASKS) >= {"sentiment", "parity", "comparison", "topic"}
    for name in TASKS:
        a, b = load_classification_task(name, 100, 7), load_classification_task(name, 100, 7)
        assert [(values(e), e["label"]) for e in a.docs] == [(values(e), e["label"]) for e in b.docs]
        labels = [gold_in(a, Format(), e) for e in a.docs]
        assert len(set(labels)) >= 2 and max(labels.count(x) for x in set(labels)) < 80
    assert load_classification_task("parity", 5, 1).docs != load_classification_task("parity", 5, 2).docs
    with pytest.raises(LlmgenError, match="unknown classification task 'nope'"):
        load_classification_task("nope")


def test_sni_loader_reads_definition_examples_and_instances():
    task = load_sni_task(FIXTURE)
    assert task.instruction.startswith("In this task, you are given sentences from movie reviews.")
    assert classes_of(task) == ("NEG", "POS")
    assert len(task.docs) == 13 and len(task.fewshot_docs) == 2
    assert prompt_structure(task).layout == Layout((Field("Input", "input"),), "Output")
    assert values(task.docs[0])["input"].startswith("One of the most important and exhilarating forms")
    assert prompt_in(task, Format(), task.fewshot_docs[:1], task.docs[0]).endswith(
        "Output: POS\n\nInput: " + values(task.docs[0])["input"] + "\nOutput: ")


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
    assert task.instruction == "Answer." and num_options(task) == 3
    assert [e["label"] for e in task.docs] == [1, 2, 1, 2]
    assert prompt_in(task, prompt_structure(task).original, [], task.docs[0]) == (
        "Answer.\n\nQuestion: q0\nOptions: (A) yes (B) no (C) maybe\nAnswer: ")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"input": "x", "options": ["a"], "output": "b"}) + "\n")
    with pytest.raises(LlmgenError, match="not one of the options"):
        load_jsonl_task(bad)


def test_task_validation():
    with pytest.raises(LlmgenError, match="at least 2 classes"):
        classification_task("t", "", PromptStructure(ONE), [example({"review": "x"}, "a")], ("a",))
    with pytest.raises(LlmgenError, match="is not a class"):
        classification_task("t", "", PromptStructure(ONE), [example({"review": "x"}, "c")], ("a", "b"))


# --- Super-NaturalInstructions: the reference's per-task structures on real task files -------------

SNI_DIR = Path(__file__).parents[2] / "fixtures" / "sni"
# The 53 tasks of the paper's runs (msclar/formatspread run_evals.sh, command variations 1-16).
RUN_EVALS_TASKS = """050 065 069 070 114 133 155 158 161 162 163 190 213 214 220 279 280 286 296 297 316 317 319 320
322 323 325 326 327 328 335 337 385 580 607 608 609 904 905 1186 1283 1284 1297 1347 1387 1419 1420 1421 1423
1502 1612 1678 1724""".split()


def test_structures_cover_the_53_tasks_of_the_paper_runs():
    from llmgen.tasks.classification import SNI_STRUCTURES

    assert len(RUN_EVALS_TASKS) == 53 and set(SNI_STRUCTURES) == set(RUN_EVALS_TASKS)


@pytest.mark.parametrize("path", sorted(SNI_DIR.glob("*.json")), ids=lambda p: p.stem.split("_")[0])
def test_original_format_renders_each_real_instance_exactly(path):
    """Every instance of the real file parses into the task's fields and enumerations, and the
    original format renders it back to the very text of the file; answers map onto the items."""
    task = load_sni_task(path)
    raw = json.loads(path.read_text())["Instances"]
    # task1678's last instance lists its options as a Python list: not the task's format, dropped
    # (the reference skips inputs its regex cannot read, too)
    kept = [r for r in raw if "Options: ['" not in r["input"]]
    assert task.skipped == len(raw) - len(kept) == (1 if path.name.startswith("task1678_") else 0)
    for ex, row in zip(task.docs, kept, strict=True):
        assert prompt_structure(task).original.render(prompt_structure(task).layout, values(ex), output=False) == row["input"]
        assert gold_in(task, prompt_structure(task).original, ex) == row["output"][0]
    other = sample_formats(prompt_structure(task).layout, 5, seed=1, original=prompt_structure(task).original)
    assert len({f.render(prompt_structure(task).layout, values(task.docs[0])) for f in other}) == len(other) > 1


def test_real_instances_split_into_the_reference_fields():
    """Hand-read from the files: field texts, enumeration items, option labels."""
    mathqa = load_sni_task(SNI_DIR / "task1419_mathqa_gain.json")
    ex = mathqa.docs[2]
    assert values(ex) == {"problem": "15 % of 75 is the same as vx % of 450 . find x .",
                         "enum1": ["1", "2.5", "3", "4", "5"]} and ex["label"] == 1
    story = load_sni_task(SNI_DIR / "task065_timetravel_consistent_sentence_classification.json")
    assert values(story.docs[3])["sentences"] == [
        "Tom got invited to a formal party.", "Tom went to a suit store ", " He found himself a very nice suit",
        " He drove too the party "]
    assert answers_in(story, prompt_structure(story).original) == ["Option 1", "Option 2"] and story.docs[3]["label"] == 1
    cloze = load_sni_task(SNI_DIR / "task296_storycloze_correct_end_classification.json")
    assert [len(e["sentences"]) for e in cloze.docs] == [4, 4, 4, 4]  # variable length, read as 4
    qasc = load_sni_task(SNI_DIR / "task1297_qasc_question_answering.json")
    assert len(values(qasc.docs[0])["facts"]) == 2 and len(values(qasc.docs[0])["enum1"]) == 8
    assert values(qasc.docs[0])["question"] == "hand-knit booties help prevent the transfer of heat from what?"
    roc = load_sni_task(SNI_DIR / "task213_rocstories_correct_ending_classification.json")
    assert values(roc.docs[0])["title"] == "Out of Time." and len(values(roc.docs[0])["enum0"]) == 4
    stereo = load_sni_task(SNI_DIR / "task319_stereoset_classification_profession.json")
    assert values(stereo.docs[0]) == {"target": "guitarist",
                                         "sentences": "The guitarist just walked out on stage. He had long hair and tight pants on."}


def test_a_perturbed_format_renumbers_options_answers_and_instruction():
    task = load_sni_task(SNI_DIR / "task1419_mathqa_gain.json")
    fmt = prompt_structure(task).original.replace({"enum1.numbering": "Ⅰ", "enum1.wrapper": "[x]", "enum1_block.space": "\n",
                                        "enum1.item_space": "\n"})
    assert answers_in(task, fmt) == ["Ⅰ", "Ⅱ", "Ⅲ", "Ⅳ", "Ⅴ"] and gold_in(task, fmt, task.docs[2]) == "Ⅱ"
    text = prompt_in(task, fmt, [], task.docs[2])
    assert text.startswith("In this task, you need to answer the given multiple-choice question on the gain. Gain is "
                           "the value by which to multiply the input. Classify your answers into 'Ⅰ', 'Ⅱ', 'Ⅲ', 'Ⅳ', and 'Ⅴ'.")
    assert text.endswith("Problem: 15 % of 75 is the same as vx % of 450 . find x . \nOptions: \n[Ⅰ] 1\n[Ⅱ] 2.5\n[Ⅲ] 3\n"
                         "[Ⅳ] 4\n[Ⅴ] 5 \nAnswer: ")


def test_every_structure_samples_plausible_distinct_formats():
    from llmgen.tasks.classification import SNI_STRUCTURES

    for number_, s in SNI_STRUCTURES.items():
        formats = sample_formats(s.layout, 12, seed=0, original=s.original)
        assert len(formats) == 12, number_
        assert len({f.template(s.layout) for f in formats}) == 12, number_
        assert all(is_plausible(f, s.layout) for f in formats[1:]), number_
