"""FormatSpread: scoring, the bandit on a synthetic problem, and the recipe/CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmgen.config import load_config
from llmgen.errors import LlmgenError
from llmgen.evals.format_spread import (
    atomic_perturbations,
    bandit_spread,
    beta_prior,
    exact_prefix_matching,
    exhaustive_spread,
    normalize_answer,
    prefix_match,
)
from llmgen.prompts.formats import Format, load_formats
from llmgen.prompts.render import answers_in, gold_in, prompt_structure
from llmgen.tasks.classification import load_classification_task

# a real SNI task (allenai/natural-instructions tasks/task363_sst2_polarity_classification.json, trimmed)
FIXTURE = Path(__file__).parents[2] / "fixtures" / "sni_unformatted" / "task363_sst2_polarity_classification.json"


# --- scoring ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("generation, gold, ok", [
    ("Positive.", "positive", True),
    (" positive\nReview: next", "positive", True),
    ("(B) sports", "B", True),
    ("<b>", "b", True),
    ("article about cats", "a", False),  # "a" is not the start of "article"
    ("ii) travel", "i", False),  # roman i vs ii
    ("10", "1", False),
    ("negative", "positive", False),
    ("", "positive", False),
])
def test_exact_prefix_matching(generation, gold, ok):
    assert exact_prefix_matching(generation, gold) is ok


def test_normalisation_strips_the_reference_characters():
    assert normalize_answer(" (A).\n") == "a"
    assert normalize_answer("-> Yes <") == "yes"
    assert prefix_match("Yes, because", "yes")


# --- the bandit -------------------------------------------------------------------------------------

def synthetic(num_arms: int = 80, n: int = 1000, seed: int = 0):
    """Arms with known means: arm 5 is clearly best (0.92), arm 17 clearly worst (0.08)."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(0.3, 0.7, num_arms)
    means[0], means[5], means[17] = 0.5, 0.92, 0.08
    outcomes = rng.random((num_arms, n)) < means[:, None]
    return outcomes, (lambda arm, start, stop: outcomes[arm, start:stop])


@pytest.mark.parametrize("rule", ["thompson", "ucb"])
def test_bandit_finds_true_best_and_worst_with_few_pulls(rule):
    outcomes, evaluate = synthetic()
    exhaustive = exhaustive_spread(outcomes)
    assert (exhaustive["best"], exhaustive["worst"]) == (5, 17)
    for seed in range(4):
        res = bandit_spread(evaluate, 80, 1000, budget=8000, batch=20, seed=seed, rule=rule)
        assert (res.best, res.worst) == (5, 17)
        assert res.budget_spent == 8000
        assert res.total_evaluations < 0.2 * exhaustive["evaluations"]  # budget + original + 2 re-evaluations
        assert res.counts[5] == res.counts[17] == 1000  # reported arms are re-evaluated in full
        assert res.interval == pytest.approx((outcomes[17].mean(), outcomes[5].mean()))


def test_bandit_is_seeded():
    _, evaluate = synthetic(30, 200)
    a = bandit_spread(evaluate, 30, 200, 400, 20, seed=3)
    b = bandit_spread(evaluate, 30, 200, 400, 20, seed=3)
    c = bandit_spread(evaluate, 30, 200, 400, 20, seed=4)
    assert a.history == b.history and a.history != c.history


def test_prior_is_the_reference_formula_capped_only_at_p0_one():
    # reference: b = 5, a = max(p0 / (1 - p0) * 5, 1.1); hand-computed values
    assert beta_prior(5, 10) == (5.0, 5.0)
    assert beta_prior(8, 10) == pytest.approx((20.0, 5.0))
    assert beta_prior(96, 100) == pytest.approx((120.0, 5.0))  # no cap at 0.95 (that gave a = 95)
    assert beta_prior(0, 10) == (1.1, 5.0)
    assert beta_prior(1, 10) == (1.1, 5.0)  # 5/9 < 1.1
    assert beta_prior(40, 40) == (200.0, 5.0)  # p0 = 1: the reference divides by zero; p0 -> 40/41
    with pytest.raises(LlmgenError, match="successes"):
        beta_prior(3, 2)
    perfect = np.ones((5, 40), dtype=bool)  # the original (arm 0) is perfect, arm 3 always wrong
    perfect[3, :] = False
    for seed in range(5):
        res = bandit_spread(lambda arm, s, e: perfect[arm, s:e], 5, 40, 160, 10, seed=seed)
        assert res.prior == (200.0, 5.0)
        assert res.worst == 3 and res.accuracy(res.best) == 1.0 and res.accuracy(3) == 0.0


def _replayed_extremes(outcomes: np.ndarray, history: list[dict], original: int = 0) -> tuple[int, int, int]:
    """Best at the end of phase 1, best and worst at the end of phase 2, replayed from the pulls."""
    n = outcomes.shape[1]
    succ, cnt = np.zeros(len(outcomes)), np.zeros(len(outcomes))
    succ[original], cnt[original] = outcomes[original].sum(), n

    def extreme(highest: bool) -> int:
        acc = [(succ[i] / cnt[i], -i) if highest else (-succ[i] / cnt[i], -i) for i in range(len(cnt)) if cnt[i]]
        arms = [i for i in range(len(cnt)) if cnt[i]]
        return arms[max(range(len(arms)), key=acc.__getitem__)]

    best_after_1 = None
    for h in history:
        if h["phase"] == "worst" and best_after_1 is None:
            best_after_1 = extreme(True)
        a, start = h["arm"], int(cnt[h["arm"]])
        succ[a] += outcomes[a, start:start + h["examples"]].sum()
        cnt[a] += h["examples"]
    return best_after_1, extreme(True), extreme(False)


def test_best_is_fixed_after_phase_one_and_worst_after_phase_two():
    """As the reference's main(): best_node = phase 1's final node, worst_node = phase 2's."""
    differs = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        outcomes = rng.random((6, 60)) < rng.uniform(0.2, 0.8, 6)[:, None]
        res = bandit_spread(lambda arm, s, e, o=outcomes: o[arm, s:e], 6, 60, budget=80, batch=10, seed=seed)
        best1, best2, worst2 = _replayed_extremes(outcomes, res.history)
        assert (res.best, res.worst) == (best1, worst2)
        differs += best1 != best2
    assert differs  # the phase-2 pulls do move the empirical maximum in some runs: the rule is tested


def test_bandit_stops_when_every_arm_is_exhausted():
    outcomes = np.zeros((3, 20), dtype=bool)
    res = bandit_spread(lambda arm, s, e: outcomes[arm, s:e], 3, 20, budget=400, batch=10)
    assert res.budget_spent == 40 and res.counts == [20, 20, 20]


@pytest.mark.parametrize("budget, batch, n, match", [
    (10, 20, 100, "too small"),
    (50, 20, 100, "not divisible"),
    (60, 20, 100, "even number"),
    (40, 20, 10, "larger than the 10 evaluation examples"),
])
def test_impossible_budgets_are_clear_errors(budget, batch, n, match):
    with pytest.raises(LlmgenError, match=match):
        bandit_spread(lambda a, s, e: [True] * (e - s), 4, n, budget, batch)


def test_atomic_perturbations_pair_single_changes():
    fmts = [Format(), Format(casing="upper"), Format(casing="upper", space=" || "), Format(space=" || ")]
    res = atomic_perturbations(fmts, [0.5, 0.7, 0.2, float("nan")], ["separator", "space", "casing"])
    assert [(p["attribute"], p["formats"], round(p["delta"], 3)) for p in res["pairs"]] == [
        ("casing", [0, 1], 0.2), ("space", [1, 2], -0.5)]
    assert res["by_attribute"]["space"]["max_abs_delta"] == pytest.approx(0.5)


# --- the recipe, end to end on a tiny model ----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_hf(tiny_model_dir):
    from llmgen.backends import get_backend

    backend = get_backend("hf", tiny_model_dir)
    yield backend
    backend.close()


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_recipe_exhaustive_run_writes_consistent_outputs(tiny_hf, tmp_path):
    from llmgen.recipes.format_spread import FormatSpreadConfig, run

    cfg = load_config(FormatSpreadConfig, None, {
        "model": "unused", "task": "comparison", "num_formats": 4, "shots": 1, "eval.limit": 6, "num_generated": 20,
        "mode": "exhaustive", "output_dir": str(tmp_path / "run"), "formats_file": str(tmp_path / "shared_formats.json")})
    res = run(cfg, backend=tiny_hf)
    out = tmp_path / "run"
    for name in ("config.json", "formats_comparison.json", "results.json", "samples.jsonl", "format_samples.jsonl",
                 "accuracy_histogram.png"):
        assert (out / name).is_file(), name
    entry = res["format_spread"]["comparison"]
    rows = _rows(out / "format_samples.jsonl")
    assert len(rows) == 4 * 6 == entry["evaluations"] == entry["exhaustive_evaluations"]
    assert len(_rows(out / "samples.jsonl")) == 6 and res["results"]["comparison"] == entry["formats"][0]["metrics"]
    for f in entry["formats"]:
        mine = [r for r in rows if r["format_id"] == f["format_id"]]
        assert f["pulls"]["correct"] == sum(r["correct"][0] for r in mine) and f["pulls"]["examples"] == 6
        assert f["metrics"]["acc"] == pytest.approx(sum(r["metrics"]["acc"] for r in mine) / 6)
        assert all(r["responses"][0] in ("first", "second") for r in mine)
        assert all(r["prompt"].endswith("\nLarger:") for r in mine) or f["format_id"] != 0
    accs = [f["metrics"]["acc"] for f in entry["formats"]]
    assert entry["spread"] == pytest.approx(max(accs) - min(accs))
    layout = prompt_structure(load_classification_task("comparison", 20)).layout
    formats = load_formats(out / "formats_comparison.json")
    assert entry["extremes"]["best"]["format"] == formats[entry["best"]].template(layout)
    assert json.loads((out / "results.json").read_text())["format_spread"]["comparison"]["spread"] == entry["spread"]
    # the shared set is reused, so a second model is evaluated on the same formats
    assert load_formats(tmp_path / "shared_formats.json") == formats


def test_recipe_bandit_on_multiple_choice_with_generation(tiny_hf, tmp_path):
    from llmgen.recipes.format_spread import FormatSpreadConfig, run

    cfg = load_config(FormatSpreadConfig, None, {
        "task": "topic", "num_formats": 5, "shots": 1, "eval.limit": 8, "num_generated": 20, "mode": "thompson",
        "budget": 16, "batch": 4, "metric": "exact_prefix_matching", "eval.max_new_tokens": 3,
        "output_dir": str(tmp_path / "run")})
    entry = run(cfg, backend=tiny_hf)["format_spread"]["topic"]
    pulls = {f["format_id"]: f["pulls"]["examples"] for f in entry["formats"]}
    assert entry["budget_spent"] == 16 and pulls[0] == 8
    assert pulls[entry["best"]] == 8 == pulls[entry["worst"]]
    assert entry["evaluations"] <= 8 + 16 + 2 * 8
    rows = _rows(tmp_path / "run" / "format_samples.jsonl")
    assert len(rows) == entry["evaluations"]
    formats = load_formats(tmp_path / "run" / "formats_topic.json")
    task = load_classification_task("topic", 20)
    for r in rows:  # gold labels follow each format's numbering
        assert r["target"] in answers_in(task, formats[r["format_id"]])


def test_recipe_on_sni_file_with_task_demonstrations(tiny_hf, tmp_path):
    from llmgen.recipes.format_spread import FormatSpreadConfig, run

    cfg = load_config(FormatSpreadConfig, None, {"task": str(FIXTURE), "num_formats": 3, "shots": 2,
                                                 "demos_from": "task", "eval.limit": None, "mode": "exhaustive",
                                                 "output_dir": str(tmp_path / "run")})
    entry = run(cfg, backend=tiny_hf)["format_spread"]["task363_sst2_polarity_classification"]
    assert entry["task"]["num_examples"] == 13 and entry["task"]["classes"] == ["NEG", "POS"]
    # the task's two positive examples are the demonstrations
    assert ("Output: POS\n\nInput: Here 's yet another studio horror franchise mucking up its storyline with "
            "glitches casual fans could correct in their sleep .\nOutput: NEG\n\nInput: ") in (
        entry["extremes"]["original"]["example_prompt"])


@pytest.mark.parametrize("changes, match", [
    ({"budget": 30, "batch": 20}, "too small"),
    ({"budget": 50, "batch": 10}, "not divisible|even number"),
    ({"num_generated": 8, "shots": 3}, "fewer than the demonstration pool"),
    ({"task": "nope"}, "unknown classification task"),
    ({"mode": "greedy"}, "unknown mode"),
    ({"num_formats": 1}, "num_formats must be >= 2"),
])
def test_recipe_bad_inputs_fail_before_writing(changes, match, tmp_path):
    from llmgen.recipes.format_spread import FormatSpreadConfig, run

    cfg = load_config(FormatSpreadConfig, None, {"task": "parity", "eval.limit": 40,
                                                 "output_dir": str(tmp_path / "run"), **changes})
    with pytest.raises(LlmgenError, match=match):
        run(cfg)
    assert not (tmp_path / "run").exists()


def test_cli_runs_and_reports_errors(tiny_model_dir, tmp_path, capsys):
    from llmgen.cli.main import main

    main(["format-spread", "--model", tiny_model_dir, "--task", "parity", "--num-formats", "3", "--limit", "4",
          "--num-generated", "16", "--mode", "exhaustive", "--output-dir", str(tmp_path / "cli")])
    printed = capsys.readouterr().out
    assert "spread:" in printed and (tmp_path / "cli" / "results.json").is_file()
    # the same run from the committed tiny config: the same config.json, the same accuracies
    from llmgen.config import recipe_config

    main(["format-spread", "--config", str(recipe_config("format_spread", "tiny")), f"model={tiny_model_dir}",
          f"output_dir={tmp_path / 'from_config'}"])
    flags, config = (json.loads((tmp_path / d / "config.json").read_text()) for d in ("cli", "from_config"))
    assert {**flags, "output_dir": None} == {**config, "output_dir": None}
    again = capsys.readouterr().out
    assert again.split("→")[0] == printed.split("→")[0]  # every figure up to the run folder's path
    with pytest.raises(SystemExit) as exc:
        main(["format-spread", "--model", tiny_model_dir, "--budget", "30", "--batch", "20",
              "--output-dir", str(tmp_path / "bad")])
    assert exc.value.code == 2
    assert "error: budget 30 is too small" in capsys.readouterr().err


@pytest.mark.slow
def test_embedded_model_reads_the_original_format(hf_default):
    """Through the real backend: the easy sentiment task is solved in the plain format, so prompt
    assembly, answer sets and gold labels line up; a garbled format is scored on the same examples."""
    from llmgen.cache import RequestCache
    from llmgen.prompts.format_eval import FormatEvaluator, Scorer
    from llmgen.recipes.format_spread import split_examples, task_requests

    task = load_classification_task("sentiment", 40, 0)
    demos, examples = split_examples(task, 1, 8, 0)
    bad = Format(separator="- ", space=". ", casing="upper")
    ev = FormatEvaluator(task_requests(task, [Format(), bad], demos, examples, "probability_ranking"),
                         Scorer(hf_default, RequestCache(None), task.name))
    good, garbled = ev.evaluate([(0, 0, 8), (1, 0, 8)])
    assert sum(good) >= 7
    assert len(garbled) == 8 and {r["target"] for r in ev.rows} <= {"positive", "negative"}


def test_eval_formats_and_recipe_score_the_same_strings(tiny_hf, tiny_model_dir, tmp_path):
    """One rendering + scoring path: `llmgen eval --tasks sentiment --formats 3` and `llmgen format-spread
    --task sentiment` send the very same (context, continuation) pairs, and the original format's pair
    is plain `llmgen eval`'s ("...Sentiment:", " negative")."""
    from llmgen.evaluate import EvalConfig, run_eval
    from llmgen.prompts.format_eval import run_format_eval
    from llmgen.recipes.format_spread import FormatSpreadConfig, run

    cfg = EvalConfig(model=tiny_model_dir, tasks=["sentiment"], limit=4, num_fewshot=1, cache=None,
                     output_dir=str(tmp_path / "eval"))
    run_format_eval(cfg, 3, backend=tiny_hf, show_progress=False)
    run(load_config(FormatSpreadConfig, None, {"task": "sentiment", "num_formats": 3, "shots": 1, "eval.limit": 4,
                                                "mode": "exhaustive", "ranking_classes": "all",
                                                "output_dir": str(tmp_path / "recipe")}),
        backend=tiny_hf)

    def pairs(run_dir: Path) -> list[tuple[int, int, str, tuple[str, ...]]]:
        return [(r["format_id"], r["doc_id"], r["prompt"], tuple(r["continuations"]))
                for r in _rows(run_dir / "format_samples.jsonl")]

    from_eval, from_recipe = pairs(tmp_path / "eval"), pairs(tmp_path / "recipe")
    assert len(from_eval) == 3 * 4 and from_eval == from_recipe
    assert all(p[2].endswith("Sentiment:") and p[3] == (" negative", " positive") for p in from_eval if p[0] == 0)
    assert len({p[2] for p in from_eval if p[1] == 0}) == 3  # three formats, three prompts
    for _, _, ctx, conts in from_eval:  # context + continuation = prompt + answer; no trailing space
        assert ctx == ctx.rstrip() and all(c.strip() in ("negative", "positive") for c in conts)
    cfg.output_dir = str(tmp_path / "plain")
    plain = run_eval(cfg, backend=tiny_hf, show_progress=False)
    assert [r["prompt"] for r in plain["samples"]] == [p[2] for p in from_eval if p[0] == 0]
    original = json.loads((tmp_path / "recipe" / "results.json").read_text())
    assert set(original) >= {"results", "uncertainty", "n_samples", "format_spread"}  # llmgen eval's schema
    assert original["results"]["sentiment"]["acc"] == plain["results"]["sentiment"]["acc"]


def test_probability_ranking_ranks_among_the_batchs_gold_labels(tiny_hf):
    """utils.py ``solve_with_rank_based_scoring``: the candidates of one evaluation call are
    ``sorted(set(gold of its examples))``; a class no example of the pull has is not ranked. The
    prediction is the argmax over those candidates of the all-classes log-likelihoods."""
    from llmgen.cache import RequestCache
    from llmgen.prompts.format_eval import FormatEvaluator, Scorer
    from llmgen.recipes.format_spread import BatchClassEvaluator, split_examples, task_requests

    task = load_classification_task("topic", 40, 0)
    demos, examples = split_examples(task, 1, 12, 0)
    formats = [Format(), Format(space=" || ", casing="upper")]
    request = task_requests(task, formats, demos, examples, "probability_ranking")
    scorer = Scorer(tiny_hf, RequestCache(None), task.name)
    pulls = [(0, 0, 3), (1, 3, 6), (0, 6, 12), (1, 0, 12)]
    batch, every = BatchClassEvaluator(request, scorer, task, formats, examples), FormatEvaluator(request, scorer)
    outcomes, _ = batch.evaluate(pulls), every.evaluate(pulls)
    narrower = 0
    for (arm, start, stop), got in zip(pulls, outcomes, strict=True):
        golds = [gold_in(task, formats[arm], ex) for ex in examples[start:stop]]
        candidates = sorted(set(golds))  # the reference's output_classes
        narrower += len(candidates) < len(answers_in(task, formats[arm]))
        at = sum(b - a for _, a, b in pulls[: pulls.index((arm, start, stop))])
        rows, full = batch.rows[at:at + stop - start], every.rows[at:at + stop - start]
        for r, f, gold, ok in zip(rows, full, golds, got, strict=True):
            assert [c.strip() for c in r["continuations"]] == candidates
            lp = dict(zip([c.strip() for c in f["continuations"]], f["choice_logprobs"], strict=True))
            pick = max(candidates, key=lambda c: (lp[c], -candidates.index(c)))  # first maximum, sorted order
            assert r["responses"] == [pick] and ok == (pick == gold)
    assert narrower >= 2  # the test really exercises batches that miss a class
    # the recipe's default, and the all-classes option
    from llmgen.recipes.format_spread import FormatSpreadConfig

    assert FormatSpreadConfig().ranking_classes == "batch"
    cfg = load_config(FormatSpreadConfig, None, {"ranking_classes": "every"})
    with pytest.raises(LlmgenError, match="ranking_classes must be one of batch, all"):
        from llmgen.recipes.format_spread import run

        run(cfg)
