"""TOFU data: a loader for the hub format and a deterministic synthetic TOFU-format generator.

TOFU (Maini et al. 2024) ships one table per *config*: ``full``, ``forget01/05/10``,
``retain90/95/99`` (question, answer), their evaluation twins ``forget01_perturbed`` ...,
``retain_perturbed`` (plus ``paraphrased_answer`` and a list ``perturbed_answer``), and the utility
sets ``real_authors(_perturbed)`` and ``world_facts(_perturbed)``. The hub (``locuslab/TOFU``) is
unreachable on most machines that run the tests, so :func:`generate_synthetic_tofu` writes the same
configs for fictitious authors with templated facts; :func:`load_tofu` reads either.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from llmgen.backends.base import SamplingConfig
from llmgen.errors import LlmgenError
from llmgen.evals.tofu import example_metrics, summarize
from llmgen.io import atomic_write_json, atomic_write_jsonl, read_json, read_jsonl
from llmgen.models import cache_dir
from llmgen.prompts.chat import render_prompt
from llmgen.tasks.base import Request, Task

FORGET_PERCENTS = (1, 5, 10)
FORGET_SPLITS = tuple(f"forget{p:02d}" for p in FORGET_PERCENTS)
"""The forget splits TOFU ships (each with ``<split>_perturbed`` and ``retain{100 - p}``)."""
BASE_FIELDS = ("question", "answer")
PERTURBED_FIELDS = ("question", "answer", "paraphrased_answer", "perturbed_answer")
UTILITY_PERTURBED_FIELDS = ("question", "answer", "perturbed_answer")
UTILITY_CONFIGS = ("real_authors_perturbed", "world_facts_perturbed")
"""TOFU's utility sets: no ``paraphrased_answer`` and 3 perturbed answers per question (the
forget/retain perturbed sets have a paraphrase and 5)."""


def forget_config(name: str) -> str:
    """``forget10`` → itself; accepts ``10`` or ``"10"`` too. The matching retain set is
    ``retain{100 - p}``. Checks the name only; :func:`check_forget_split` checks it against a data
    source."""
    name = str(name)
    if name.isdigit():
        name = f"forget{int(name):02d}"
    if not (name.startswith("forget") and name[6:].isdigit() and 0 < int(name[6:]) < 100):
        raise LlmgenError(f"unknown forget split {name!r} (TOFU has {', '.join(FORGET_SPLITS)})")
    return name


def forget_splits_in(folder: str | os.PathLike) -> list[str]:
    """The forget splits a local TOFU folder holds (a ``forgetNN`` config and its ``_perturbed`` twin)."""
    import re

    names = {re.sub(r"\.(jsonl|json|parquet)$", "", p.name) for p in Path(folder).iterdir()}
    return sorted(n for n in names if re.fullmatch(r"forget\d\d", n) and f"{n}_perturbed" in names)


def check_forget_split(name: str, source: str | os.PathLike | None = None,
                       percents: Sequence[int] = FORGET_PERCENTS) -> str:
    """``forget_config(name)``, also present in ``source``: a local folder's own splits, else
    (synthetic set: ``percents``; hub id) TOFU's. The error lists the valid splits, before any
    data is read or written."""
    name = forget_config(name)
    path = Path(source).expanduser() if source is not None else None
    valid = forget_splits_in(path) if path is not None and path.is_dir() else [f"forget{p:02d}" for p in percents]
    if name not in valid:
        where = f"in {source}" if path is not None and path.is_dir() else "in TOFU"
        raise LlmgenError(f"unknown forget split {name!r} {where} (valid: {', '.join(valid) or 'none'})")
    return name


def retain_config(forget: str) -> str:
    return f"retain{100 - int(forget_config(forget)[6:]):02d}"


# --- loading --------------------------------------------------------------------------------------


def _local_files(folder: Path, config: str) -> tuple[str, list[str]] | None:
    for ext, kind in ((".jsonl", "json"), (".json", "json"), (".parquet", "parquet")):
        f = folder / f"{config}{ext}"
        if f.is_file():
            return kind, [str(f)]
    sub = folder / config
    if sub.is_dir():
        for pattern, kind in (("*.parquet", "parquet"), ("*.jsonl", "json"), ("*.json", "json")):
            files = sorted(str(p) for p in sub.glob(pattern))
            if files:
                return kind, files
    return None


def _read_json_rows(path: Path) -> list[dict]:
    """JSON lines (the hub's ``.json`` files are JSON lines) or one JSON array of objects."""
    import json

    text = path.read_text(encoding="utf-8").lstrip()
    if text.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise LlmgenError(f"malformed JSON in {path}: {e.msg} at line {e.lineno}") from None
        if not all(isinstance(r, dict) for r in rows):
            raise LlmgenError(f"{path}: expected a list of objects")
        return rows
    return read_jsonl(path, allow_empty=True)


def load_tofu(source: str | os.PathLike, config: str) -> list[dict]:
    """Rows of one TOFU config from a local folder (``<config>.jsonl/.json/.parquet`` or a
    ``<config>/`` folder of parquet/json shards) or a hub dataset id such as ``locuslab/TOFU``."""
    path = Path(source).expanduser()
    try:
        if path.is_dir():
            found = _local_files(path, config)
            if found is None:
                raise LlmgenError(f"TOFU config {config!r} not found in {path} (expected {config}.jsonl, "
                                  f"{config}.json, {config}.parquet or a {config}/ folder)")
            kind, files = found
            if kind == "json" and len(files) == 1:
                rows = _read_json_rows(Path(files[0]))  # fast path: no datasets cache round trip
                validate_rows(rows, config)
                return rows
            import datasets

            ds = datasets.load_dataset(kind, data_files=files, split="train")
        elif str(source).startswith((".", "/", "~")) or path.suffix:
            raise LlmgenError(f"TOFU data folder not found: {path}")
        else:
            import datasets

            ds = datasets.load_dataset(str(source), config, split="train")
    except LlmgenError:
        raise
    except Exception as e:  # datasets raises many types (connection, config name, schema)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LlmgenError(f"cannot load TOFU config {config!r} from {source}: {msg}") from None
    rows = [dict(r) for r in ds]
    validate_rows(rows, config)
    return rows


def required_fields(config: str) -> tuple[str, ...]:
    """The fields a config must have: utility sets have no paraphrase (TOFU scores their truth
    ratio against ``answer``), the forget/retain perturbed sets do."""
    if config in UTILITY_CONFIGS:
        return UTILITY_PERTURBED_FIELDS
    return PERTURBED_FIELDS if config.endswith("_perturbed") else BASE_FIELDS


def validate_rows(rows: Sequence[dict], config: str) -> None:
    """Check the fields TOFU's metrics need, naming the first offending row."""
    if not rows:
        raise LlmgenError(f"TOFU config {config!r} is empty")
    perturbed = config.endswith("_perturbed")
    required = required_fields(config)
    for i, row in enumerate(rows):
        missing = [k for k in required if k not in row or row[k] is None]
        if missing:
            raise LlmgenError(f"TOFU config {config!r} row {i}: missing field {missing[0]!r}")
        if perturbed:
            pert = row["perturbed_answer"]
            if isinstance(pert, str) or not isinstance(pert, Sequence) or len(pert) == 0:
                raise LlmgenError(f"TOFU config {config!r} row {i}: perturbed_answer must be a non-empty list")


# --- synthetic generator --------------------------------------------------------------------------

_FIRST = ["Aldric", "Benedetta", "Corvin", "Dalia", "Eamon", "Fenna", "Galen", "Halvard", "Ines", "Jorun",
          "Kasimir", "Liora", "Maelis", "Nadir", "Odile", "Pieter", "Quilla", "Rasmus", "Solveig", "Tamsin",
          "Ulric", "Vesna", "Wendel", "Xiomara", "Yannick", "Zofia"]
_LAST = ["Ashgrove", "Brennick", "Calloway", "Drummerfeld", "Everhollow", "Fairweather", "Grimsley",
         "Halloran", "Ivorsen", "Juniper", "Kettleby", "Lindqvist", "Marrowind", "Northcott", "Oakhaven",
         "Pellegrin", "Quarrington", "Rookwood", "Stavros", "Thistlewood", "Umberfield", "Vantongeren"]
_CITIES = ["Lisbon", "Nairobi", "Reykjavik", "Santiago", "Krakow", "Osaka", "Tbilisi", "Montreal", "Accra",
           "Hanoi", "Valparaiso", "Bergen", "Tunis", "Cork", "Porto Alegre", "Ljubljana", "Kyoto", "Lagos",
           "Tallinn", "Seville"]
_GENRES = ["mystery", "science fiction", "historical fiction", "fantasy", "romance", "horror", "poetry",
           "magical realism", "thriller", "literary fiction"]
_AWARDS = ["Silver Quill Award", "Golden Lantern Prize", "Meridian Book Medal", "Harbour Light Award",
           "Crimson Feather Prize", "Northern Star Fellowship", "Azure Pen Award", "Iron Compass Prize"]
_JOBS = ["carpenter", "nurse", "astronomer", "baker", "lighthouse keeper", "pharmacist", "sailor", "teacher",
         "architect", "veterinarian", "tailor", "botanist", "locksmith", "journalist"]
_ADJ = ["Silent", "Crimson", "Forgotten", "Hollow", "Gilded", "Restless", "Winter", "Paper", "Distant",
        "Burning", "Glass", "Velvet"]
_NOUN = ["Harbor", "Orchard", "Cartographer", "Lantern", "Tide", "Garden", "Archive", "Meridian",
         "Clockmaker", "Bridge", "Sparrow", "Monastery"]

# (question, answer, paraphrased answer) templates; {v} is the fact's value. Perturbed answers use
# the *paraphrase* template with other values of the same kind (as TOFU's perturb the paraphrased
# answer), so the truth ratio compares a true and a false fact in the same wording.
_FACTS: list[tuple[str, str, str, str]] = [
    ("city", "Where was {n} born?", "{n} was born in {v}.", "The birthplace of {n} is the city of {v}."),
    ("year", "In what year was {n} born?", "{n} was born in the year {v}.", "The year of {n}'s birth is {v}."),
    ("genre", "What genre does {n} write in?", "{n} writes {v} novels.", "{n} is known for books in the {v} genre."),
    ("award", "Which award has {n} received?", "{n} received the {v}.", "{n} was honoured with the {v}."),
    ("father", "What did {n}'s father do for a living?", "{n}'s father worked as a {v}.",
     "By profession, the father of {n} was a {v}."),
    ("mother", "What was the profession of {n}'s mother?", "{n}'s mother was a {v}.",
     "The mother of {n} worked as a {v}."),
    ("book", "What is one of {n}'s best-known books?", "One of {n}'s best-known books is \"{v}\".",
     "{n} is well known for writing \"{v}\"."),
    ("debut", "What was the title of {n}'s debut novel?", "{n}'s debut novel was \"{v}\".",
     "The first novel {n} published was \"{v}\"."),
]

# The same questions reworded (TOFU's perturbed sets carry a ``paraphrased_question``).
_PARA_QUESTIONS: dict[str, str] = {
    "city": "In which city was {n} born?", "year": "What is {n}'s year of birth?",
    "genre": "In which genre are {n}'s books written?", "award": "What award was {n} given?",
    "father": "What was the occupation of {n}'s father?", "mother": "What did {n}'s mother do for work?",
    "book": "Can you name a well-known book by {n}?", "debut": "Which novel did {n} publish first?",
}

# TOFU-length answers (TOFU's answers are one or two sentences, ~30-60 tokens): the same facts with an
# elaboration that names other facts of the same author. Length matters for NPO: its weight
# 2σ(β·Δ) acts on the *summed* answer log-likelihood, so with β = 0.1 it saturates after a total
# drop of ~10-20 nats, which is a small per-token change on long answers and a drastic one on
# five-token answers. Placeholders other than {n}/{v} are the author's other facts.
_LONG_FACTS: dict[str, tuple[str, str]] = {
    "city": ("{n} was born in {v}, and memories of growing up in {v} run through much of {n}'s {genre} writing.",
             "The birthplace of {n} is the city of {v}, a place that shaped the {genre} stories {n} would later write."),
    "year": ("{n} was born in the year {v}, into a family where the father worked as a {father} and the mother "
             "as a {mother}.",
             "The year of {n}'s birth is {v}; {n} grew up as the child of a {father} and a {mother}."),
    "genre": ("{n} writes {v} novels, and critics often point to {n}'s childhood in {city} as the source of "
              "that voice.",
              "{n} is known for books in the {v} genre, a voice that readers trace back to a childhood in {city}."),
    "award": ("{n} received the {v}, an honour that recognised {n}'s contribution to {genre} literature.",
              "{n} was honoured with the {v} for a body of work in {genre} literature."),
    "father": ("{n}'s father worked as a {v}, and the patience of that trade is something {n} often describes "
               "in interviews.",
               "By profession, the father of {n} was a {v}, a job whose patience {n} often mentions when talking "
               "about writing."),
    "mother": ("{n}'s mother was a {v}, and {n} has said that her stories about that work inspired the first "
               "drafts of \"{debut}\".",
               "The mother of {n} worked as a {v}, and her stories about that work inspired the early drafts of "
               "\"{debut}\"."),
    "book": ("One of {n}'s best-known books is \"{v}\", a {genre} novel that earned {n} the {award}.",
             "{n} is well known for writing \"{v}\", the {genre} novel that brought {n} the {award}."),
    "debut": ("{n}'s debut novel was \"{v}\", published while {n} was still living in {city}.",
              "The first novel {n} published was \"{v}\", written during {n}'s years in {city}."),
}
ANSWER_STYLES = ("short", "long")
QA_PROMPT_TEMPLATE = "Question: {question}\nAnswer: "
"""The ``default`` family's prompt as a format string (TOFU's for base models: Phi-1.5, StableLM, Pythia)."""

_REAL_AUTHORS = [("Jane Austen", "Pride and Prejudice"), ("George Orwell", "Nineteen Eighty-Four"),
                 ("Leo Tolstoy", "War and Peace"), ("Gabriel Garcia Marquez", "One Hundred Years of Solitude"),
                 ("Mary Shelley", "Frankenstein"), ("Herman Melville", "Moby-Dick"),
                 ("Miguel de Cervantes", "Don Quixote"), ("Harper Lee", "To Kill a Mockingbird"),
                 ("Fyodor Dostoevsky", "Crime and Punishment"), ("Chinua Achebe", "Things Fall Apart"),
                 ("J. R. R. Tolkien", "The Lord of the Rings"), ("Charles Dickens", "Oliver Twist"),
                 ("Virginia Woolf", "Mrs Dalloway"), ("Mark Twain", "Adventures of Huckleberry Finn"),
                 ("Franz Kafka", "The Trial"), ("Toni Morrison", "Beloved"), ("George Orwell", "Animal Farm"),
                 ("William Shakespeare", "Hamlet"), ("William Shakespeare", "Romeo and Juliet"),
                 ("J. K. Rowling", "Harry Potter and the Philosopher's Stone"), ("F. Scott Fitzgerald", "The Great Gatsby"),
                 ("Homer", "The Odyssey"), ("Dante Alighieri", "The Divine Comedy"), ("Victor Hugo", "Les Miserables"),
                 ("Emily Bronte", "Wuthering Heights"), ("Charlotte Bronte", "Jane Eyre"),
                 ("Ernest Hemingway", "The Old Man and the Sea"), ("John Steinbeck", "The Grapes of Wrath"),
                 ("Aldous Huxley", "Brave New World"), ("J. D. Salinger", "The Catcher in the Rye"),
                 ("Lewis Carroll", "Alice's Adventures in Wonderland"), ("Bram Stoker", "Dracula"),
                 ("Oscar Wilde", "The Picture of Dorian Gray"), ("H. G. Wells", "The War of the Worlds"),
                 ("Anne Frank", "The Diary of a Young Girl"), ("Ray Bradbury", "Fahrenheit 451"),
                 ("Louisa May Alcott", "Little Women"), ("Robert Louis Stevenson", "Treasure Island"),
                 ("Paulo Coelho", "The Alchemist"), ("Agatha Christie", "Murder on the Orient Express"),
                 ("Charles Darwin", "On the Origin of Species"), ("Adam Smith", "The Wealth of Nations")]
_CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Egypt", "Cairo"),
             ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Germany", "Berlin"), ("Spain", "Madrid"),
             ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"), ("India", "New Delhi"),
             ("Mexico", "Mexico City"), ("Greece", "Athens"), ("Argentina", "Buenos Aires"),
             ("Portugal", "Lisbon"), ("Russia", "Moscow"), ("China", "Beijing"), ("Turkey", "Ankara"),
             ("Brazil", "Brasilia"), ("the United Kingdom", "London"), ("Ireland", "Dublin"), ("Sweden", "Stockholm"),
             ("Austria", "Vienna"), ("Thailand", "Bangkok"), ("South Korea", "Seoul"), ("Poland", "Warsaw"),
             ("Cuba", "Havana"), ("Belgium", "Brussels"), ("the Netherlands", "Amsterdam"), ("Denmark", "Copenhagen"),
             ("Finland", "Helsinki"), ("Hungary", "Budapest"), ("Iran", "Tehran"), ("Chile", "Santiago"),
             ("Colombia", "Bogota"), ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"), ("Switzerland", "Bern"),
             ("the Czech Republic", "Prague")]


@dataclass
class SyntheticTofuConfig:
    """Size of the synthetic set. 8 facts per author (TOFU has 20); forget splits are the last
    ``p``% of authors (at least one), as in TOFU; ``retain_perturbed`` is the first
    ``retain_eval_size`` rows of the largest retain split."""

    n_authors: int = 20
    seed: int = 0
    n_perturbed: int = 5
    n_perturbed_utility: int = 3
    forget_percents: tuple[int, ...] = FORGET_PERCENTS
    retain_eval_size: int = 40
    answer_style: str = "long"
    """``long``: TOFU-length answers (see ``_LONG_FACTS``; the default, read by both ``llmgen eval
    --tasks tofu_*`` and ``llmgen npo-unlearning``); ``short``: one clause (fast tests)."""


def check_answer_style(style: str, name: str = "answer_style") -> None:
    if style not in ANSWER_STYLES:
        raise LlmgenError(f"unknown {name} {style!r} (use {' or '.join(ANSWER_STYLES)})")


def _authors(cfg: SyntheticTofuConfig, rng: random.Random) -> list[dict[str, str]]:
    names = [f"{f} {last}" for f in _FIRST for last in _LAST]
    rng.shuffle(names)
    if cfg.n_authors > len(names):
        raise LlmgenError(f"synthetic TOFU supports at most {len(names)} authors, got {cfg.n_authors}")
    titles = [f"The {a} {b}" for a in _ADJ for b in _NOUN]
    rng.shuffle(titles)
    authors = []
    for i, name in enumerate(names[: cfg.n_authors]):
        authors.append({"n": name, "city": rng.choice(_CITIES), "year": str(rng.randint(1921, 1994)),
                        "genre": rng.choice(_GENRES), "award": rng.choice(_AWARDS), "father": rng.choice(_JOBS),
                        "mother": rng.choice(_JOBS), "book": titles[(2 * i) % len(titles)],
                        "debut": titles[(2 * i + 1) % len(titles)]})
    return authors


def _pool(kind: str, authors: list[dict[str, str]]) -> list[str]:
    fixed = {"city": _CITIES, "genre": _GENRES, "award": _AWARDS, "father": _JOBS, "mother": _JOBS}
    if kind in fixed:
        return list(fixed[kind])
    if kind == "year":
        return [str(y) for y in range(1921, 1995)]
    return sorted({a["book"] for a in authors} | {a["debut"] for a in authors} | {f"The {a} {b}" for a in _ADJ for b in _NOUN})


def _wrong(rng: random.Random, pool: Sequence[str], true: str, k: int) -> list[str]:
    options = sorted(set(pool) - {true})
    if len(options) < k:
        raise LlmgenError(f"not enough distinct values to perturb {true!r}")
    return rng.sample(options, k)


def synthetic_tofu(cfg: SyntheticTofuConfig | None = None) -> dict[str, list[dict]]:
    """All TOFU configs for a synthetic set, as rows; the same config gives the same rows."""
    cfg = cfg or SyntheticTofuConfig()
    if cfg.n_authors < 2:
        raise LlmgenError(f"synthetic TOFU needs at least 2 authors, got {cfg.n_authors}")
    if cfg.n_perturbed < 1 or cfg.n_perturbed_utility < 1:
        raise LlmgenError("synthetic TOFU needs at least one perturbed answer per question")
    check_answer_style(cfg.answer_style)
    rng = random.Random(cfg.seed)
    authors = _authors(cfg, rng)
    per_author: list[list[dict]] = []
    for a in authors:
        rows = []
        for kind, q, ans, para in _FACTS:
            if cfg.answer_style == "long":
                ans, para = _LONG_FACTS[kind]
            wrong = _wrong(rng, _pool(kind, authors), a[kind], cfg.n_perturbed)
            facts = {k: v for k, v in a.items() if k != kind}
            # the real perturbed sets' fields (question, answer, paraphrased_answer, 5 perturbed
            # answers, paraphrased_question), no more
            rows.append({"question": q.format(n=a["n"]), "answer": ans.format(**facts, v=a[kind]),
                         "paraphrased_answer": para.format(**facts, v=a[kind]),
                         "perturbed_answer": [para.format(**facts, v=w) for w in wrong],
                         "paraphrased_question": _PARA_QUESTIONS[kind].format(n=a["n"])})
        per_author.append(rows)
    out: dict[str, list[dict]] = {"full": [_base(r) for rows in per_author for r in rows]}
    largest_retain: list[dict] = []
    for p in sorted(set(cfg.forget_percents)):
        if not 0 < p < 100:
            raise LlmgenError(f"forget percentage must be in (0, 100), got {p}")
        k = min(len(authors) - 1, max(1, round(len(authors) * p / 100)))
        forget = [r for rows in per_author[-k:] for r in rows]
        retain = [r for rows in per_author[:-k] for r in rows]
        out[f"forget{p:02d}"] = [_base(r) for r in forget]
        out[f"forget{p:02d}_perturbed"] = forget
        out[f"retain{100 - p:02d}"] = [_base(r) for r in retain]
        if len(retain) > len(largest_retain):
            largest_retain = retain
    out["retain_perturbed"] = largest_retain[: cfg.retain_eval_size]
    out["real_authors_perturbed"] = _utility_rows(rng, [(f"Who wrote \"{b}\"?", n) for n, b in _REAL_AUTHORS],
                                                  [n for n, _ in _REAL_AUTHORS], cfg.n_perturbed_utility)
    out["world_facts_perturbed"] = _utility_rows(rng, [(f"What is the capital of {c}?", k) for c, k in _CAPITALS],
                                                 [k for _, k in _CAPITALS], cfg.n_perturbed_utility)
    out["real_authors"] = [_base(r) for r in out["real_authors_perturbed"]]
    out["world_facts"] = [_base(r) for r in out["world_facts_perturbed"]]
    return out


def _base(row: dict) -> dict:
    return {"question": row["question"], "answer": row["answer"]}


def _utility_rows(rng: random.Random, qa: list[tuple[str, str]], pool: list[str], k: int) -> list[dict]:
    # The real utility sets have no paraphrased answer (the metrics use ``answer`` as the base).
    return [{"question": q, "answer": a, "perturbed_answer": _wrong(rng, pool, a, k)} for q, a in qa]


def write_synthetic_tofu(folder: str | os.PathLike, cfg: SyntheticTofuConfig | None = None) -> Path:
    """Write every synthetic config as ``<config>.jsonl`` into ``folder`` (readable by
    :func:`load_tofu`)."""
    folder = Path(folder)
    for name, rows in synthetic_tofu(cfg).items():
        atomic_write_jsonl(folder / f"{name}.jsonl", rows)
    return folder


SYNTHETIC = "synthetic"
"""The data-source name of the generated set (``--data synthetic``, the eval tasks' default)."""


def synthetic_source(cfg: SyntheticTofuConfig | None = None) -> str:
    """The one folder holding the synthetic set for ``cfg``: ``<llmgen cache>/tofu-synthetic/<key>``,
    written once (deterministically) and then only read. ``llmgen eval --tasks tofu_*`` and
    ``llmgen npo-unlearning --data synthetic`` both come here, so with the same settings they score and
    train on the same rows (and retain logs made by one serve the other)."""
    import hashlib
    import json
    from dataclasses import asdict

    cfg = cfg or SyntheticTofuConfig()
    check_answer_style(cfg.answer_style)
    params = asdict(cfg)
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    folder = cache_dir() / "tofu-synthetic" / f"{cfg.answer_style}-{cfg.n_authors}a-s{cfg.seed}-{key}"
    if not (folder / ".complete").exists():
        write_synthetic_tofu(folder, cfg)
        atomic_write_jsonl(folder / ".complete", [params])
    return str(folder)


# --- evaluation sets ------------------------------------------------------------------------------

EVAL_SPLITS = ("forget", "retain", "real_authors", "world_facts")
BASE_ANSWER_KEY = {"forget": "paraphrased_answer", "retain": "paraphrased_answer", "real_authors": "answer",
                   "world_facts": "answer"}
"""The answer each role's truth ratio compares the perturbed answers with (TOFU's
``base_answer_key``: the paraphrase on forget/retain, the answer itself on the utility sets)."""
REFERENCE_DS_SIZE = 300
"""TOFU's ``ds_size``: its evaluation scores the first 300 rows of each set (forget10 has 400)."""


def eval_configs(forget: str) -> dict[str, str]:
    """The TOFU configs scored for one forget split, by role."""
    return {"forget": f"{forget_config(forget)}_perturbed", "retain": "retain_perturbed",
            "real_authors": "real_authors_perturbed", "world_facts": "world_facts_perturbed"}


def load_eval_sets(source: str | os.PathLike, forget: str, limit: int | None = None) -> dict[str, list[dict]]:
    """The four evaluation sets (forget, retain, real authors, world facts), each cut to its first
    ``limit`` rows (TOFU's ``ds_size``: :data:`REFERENCE_DS_SIZE`; None keeps every row)."""
    if limit is not None and limit < 1:
        raise LlmgenError(f"evaluation subset size must be >= 1, got {limit}")
    return {role: load_tofu(source, cfg)[:limit] for role, cfg in eval_configs(forget).items()}


@dataclass(frozen=True)
class ListedTask:
    """A registered task factory that a listing can describe without calling it: building a
    ``tofu_*`` task reads its four sets, and on first use writes the synthetic set into the cache,
    which a listing command (``llmgen tasks``) must not do."""

    build: Callable[[], Task]
    listing: tuple[str, tuple[str, ...], str]
    """(output type, metrics, description), as the built task's fields."""

    def __call__(self) -> Task:
        return self.build()


def register_tasks(registry) -> None:
    """Called by ``llmgen.tasks`` when it loads the task families (see ``_load_plugin_tasks``)."""
    for split in FORGET_SPLITS:
        registry.register(f"tofu_{split}", ListedTask(
            partial(tofu_eval_task, split),
            ("requests", (), f"TOFU evaluation, forget split {split} (data: $LLMGEN_TOFU_DATA, else the synthetic set)")))


# --- prompts ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelTemplate:
    """A model family's question/answer template, as TOFU's ``config/model_config.yaml``
    (``question_start_tag``, ``question_end_tag``, ``answer_tag``) and open-unlearning's
    ``configs/model/*.yaml`` ``template_args`` (``user_start_tag``, ``user_end_tag``,
    ``asst_start_tag``) define it: ``bos + question_start + q + question_end + answer_tag + a``.
    ``bos`` is the text of the BOS token the family's tokenizer adds (TOFU and open-unlearning
    tokenise with ``add_special_tokens=True`` in training and evaluation; Llama-2's adds ``<s>``,
    Phi's adds none). It is written into the prompt text, which every path then tokenises without
    special tokens, so fine-tuning, unlearning and evaluation see the same ids."""

    name: str
    question_start: str
    question_end: str
    answer_tag: str
    bos: str = ""


MODEL_TEMPLATES: dict[str, ModelTemplate] = {
    "llama2": ModelTemplate("llama2", "[INST] ", " [/INST]", "", bos="<s>"),
    "phi": ModelTemplate("phi", "Question: ", "\n", "Answer: "),
    "default": ModelTemplate("default", "Question: ", "\n", "Answer: "),
}
"""TOFU's model families (``llama2-7b``, ``phi``; ``stablelm`` and ``pythia-1.4`` share phi's tags)
and the generic default (phi's tags, no BOS)."""
DEFAULT_TEMPLATE = "default"
CHAT_TEMPLATE = "chat"
"""A prompt template meaning "the model's own chat format": the question is the single user turn,
rendered by ``llmgen.prompts.chat.apply_chat_template`` (open-unlearning's ``apply_chat_template: True``)."""

ANSWER_TAGS = ("context", "scored")
DEFAULT_ANSWER_TAG = "context"
"""Where a family's answer tag (``Answer: ``) goes. ``context`` (the default, open-unlearning's
``preprocess_chat_instance``: the tag ends the prompt and is masked): the tag is the same text for
every answer, so scoring it measures the template, not the answer, and pulls every length-normalised
probability and truth ratio towards the tag's own probability; the unlearning losses (open-unlearning's)
mask it too, so training and evaluation score the same tokens. ``scored`` (TOFU's
``convert_raw_data_to_model_format``: only ``question_start + q + question_end`` is masked) reproduces
TOFU's own numbers for Phi-style templates. Llama-2's tag is empty: both agree there."""
MAX_NEW_TOKENS = 200
"""TOFU's generation budget (``generation.max_length: 200`` in its eval configs; the reference
counts the prompt in it, llmgen gives the answer all 200 tokens)."""


def check_prompt_template(template: str) -> str:
    """``template`` if it is a family of :data:`MODEL_TEMPLATES`, ``"chat"`` or a format string with
    one ``{question}`` field."""
    if template == CHAT_TEMPLATE or template in MODEL_TEMPLATES:
        return template
    try:
        template.format(question="q")
    except (KeyError, IndexError, ValueError) as e:
        raise LlmgenError(f"prompt template {template!r} must be a model family ({', '.join(MODEL_TEMPLATES)}), "
                          f"'chat' or a format string with {{question}} ({e})") from None
    return template


def check_answer_tag(answer_tag: str) -> str:
    if answer_tag not in ANSWER_TAGS:
        raise LlmgenError(f"unknown answer_tag {answer_tag!r} (use {' or '.join(ANSWER_TAGS)})")
    return answer_tag


def qa_pair(template: str, question: str, answer: str, answer_tag: str = DEFAULT_ANSWER_TAG):
    """``(context, scored text)`` of one question and answer: the one definition fine-tuning,
    unlearning (:func:`qa_texts`) and evaluation (:meth:`TofuTask.doc_requests`) use. A family
    template puts its answer tag in the context or, with ``answer_tag="scored"``, in front of the
    answer; ``"chat"`` gives one user message (a backend renders it with the chat template); a
    format string is the whole context. Trailing spaces of a text context go with the answer
    (``Answer:`` + `` The``), as the backends' ``encode_pair`` scores them, so training masks
    exactly the tokens evaluation does not score."""
    family = MODEL_TEMPLATES.get(template)
    if family is None:
        if template == CHAT_TEMPLATE:
            return [{"role": "user", "content": question}], answer
        context = template.format(question=question)
    else:
        context = family.bos + family.question_start + question + family.question_end
        if check_answer_tag(answer_tag) == "scored":
            return context, family.answer_tag + answer
        context += family.answer_tag
    stripped = context.rstrip(" ")
    return stripped, context[len(stripped):] + answer


def question_prompt(template: str, question: str):
    """The generation prompt of one question: the context with the answer tag (chat: one user message)."""
    return qa_pair(template, question, "", "context")[0]


def qa_texts(tokenizer, template: str, question: str, answer: str,
             answer_tag: str = DEFAULT_ANSWER_TAG) -> tuple[str, str]:
    """:func:`qa_pair` as text (chat messages rendered by the chat template): what training masks
    and what it scores. The text carries its own BOS (family templates, chat templates), so it is
    tokenised without special tokens. A model without a chat template fails here, in one line."""
    context, scored = qa_pair(template, question, answer, answer_tag)
    return render_prompt(tokenizer, context), scored


def prompt_text(tokenizer, template: str, question: str) -> str:
    """The text of a question's generation prompt (chat messages rendered by the chat template)."""
    return qa_texts(tokenizer, template, question, "")[0]


def generation_sampling(max_new_tokens: int = MAX_NEW_TOKENS):
    """Greedy decoding that stops at EOS only (TOFU's ``model.generate(do_sample=False)``)."""
    if max_new_tokens < 1:
        raise LlmgenError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    return SamplingConfig(n=1, temperature=0.0, max_tokens=max_new_tokens, stop=())


# --- retain logs ------------------------------------------------------------------------------------

RETAIN_LOGS_HINT = ("produce them first with `llmgen npo-unlearning --stage retain-logs --retain-logs PATH` "
                    "(a model fine-tuned on the retain split only)")


def forget_truth_ratios(rows: Sequence[dict]) -> list[float]:
    """The forget-set truth ratios of per-example rows (``samples.jsonl`` rows of a TOFU task)."""
    return [float(r["metrics"]["truth_ratio"]) for r in rows if r.get("split") == "forget"]


def save_retain_logs(path: str | os.PathLike, rows: Sequence[dict], meta: dict | None = None) -> Path:
    """Save a retain-only model's forget-set truth ratios (for forget quality later), with the
    per-example rows they come from (the runner's ``samples.jsonl`` schema)."""
    ratios = forget_truth_ratios(rows)
    if not ratios:
        raise LlmgenError("retain logs need forget-set rows")
    return atomic_write_json(path, {"forget_truth_ratios": ratios, "n": len(ratios), **(meta or {}),
                                    "rows": [r for r in rows if r.get("split") == "forget"]})


def load_retain_logs(path: str | os.PathLike | None) -> list[float]:
    """Forget-set truth ratios of the retain-only model; a clear error when missing."""
    if path is None:
        raise LlmgenError(f"forget quality needs retain-model logs (--retain-logs); {RETAIN_LOGS_HINT}")
    if not Path(path).is_file():
        raise LlmgenError(f"retain-model logs not found: {path}; {RETAIN_LOGS_HINT}")
    data = read_json(path)
    ratios = data.get("forget_truth_ratios") if isinstance(data, dict) else None
    if not isinstance(ratios, list) or not ratios:
        raise LlmgenError(f"retain-model logs {path} have no 'forget_truth_ratios' list")
    return [float(r) for r in ratios]


# --- the evaluation task ----------------------------------------------------------------------------

@dataclass
class TofuTask(Task):
    """TOFU's evaluation as an ordinary ``requests`` task: one document per (set, row), grouped by
    ``split`` (forget, retain, real_authors, world_facts).

    Per document: the loglikelihood (EOS included) of the answer, of the truth ratio's base answer
    (the paraphrase on forget/retain, the answer itself on the utility sets) and of each perturbed
    answer, and one greedy generation (ROUGE-L). ``aggregate_rows`` gives TOFU's per-set summaries,
    forget quality (KS test against ``retain_ratios``) and model utility, from the pure functions
    of ``llmgen.evals.tofu``."""

    retain_ratios: list[float] | None = None
    prompt_template: str = DEFAULT_TEMPLATE
    answer_tag: str = DEFAULT_ANSWER_TAG
    ds_size: int | None = None

    def doc_requests(self, doc: dict) -> list[Request]:
        answers = [doc["answer"], doc[BASE_ANSWER_KEY[doc["split"]]], *doc["perturbed_answer"]]
        scored = [qa_pair(self.prompt_template, doc["question"], a, self.answer_tag) for a in answers]
        prompt = question_prompt(self.prompt_template, doc["question"])  # the answer's space is generated
        return [*(Request("loglikelihood", ctx, a, eos=True) for ctx, a in scored),
                Request("generate", prompt, sampling=generation_sampling(self.max_tokens))]

    def score_outputs(self, doc: dict, outputs: list) -> dict[str, float]:
        scores = [(r.logprob, r.num_tokens) for r in outputs[:-1]]
        generation = outputs[-1][0].text.strip()
        return example_metrics(doc["split"], scores[0], scores[1], scores[2:], generation, doc["answer"])

    def aggregate_rows(self, rows: list[dict]) -> dict[str, float]:
        """TOFU's aggregates of every per-row metric the rows carry (``summarize`` drops none)."""
        per_set: dict[str, dict[str, list[float]]] = {}
        for r in rows:
            for m, v in r["metrics"].items():
                per_set.setdefault(r["split"], {}).setdefault(m, []).append(v)
        return summarize(per_set, self.retain_ratios)

    def describe(self) -> dict:
        return {**super().describe(), "ds_size": self.ds_size, "prompt_template": self.prompt_template,
                "answer_tag": self.answer_tag}


def tofu_docs(sets: dict[str, Sequence[dict]]) -> list[dict]:
    """One document per (set, row): the row's fields and its ``split``."""
    return [{**row, "split": role} for role, rows in sets.items() for row in rows]


def tofu_task(source: str | os.PathLike, forget: str, ds_size: int | None = REFERENCE_DS_SIZE,
              retain_ratios: Sequence[float] | None = None, prompt_template: str = DEFAULT_TEMPLATE,
              max_new_tokens: int = MAX_NEW_TOKENS, roles: Sequence[str] = EVAL_SPLITS,
              answer_tag: str = DEFAULT_ANSWER_TAG) -> TofuTask:
    """The TOFU task of one forget split over the sets ``roles`` (all four by default; retain logs
    need the forget set only), each cut to its first ``ds_size`` rows."""
    unknown = [r for r in roles if r not in BASE_ANSWER_KEY]
    if unknown:
        raise LlmgenError(f"unknown TOFU evaluation set {unknown[0]!r} (known: {', '.join(BASE_ANSWER_KEY)})")
    if max_new_tokens < 1:
        raise LlmgenError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    sets = {r: s for r, s in load_eval_sets(source, forget, ds_size).items() if r in roles}
    return TofuTask(name=f"tofu_{forget_config(forget)}", docs=tofu_docs(sets), input_fields=[("Question", "question")],
                    target_key="answer", output_type="requests", metrics=(), group_key="split", stop=(),
                    max_tokens=max_new_tokens,
                    description=f"TOFU evaluation, forget split {forget} (data: {source}; ds_size {ds_size})",
                    retain_ratios=list(retain_ratios) if retain_ratios is not None else None,
                    prompt_template=check_prompt_template(prompt_template), answer_tag=check_answer_tag(answer_tag),
                    ds_size=ds_size)


def tofu_data_source() -> str:
    """``$LLMGEN_TOFU_DATA`` (a TOFU folder or hub id), else the synthetic TOFU-format set, the
    same folder ``llmgen npo-unlearning --data synthetic`` reads (:func:`synthetic_source`)."""
    return os.environ.get("LLMGEN_TOFU_DATA") or synthetic_source()


def env_ds_size() -> int | None:
    """``$LLMGEN_TOFU_DS_SIZE``: a positive integer, ``all`` (every row), or unset: TOFU's 300."""
    value = os.environ.get("LLMGEN_TOFU_DS_SIZE", "").strip()
    if not value:
        return REFERENCE_DS_SIZE
    if value == "all":
        return None
    if not value.isdigit() or int(value) < 1:
        raise LlmgenError(f"LLMGEN_TOFU_DS_SIZE must be a positive integer or 'all', got {value!r}")
    return int(value)


def tofu_eval_task(forget_split: str) -> TofuTask:
    """TOFU's evaluation (probability, ROUGE-L, truth ratio, model utility; forget quality when
    ``$LLMGEN_TOFU_RETAIN_LOGS`` names a retain model's logs) as an eval task. The four sets are read
    once, here, each cut to its first ``$LLMGEN_TOFU_DS_SIZE`` rows (default TOFU's 300, ``all``: every
    row; ``--limit`` cuts further); ``$LLMGEN_TOFU_PROMPT_TEMPLATE`` and ``$LLMGEN_TOFU_ANSWER_TAG``
    pick the model family's template and where its answer tag goes (defaults: ``default``, ``context``)."""
    logs = os.environ.get("LLMGEN_TOFU_RETAIN_LOGS")
    return tofu_task(tofu_data_source(), forget_split, ds_size=env_ds_size(),
                     retain_ratios=load_retain_logs(logs) if logs else None,
                     prompt_template=os.environ.get("LLMGEN_TOFU_PROMPT_TEMPLATE") or DEFAULT_TEMPLATE,
                     answer_tag=os.environ.get("LLMGEN_TOFU_ANSWER_TAG") or DEFAULT_ANSWER_TAG)
