"""Markov-algorithm string rewriting: the controlled task of Only-IF (Zhang, Wang, Charton 2024).

An instruction is a rule ``x -> y``: replace the *leftmost* occurrence of ``x`` in the input by
``y``; when ``x`` does not occur the input comes back unchanged (a "no-op"). The conditional
variant ``x -> y after c`` rewrites the leftmost occurrence of ``x`` that directly follows ``c``.

The paper's question is whether a model generalises to rules it never saw, and how that depends
on the *number of distinct instructions* at a fixed budget (instructions x examples). So the
generator keeps the test set fixed across a sweep: test rules and test examples come from their
own seeded random streams, and training rules are drawn from another stream that rejects every
test rule. Training rules for ``n`` instructions are a prefix of those for ``n' > n``.

Semantic domains constrain the rules' strings (pattern and replacement) with a strength ``k``
(``k`` = 1 means unconstrained; larger is stronger), as the paper defines them (Section 2.3.4):

- ``repeated``: runs of ``k`` equal characters (``aaabbbccc`` for k = 3);
- ``periodic``: a unit of length ``ceil(len / k)`` repeated k times (``abcabc`` for k = 2);
- ``mirrored``: a unit of length ``ceil(len / k)`` mirrored k times, unit and reversed unit in
  turn (``abccbaabc`` for k = 3).

Power-law instruction frequencies: instruction ``i`` of ``n`` (1-based) receives the probability
mass of ``[(i-1)/n, i/n]`` under the density ``f(x) = a x^(a-1)`` on ``[0, 1]``, i.e.
``(i/n)^a - ((i-1)/n)^a``. ``a = 1`` is uniform; smaller ``a`` concentrates the budget on the
first few instructions.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from llmgen.errors import LlmgenError

DOMAINS = ("free", "repeated", "periodic", "mirrored")
# "verbose" is the readable default; "compact" spends ~3x fewer tokens on the frame, which is what
# makes CPU-sized experiments affordable (the answer is the same either way).
PROMPT_STYLES = {
    "verbose": ("rule: {rule} | input: {input}\noutput:", " -> ", " after "),
    "compact": ("{rule}|{input}=", ">", "@"),
}
RESERVED_CHARS = " |>-@=:\n"


# --- rules ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """``pattern -> replacement`` (optionally only ``after`` a context string)."""

    pattern: str
    replacement: str
    context: str = ""
    domain: str = "free"

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity of the instruction (the domain label is not part of it)."""
        return (self.pattern, self.replacement, self.context)

    def text(self, style: str = "verbose") -> str:
        _, arrow, after = PROMPT_STYLES[style]
        base = f"{self.pattern}{arrow}{self.replacement}"
        return f"{base}{after}{self.context}" if self.context else base

    def find(self, s: str) -> int:
        """Index of the occurrence the rule rewrites, or -1 when it is a no-op on ``s``."""
        if not self.pattern:
            raise LlmgenError("a rule needs a non-empty pattern")
        if not self.context:
            return s.find(self.pattern)
        i = s.find(self.context + self.pattern)
        return -1 if i < 0 else i + len(self.context)

    def apply(self, s: str) -> str:
        """Rewrite the leftmost (qualifying) occurrence of the pattern; unchanged if none."""
        i = self.find(s)
        if i < 0:
            return s
        return s[:i] + self.replacement + s[i + len(self.pattern):]


def apply_rule(pattern: str, replacement: str, s: str, context: str = "") -> str:
    """Functional form of :meth:`Rule.apply`."""
    return Rule(pattern, replacement, context).apply(s)


def format_prompt(rule: Rule, s: str, style: str = "verbose") -> str:
    """The model's prompt; the answer follows as ``" " + output``."""
    if style not in PROMPT_STYLES:
        raise LlmgenError(f"unknown prompt style {style!r} (known: {', '.join(PROMPT_STYLES)})")
    return PROMPT_STYLES[style][0].format(rule=rule.text(style), input=s)


# --- domains -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Domain:
    """A rule family: ``name`` in DOMAINS, strength ``k``, and its share of the instructions."""

    name: str = "free"
    k: int = 1
    weight: float = 1.0

    def validate(self) -> None:
        if self.name not in DOMAINS:
            raise LlmgenError(f"unknown domain {self.name!r} (known: {', '.join(DOMAINS)})")
        if self.k < 1:
            raise LlmgenError(f"domain {self.name!r} needs strength k >= 1, got {self.k}")
        if not self.weight > 0:
            raise LlmgenError(f"domain {self.name!r} needs a positive weight, got {self.weight}")

    @property
    def label(self) -> str:
        return self.name if self.name == "free" else f"{self.name}-k{self.k}"


def parse_domain(spec: str | Domain | dict) -> Domain:
    """``"periodic:3"`` / ``"periodic:3:0.5"`` (name:k:weight), a dict, or a Domain."""
    if isinstance(spec, Domain):
        d = spec
    elif isinstance(spec, dict):
        d = Domain(**spec)
    else:
        parts = str(spec).split(":")
        if parts[0] != "free" and parts[0] in DOMAINS and len(parts) < 2:
            raise LlmgenError(f"domain {parts[0]!r} needs a strength, e.g. {parts[0]}:3")
        try:
            d = Domain(parts[0], int(parts[1]) if len(parts) > 1 else 1, float(parts[2]) if len(parts) > 2 else 1.0)
        except (ValueError, IndexError):
            raise LlmgenError(f"bad domain spec {spec!r} (use free, name:k or name:k:weight)") from None
    d.validate()
    return d


def domain_string(domain: Domain, length: int, alphabet: str, rng: random.Random) -> str:
    """A random string of ``length`` characters satisfying the domain's constraint."""
    k = domain.k
    if domain.name == "repeated":
        chars = [rng.choice(alphabet) for _ in range(math.ceil(length / k))]
        return "".join(c * k for c in chars)[:length]
    if domain.name in ("periodic", "mirrored"):
        unit = "".join(rng.choice(alphabet) for _ in range(max(1, math.ceil(length / k))))
        turn = unit[::-1] if domain.name == "mirrored" else unit
        return "".join(unit if i % 2 == 0 else turn for i in range(k + 1))[:length]
    return "".join(rng.choice(alphabet) for _ in range(length))


def satisfies(domain: Domain, s: str) -> bool:
    """Whether ``s`` obeys the domain's constraint (used by tests and data checks)."""
    k, n = domain.k, len(s)
    if domain.name == "repeated":
        return all(s[i] == s[i - i % k] for i in range(n))
    if domain.name in ("periodic", "mirrored"):
        u = max(1, math.ceil(n / k))
        unit = s[:u]
        turn = unit[::-1] if domain.name == "mirrored" else unit
        return all(s[i] == (unit if (i // u) % 2 == 0 else turn)[i % u] for i in range(n))
    return True


# --- configuration -------------------------------------------------------------------------------


@dataclass
class MarkovConfig:
    """Everything that defines a generated train/test split.

    Lengths are inclusive ranges ``[min, max]``; the paper uses inputs of 50 and patterns of 20
    characters. ``budget`` is the number of training examples, shared by ``num_instructions``
    rules. ``noop_fraction`` is the share of training examples whose input lacks the pattern
    (``test_noop_fraction`` the same for the test set, which is kept balanced by default so
    both no-op and rewrite accuracy are measured). ``conditional_fraction`` is the share of
    rules with an ``after c`` context. ``power_law_alpha = None`` means uniform frequencies.
    """

    alphabet: str = "abcdefghijklmnopqrstuvwxyz"
    input_length: tuple[int, int] = (50, 50)
    pattern_length: tuple[int, int] = (20, 20)
    replacement_length: tuple[int, int] | None = None  # default: same as pattern_length
    context_length: int = 1
    num_instructions: int = 1000
    budget: int = 1_000_000
    noop_fraction: float = 0.0
    test_noop_fraction: float = 0.5
    conditional_fraction: float = 0.0
    power_law_alpha: float | None = None
    domains: list[Any] = field(default_factory=lambda: ["free"])
    test_domains: list[Any] | None = None  # default: the training domains
    test_instructions: int = 100
    test_examples_per_instruction: int = 10
    prompt_style: str = "verbose"
    seed: int = 0

    def __post_init__(self) -> None:
        self.input_length = _length_range(self.input_length, "input_length")
        self.pattern_length = _length_range(self.pattern_length, "pattern_length")
        self.replacement_length = _length_range(self.replacement_length or self.pattern_length, "replacement_length")

    def validate(self) -> None:
        if len(set(self.alphabet)) < 2 or len(set(self.alphabet)) != len(self.alphabet):
            raise LlmgenError(f"alphabet needs at least 2 distinct characters and no repeats, got {self.alphabet!r}")
        if any(c in self.alphabet for c in RESERVED_CHARS) or not self.alphabet.isascii():
            raise LlmgenError(f"alphabet must be ASCII without any of {RESERVED_CHARS!r} (they delimit the prompt)")
        if self.prompt_style not in PROMPT_STYLES:
            raise LlmgenError(f"unknown prompt style {self.prompt_style!r} (known: {', '.join(PROMPT_STYLES)})")
        need = self.pattern_length[1] + (self.context_length if self.conditional_fraction > 0 else 0)
        if need > self.input_length[0]:
            raise LlmgenError(f"pattern longer than input: patterns (plus context) up to {need} characters "
                              f"do not fit inputs of {self.input_length[0]}")
        if self.num_instructions < 1 or self.test_instructions < 1 or self.test_examples_per_instruction < 1:
            raise LlmgenError("num_instructions, test_instructions and test_examples_per_instruction must be >= 1")
        if self.budget < self.num_instructions:
            raise LlmgenError(f"budget {self.budget} is smaller than the number of instructions "
                              f"{self.num_instructions}: every instruction needs at least one example")
        for name in ("noop_fraction", "test_noop_fraction", "conditional_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise LlmgenError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.conditional_fraction > 0 and self.context_length < 1:
            raise LlmgenError("conditional rules need context_length >= 1")
        if self.power_law_alpha is not None and not self.power_law_alpha > 0:
            raise LlmgenError(f"power_law_alpha must be positive, got {self.power_law_alpha}")
        if not self.domains:
            raise LlmgenError("at least one training domain is needed")
        for spec in list(self.domains) + list(self.test_domains or []):
            parse_domain(spec)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _length_range(value: Any, name: str) -> tuple[int, int]:
    lo, hi = (value, value) if isinstance(value, int) else tuple(value)
    if not 1 <= lo <= hi:
        raise LlmgenError(f"{name} must be a length >= 1 or a range [min, max] with 1 <= min <= max, got {value!r}")
    return int(lo), int(hi)


# --- frequencies ---------------------------------------------------------------------------------


def power_law_probs(n: int, alpha: float | None) -> list[float]:
    """Probability of each of ``n`` instructions: mass of ``[(i-1)/n, i/n]`` under ``a x^(a-1)``."""
    if alpha is None:
        return [1.0 / n] * n
    return [(i / n) ** alpha - ((i - 1) / n) ** alpha for i in range(1, n + 1)]


def instruction_counts(n: int, budget: int, alpha: float | None = None) -> list[int]:
    """Examples per instruction summing exactly to ``budget`` (largest-remainder rounding).

    Uniform frequencies give every instruction ``budget // n`` or one more. Under a power law an
    instruction may get zero examples; callers report how many instructions were actually seen.
    """
    if budget < n:
        raise LlmgenError(f"budget {budget} is smaller than the number of instructions {n}")
    probs = power_law_probs(n, alpha)
    raw = [p * budget for p in probs]
    counts = [int(r) for r in raw]
    order = sorted(range(n), key=lambda i: (counts[i] - raw[i], i))
    for i in order[: budget - sum(counts)]:
        counts[i] += 1
    return counts


# --- generation ----------------------------------------------------------------------------------


@dataclass
class MarkovData:
    """A generated split: rows are dicts with prompt, answer, rule, input, output, noop, domain."""

    train: list[dict]
    test: list[dict]
    train_rules: list[Rule]
    test_rules: list[Rule]
    counts: list[int]

    def summary(self) -> dict[str, Any]:
        return {
            "train_examples": len(self.train), "test_examples": len(self.test),
            "train_instructions": len(self.train_rules),
            "instructions_seen": sum(1 for c in self.counts if c > 0),
            "train_noop_share": sum(r["noop"] for r in self.train) / max(1, len(self.train)),
            "test_noop_share": sum(r["noop"] for r in self.test) / max(1, len(self.test)),
            "train_domains": dict(Counter(r.domain for r in self.train_rules)),
            "test_domains": dict(Counter(r.domain for r in self.test_rules)),
        }


def _rng(seed: int, stream: str) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, so streams are stable across processes.
    return random.Random(f"llmgen-markov:{seed}:{stream}")


def _draw_rules(n: int, domains: list[Domain], cfg: MarkovConfig, rng: random.Random,
                exclude: set[tuple[str, str, str]]) -> list[Rule]:
    """``n`` distinct rules from a weighted domain mixture, none of whose keys is in ``exclude``."""
    weights = [d.weight for d in domains]
    rules: list[Rule] = []
    seen = set(exclude)
    attempts = 0
    while len(rules) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise LlmgenError(f"cannot draw {n} distinct rules (got {len(rules)}): the alphabet, lengths "
                              "and domains allow too few different rules")
        d = rng.choices(domains, weights)[0]
        x = domain_string(d, rng.randint(*cfg.pattern_length), cfg.alphabet, rng)
        y = domain_string(d, rng.randint(*cfg.replacement_length), cfg.alphabet, rng)
        conditional = cfg.conditional_fraction > 0 and rng.random() < cfg.conditional_fraction
        c = "".join(rng.choice(cfg.alphabet) for _ in range(cfg.context_length)) if conditional else ""
        if x == y or (x, y, c) in seen:
            continue
        seen.add((x, y, c))
        rules.append(Rule(x, y, c, d.label))
    return rules


def _random_string(n: int, alphabet: str, rng: random.Random) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def make_input(rule: Rule, noop: bool, cfg: MarkovConfig, rng: random.Random) -> str:
    """An input on which ``rule`` rewrites (``noop=False``) or does nothing (``noop=True``).

    Rewrites plant ``context + pattern`` at a random position. No-ops are random strings in which
    every qualifying occurrence is broken by changing one of its characters; for conditional
    rules, half of the no-ops still contain the pattern in the wrong context, which is the case
    that tests whether the condition was understood.
    """
    n = rng.randint(*cfg.input_length)
    s = list(_random_string(n, cfg.alphabet, rng))
    if not noop:
        planted = rule.context + rule.pattern
        at = rng.randint(0, n - len(planted))
        s[at:at + len(planted)] = planted
        return "".join(s)
    if rule.context and rng.random() < 0.5:
        at = rng.randint(0, n - len(rule.pattern))
        s[at:at + len(rule.pattern)] = rule.pattern
    for _ in range(20 * n):
        i = rule.find("".join(s))
        if i < 0:
            return "".join(s)
        if rule.context and rng.random() < 0.5:
            j = i - 1 - rng.randrange(len(rule.context))  # break the context, keep the pattern
        else:
            j = i + rng.randrange(len(rule.pattern))
        s[j] = rng.choice([c for c in cfg.alphabet if c != s[j]])
    raise LlmgenError(f"could not build a no-op input for rule {rule.text()!r}")


def make_example(rule: Rule, noop: bool, cfg: MarkovConfig, rng: random.Random) -> dict:
    s = make_input(rule, noop, cfg, rng)
    out = rule.apply(s)
    return {"prompt": format_prompt(rule, s, cfg.prompt_style), "answer": " " + out, "rule": rule.text(), "input": s,
            "output": out, "noop": out == s, "domain": rule.domain}


def _noop_flags(total: int, fraction: float, rng: random.Random) -> list[bool]:
    k = round(total * fraction)
    flags = [True] * k + [False] * (total - k)
    rng.shuffle(flags)
    return flags


def generate(cfg: MarkovConfig) -> MarkovData:
    """Build the train and test sets. Same config -> same data; test set independent of
    ``num_instructions``, ``budget``, ``noop_fraction`` and ``power_law_alpha``."""
    cfg.validate()
    train_domains = [parse_domain(d) for d in cfg.domains]
    test_domains = [parse_domain(d) for d in (cfg.test_domains or cfg.domains)]

    test_rules = _draw_rules(cfg.test_instructions, test_domains, cfg, _rng(cfg.seed, "test-rules"), set())
    train_rules = _draw_rules(cfg.num_instructions, train_domains, cfg, _rng(cfg.seed, "train-rules"),
                              {r.key for r in test_rules})

    rng = _rng(cfg.seed, "test-examples")
    per = cfg.test_examples_per_instruction
    flags = _noop_flags(len(test_rules) * per, cfg.test_noop_fraction, rng)
    test = [make_example(r, flags[i * per + j], cfg, rng) for i, r in enumerate(test_rules) for j in range(per)]

    rng = _rng(cfg.seed, f"train-examples:{cfg.num_instructions}:{cfg.budget}")
    counts = instruction_counts(cfg.num_instructions, cfg.budget, cfg.power_law_alpha)
    assignment = [i for i, c in enumerate(counts) for _ in range(c)]
    rng.shuffle(assignment)
    flags = _noop_flags(len(assignment), cfg.noop_fraction, rng)
    train = [make_example(train_rules[i], f, cfg, rng) for i, f in zip(assignment, flags, strict=True)]
    return MarkovData(train, test, train_rules, test_rules, counts)
