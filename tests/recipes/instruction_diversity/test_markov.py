"""Markov string-rewriting generator: rule semantics, generator controls, bad input."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from llmgen.errors import LlmgenError
from llmgen.recipes.instruction_diversity.markov import (
    Domain,
    MarkovConfig,
    Rule,
    apply_rule,
    domain_string,
    generate,
    instruction_counts,
    parse_domain,
    power_law_probs,
    satisfies,
)


def small(**kw) -> MarkovConfig:
    base = dict(alphabet="abcd", input_length=(12, 16), pattern_length=(2, 4), num_instructions=30, budget=300,
                test_instructions=20, test_examples_per_instruction=4, seed=3)
    base.update(kw)
    return MarkovConfig(**base)


# --- semantics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern,replacement,s,expected", [
    ("ab", "X", "cabab", "cXab"),          # only the leftmost occurrence
    ("ab", "", "abab", "ab"),              # deletion
    ("aa", "b", "aaaa", "baa"),            # overlapping occurrences: leftmost wins
    ("abc", "zz", "xxabcabc", "xxzzabc"),
    ("ba", "q", "aaaa", "aaaa"),           # absent: no-op
    ("aaaaa", "b", "aaaa", "aaaa"),        # longer than input: no-op
    ("d", "ddd", "d", "ddd"),              # replacement may contain the pattern; applied once
])
def test_leftmost_rewrite_and_noop(pattern, replacement, s, expected):
    assert apply_rule(pattern, replacement, s) == expected


def test_conditional_rule_rewrites_leftmost_occurrence_after_context():
    r = Rule("ab", "X", context="c")
    assert r.apply("abcab") == "abcX"      # the first "ab" is not after "c"
    assert r.apply("ababab") == "ababab"   # pattern present, context never: no-op
    assert r.text() == "ab -> X after c"


def test_rule_with_empty_pattern_is_an_error():
    with pytest.raises(LlmgenError, match="non-empty pattern"):
        Rule("", "x").apply("abc")


# --- generator -----------------------------------------------------------------------------------


def test_generated_examples_are_correct_and_well_formed():
    data = generate(small(noop_fraction=0.3, conditional_fraction=0.5))
    for row in data.train + data.test:
        rule_text = row["rule"]
        assert row["prompt"] == f"rule: {rule_text} | input: {row['input']}\noutput:"
        assert row["answer"] == " " + row["output"]
        assert row["noop"] == (row["output"] == row["input"])
        assert 12 <= len(row["input"]) <= 16
    # the expected output from the rule's text alone, by an independent scan (not Rule.apply)
    for row in data.train + data.test:
        assert _rewrite_by_hand(row["rule"], row["input"]) == row["output"]
    assert {row["noop"] for row in data.train} == {True, False}


def _rewrite_by_hand(rule_text: str, s: str) -> str:
    """Parse "x -> y [after c]" and rewrite the leftmost x that directly follows c (any x if no c)."""
    body, _, context = rule_text.partition(" after ")
    x, _, y = body.partition(" -> ")
    for i in range(len(s) - len(x) + 1):
        if s[i:i + len(x)] == x and s[max(0, i - len(context)):i] == context and i >= len(context):
            return s[:i] + y + s[i + len(x):]
    return s


def test_counts_budget_and_noop_share():
    cfg = small(num_instructions=7, budget=100, noop_fraction=0.25, test_noop_fraction=0.5)
    data = generate(cfg)
    assert len(data.train) == 100 and sum(data.counts) == 100
    per_rule = Counter(r["rule"] for r in data.train)
    assert sorted(per_rule.values()) == [14, 14, 14, 14, 14, 15, 15]
    assert sum(r["noop"] for r in data.train) == 25
    assert sum(r["noop"] for r in data.test) == len(data.test) // 2
    assert len(data.test) == 20 * 4 and len({r["rule"] for r in data.test}) == 20


def test_train_and_test_rules_never_overlap_and_test_set_is_fixed_across_sweep():
    a = generate(small(num_instructions=10, budget=100))
    b = generate(small(num_instructions=200, budget=2000, noop_fraction=0.4, power_law_alpha=0.5))
    for data in (a, b):
        assert not {r.key for r in data.train_rules} & {r.key for r in data.test_rules}
        assert not {r["rule"] for r in data.train} & {r["rule"] for r in data.test}
        assert len({r.key for r in data.train_rules}) == len(data.train_rules)
    assert a.test == b.test                              # the same unseen test set for every cell
    assert a.train_rules == b.train_rules[:10]          # more instructions = a superset


def test_deterministic_by_seed():
    assert generate(small()).train == generate(small()).train
    assert generate(small()).train != generate(small(seed=4)).train


def test_power_law_frequencies():
    probs = power_law_probs(4, 0.5)
    assert probs == pytest.approx([0.5, 2 ** -0.5 - 0.5, 0.75 ** 0.5 - 2 ** -0.5, 1 - 0.75 ** 0.5])
    assert sum(probs) == pytest.approx(1.0)
    assert power_law_probs(5, 1.0) == pytest.approx([0.2] * 5)
    counts = instruction_counts(10, 1000, 0.3)
    assert sum(counts) == 1000 and counts == sorted(counts, reverse=True) and counts[0] > 4 * counts[-1]
    data = generate(small(num_instructions=10, budget=1000, power_law_alpha=0.3))
    per_rule = Counter(r["rule"] for r in data.train)
    assert [per_rule[r.text()] for r in data.train_rules] == counts


@pytest.mark.parametrize("spec,check", [
    ("repeated:3", lambda s: all(s[i] == s[i - i % 3] for i in range(len(s)))),
    ("periodic:3", lambda s: s == (s[: -(-len(s) // 3)] * 4)[: len(s)]),
    ("mirrored:3", lambda s: s == (lambda u: (u + u[::-1] + u)[: len(s)])(s[: -(-len(s) // 3)])),
    ("mirrored:2", lambda s: s == (lambda u: (u + u[::-1])[: len(s)])(s[: -(-len(s) // 2)])),
])
def test_domains_constrain_patterns_and_replacements(spec, check):
    d = parse_domain(spec)
    rng = random.Random(0)
    for n in range(1, 12):
        s = domain_string(d, n, "abcdef", rng)
        assert len(s) == n and check(s) and satisfies(d, s)
    data = generate(small(domains=[spec], alphabet="abcdef", pattern_length=(3, 6), budget=200, num_instructions=20))
    for r in data.train_rules + data.test_rules:
        assert satisfies(d, r.pattern) and satisfies(d, r.replacement)
        assert r.domain == d.label


def test_domain_mixture_and_test_domains():
    cfg = small(domains=["repeated:2", "periodic:2:3"], test_domains=["free"], num_instructions=400, budget=400,
                alphabet="abcdef", pattern_length=(4, 6))
    data = generate(cfg)
    shares = Counter(r.domain for r in data.train_rules)
    assert set(shares) == {"repeated-k2", "periodic-k2"} and shares["periodic-k2"] > 2 * shares["repeated-k2"]
    assert {r.domain for r in data.test_rules} == {"free"}
    assert satisfies(Domain("periodic", 2), "abcabc") and not satisfies(Domain("periodic", 2), "abcabd")
    # the paper's examples (Section 2.3.4): abccbaabc is "abc" mirrored 3 times
    assert satisfies(Domain("mirrored", 3), "abccbaabc") and not satisfies(Domain("mirrored", 3), "abcabcabc")
    assert satisfies(Domain("repeated", 3), "aaabbbccc") and satisfies(Domain("mirrored", 1), "abcdef")


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kw,message", [
    (dict(pattern_length=(5, 20), input_length=(12, 16)), "pattern longer than input"),
    (dict(num_instructions=50, budget=10), "budget 10 is smaller than the number of instructions 50"),
    (dict(alphabet="a"), "alphabet"),
    (dict(alphabet="ab c"), "alphabet"),
    (dict(noop_fraction=1.5), "noop_fraction"),
    (dict(power_law_alpha=0.0), "power_law_alpha"),
    (dict(domains=["zigzag"]), "unknown domain 'zigzag'"),
    (dict(domains=["periodic:x"]), "bad domain spec"),
    (dict(input_length=(9, 3)), "input_length"),
])
def test_bad_input_is_a_clear_error(kw, message):
    with pytest.raises(LlmgenError, match=message):
        generate(small(**kw))


def test_too_few_possible_rules_is_a_clear_error():
    with pytest.raises(LlmgenError, match="cannot draw"):
        generate(small(alphabet="ab", pattern_length=(1, 1), num_instructions=5, budget=10))


def test_compact_prompt_style_has_the_same_answers():
    verbose = generate(small(conditional_fraction=0.5))
    compact = generate(small(conditional_fraction=0.5, prompt_style="compact"))
    assert [r["answer"] for r in verbose.train] == [r["answer"] for r in compact.train]
    row = compact.train[0]
    assert row["prompt"].endswith(f"|{row['input']}=") and " -> " not in row["prompt"]
    with pytest.raises(LlmgenError, match="unknown prompt style"):
        generate(small(prompt_style="fancy"))


def test_constrained_domain_needs_a_strength():
    with pytest.raises(LlmgenError, match="needs a strength"):
        parse_domain("mirrored")
    with pytest.raises(LlmgenError, match="k >= 1"):
        parse_domain("mirrored:0")
    assert parse_domain("free") == Domain("free", 1, 1.0)
    assert parse_domain("periodic:3:0.5") == Domain("periodic", 3, 0.5)
