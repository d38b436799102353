"""Stop strings follow the prompt format (``format_stops``; ``llmgen eval --formats K`` on generation tasks).

A generation task stops where the model starts the next example, spelled as its own format spells
it (lm-eval's gsm8k: ``until: ["Question:", "</s>", "<|im_end|>"]``). In a format that writes
``QUESTION::`` the model starts its made-up next question that way: without that spelling among the
stops every response of such a format ran to the token limit and flexible-extract read a number of a
question the model invented (docs/benchmarks.md, "Format spread on lm-eval catalogue tasks"). Each
format keeps the original stops and gets its own spelling of each descriptor stop; format 0 keeps
lm-eval's ``until`` byte for byte. Checked on lm-eval's own gsm8k.yaml and llmgen's catalogue gsm8k
on the real GSM8K rows of tests/fixtures/hub/openai/gsm8k.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmgen.backends.base import truncate_at_stop
from llmgen.evaluate import EvalConfig
from llmgen.prompts.format_eval import format_samplings
from llmgen.prompts.formats import Field, Format, Header, Layout, format_stops, sample_formats
from llmgen.prompts.render import prompt_in, prompt_structure

ROOT = Path(__file__).resolve().parents[3]
HUB = ROOT / "tests" / "fixtures" / "hub"
QA = Layout(fields=(Field("Question", "question"),), output="Answer")
UNTIL = ("Question:", "</s>", "<|im_end|>")  # lm-eval's gsm8k.yaml


def test_descriptor_stops_get_the_formats_spelling():
    upper = Format(separator="::", casing="upper")
    assert format_stops(UNTIL, QA, Format(), upper) == (*UNTIL, "QUESTION::")
    # leading whitespace (the blank line before the next example) is kept; the separator's own
    # trailing whitespace only where the stop spells it; a descriptor alone stays alone
    stops = ("\n\nQuestion:", "Question: ", "Question", "\n\n")
    assert format_stops(stops, QA, Format(), Format(separator=" - ", casing="lower")) == (
        *stops, "\n\nquestion -", "question - ", "question")
    # a separator without visible characters: the descriptor at a line start (the word alone would
    # cut "the question is"); a stop that was the descriptor alone stays alone
    assert format_stops(("Question:", "\n\nQuestion:", "Question"), QA, Format(), Format(separator=" \n\t")) == (
        "Question:", "\n\nQuestion:", "Question", "\nQuestion", "\n\nQuestion")
    assert truncate_at_stop("The question is 9 * 2 = 18.\nquestion\tJim", ("\nquestion",))[0] == "The question is 9 * 2 = 18."
    # the output's and a header's descriptors too; fixed text and other words are not descriptors
    layout = Layout(fields=(Header("Context"), Field("Q", "q")), output="A")
    assert format_stops(("Q:", "A:", "Context:", "Questions:", "Q.", "</s>"), layout, Format(),
                        Format(separator=" || ", casing="upper")) == (
        "Q:", "A:", "Context:", "Questions:", "Q.", "</s>", "Q ||", "A ||", "CONTEXT ||")
    # the original format is read as written: a task whose own spelling is "PROBLEM - "
    original = Format(separator=" - ", casing="upper")
    layout = Layout(fields=(Field("Problem", "problem"),), output="Solution")
    assert format_stops(["\n\nPROBLEM -"], layout, original, Format()) == ("\n\nPROBLEM -", "\n\nProblem:")
    assert format_stops(["\n\nProblem:"], layout, original, Format()) == ("\n\nProblem:",)  # not its spelling


def test_the_original_format_keeps_the_stops_byte_for_byte():
    for stops in (UNTIL, ("Question:", "Question:", "\n\n"), ("Question:", "QUESTION::"), ()):
        assert format_stops(stops, QA, Format(), Format()) == tuple(stops)
    # the upper-case format's spelling already among the stops is not added twice
    assert format_stops(("Question:", "QUESTION::"), QA, Format(), Format(separator="::", casing="upper")) == (
        "Question:", "QUESTION::")


@pytest.fixture
def gsm8k_rows(tmp_path, monkeypatch):
    """A working folder where ``openai/gsm8k`` is the local copy of the real rows (hub layout), for
    lm-eval's own gsm8k.yaml (datasets reads a local folder before the hub) and llmgen's catalogue."""
    pytest.importorskip("lm_eval")
    work = tmp_path / "work"
    work.mkdir()
    (work / "openai").symlink_to(HUB / "openai")
    for k, v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf"),
                 "TOKENIZERS_PARALLELISM": "false", "LLMGEN_DATA_DIR": str(HUB)}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(work)
    return work


def test_lmeval_gsm8k_stops_where_each_format_starts_its_next_question(gsm8k_rows, tiny_hf, tiny_model_dir):
    from lm_eval.models.utils import handle_stop_sequences

    from llmgen.tasks.lmeval import format_task, load_lmeval_task

    cfg = EvalConfig(model=tiny_model_dir, tasks=["lmeval:gsm8k"], cache=None)  # the 4 test rows
    native, original = format_task(load_lmeval_task("lmeval:gsm8k"), cfg)
    leaf = native.leaf
    leaf.build_all_requests(rank=0, world_size=1)  # lm-eval's own requests: (context, gen_kwargs)
    until = {inst.doc_id: inst.arguments[1]["until"] for inst in leaf.instances}
    assert set(until) == set(range(len(native.docs))) == set(range(4)) and all(u == list(UNTIL) for u in until.values())
    upper = original.replace({"separator": "::", "casing": "upper"})
    formats = [*sample_formats(prompt_structure(native).layout, 6, seed=0, original=original), upper]
    samplings = format_samplings(tiny_hf, native, cfg, formats)
    # format 0: lm-eval's until with the EOS text HFLM adds (handle_stop_sequences), byte for byte
    eos = tiny_hf.tokenizer.decode(tiny_hf.tokenizer.eos_token_id, skip_special_tokens=False)
    assert samplings[0].stop == tuple(handle_stop_sequences(until[0], eos=eos))
    assert samplings[0] == native.generation_sampling(tiny_hf)
    assert samplings[-1].stop == (*samplings[0].stop, "QUESTION::")
    k = native.num_fewshot
    for fmt, s in zip(formats, samplings, strict=True):
        assert s.stop[:len(samplings[0].stop)] == samplings[0].stop and s.max_tokens == 256
        spelled = fmt.case("Question") + fmt.separator.rstrip()
        spelled = spelled if fmt.separator.strip() else "\n" + spelled  # a whitespace separator: at a line start
        assert {x for x in s.stop if x != eos} - set(UNTIL) <= {spelled}
        text = prompt_in(native, fmt, native.demonstrations(native.docs[0], k, 0), native.docs[0])
        assert spelled in s.stop and ("\n" + text).count(spelled) == k + 1, (fmt, text[:200])  # each example's start
        # a made-up next question in this format's spelling is cut where it starts
        made_up = " She makes 9 * 2 = $18.\n#### 18\n\n" + text.split(native.prompt.fewshot_delimiter)[1]
        assert truncate_at_stop(made_up, s.stop)[0].rstrip() == " She makes 9 * 2 = $18.\n#### 18", fmt


def test_llmgen_catalogue_gsm8k_stops_follow_the_format(gsm8k_rows, tiny_hf, tiny_model_dir):
    from llmgen.tasks import get_task

    task = get_task("gsm8k")  # fields Question -> Answer, stop ["\n\n", "Question:"]
    cfg = EvalConfig(model=tiny_model_dir, tasks=["gsm8k"], cache=None, limit=2)
    formats = [Format(), Format(separator=" - ", casing="lower")]
    samplings = format_samplings(tiny_hf, task, cfg, formats)
    assert samplings[0].stop == task.stop == ("\n\n", "Question:")
    assert samplings[1].stop == ("\n\n", "Question:", "question -")
