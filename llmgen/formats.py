"""The prompt-format grammar of FormatSpread (Sclar et al., ICLR 2024), usable for any task.

A prompt's *layout* says what it contains (fields with descriptors, an optional enumeration of
options, an output field); a ``Format`` says how it is spelled. A field renders as
``casing(descriptor) + separator + text``; elements are joined by ``space``; an enumeration renders
each option as ``casing(descriptor) + option_separator + wrapper(number(i)) + separator + text``,
joined by ``option_space``. One separator and one casing are shared by every field, as in the
paper, so a format is a handful of choices and formats that differ in one choice are "atomic
perturbations" of each other.

Two formats are the same when they render the same template string (``Format.template``), so
sampled sets are deduplicated by that string: different choices can coincide, e.g. casings of a
descriptor that is all digits.

Typical use by an eval layer that wants a task in K formats::

    layout = Layout(fields=(Field("Question", "question"),), output="Answer")
    formats = sample_formats(layout, k, seed=0)          # formats[0] is Format.original()
    text = build_prompt(formats[i], layout, instruction, demos=[(values, answer)], query=values)
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from llmgen.errors import LlmgenError
from llmgen.io import atomic_write_json, read_json

# Value sets of the paper's grammar (reference code: msclar/formatspread, grammar_definition.py).
SEPARATORS = ("", "::: ", ":: ", ": ", " \n\t", "\n    ", " : ", " - ", " ", "\n ", "\n\t", ":", "::",
              "- ", "\t")
SPACES = ("", " ", "\n", " \n", " -- ", "  ", "; \n", " || ", " <sep> ", ", ", " \n ", " , ", "\n ", ". ",
          " ,  ")
OPTION_SEPARATORS = ("", " ", "  ", "\t")
CASINGS = ("identity", "title", "upper", "lower")
WRAPPERS = ("(x)", "x.", "x)", "x )", "[x]", "<x>")
NUMBERINGS = ("1", "A", "a", "I", "i")  # arabic, upper/lower letters, upper/lower roman numerals

ROMAN = ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii", "xiii", "xiv", "xv")
_CASE = {"identity": lambda s: s, "title": str.title, "upper": str.upper, "lower": str.lower}


def number(numbering: str, index: int) -> str:
    """The label of option ``index`` (0-based) under a numbering: 1, A, a, I or i."""
    limits = {"1": 10**6, "A": 26, "a": 26, "I": len(ROMAN), "i": len(ROMAN)}
    if numbering not in limits:
        raise LlmgenError(f"unknown numbering {numbering!r} (known: {', '.join(NUMBERINGS)})")
    if not 0 <= index < limits[numbering]:
        raise LlmgenError(f"numbering {numbering!r} cannot label option {index + 1} (at most {limits[numbering]})")
    if numbering == "1":
        return str(index + 1)
    if numbering in ("A", "a"):
        return chr(ord(numbering) + index)
    return ROMAN[index].upper() if numbering == "I" else ROMAN[index]


# --- layout: what a prompt contains -----------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """An input field: ``descriptor`` names it in the prompt, ``key`` names its text in an example.

    An empty descriptor renders the text alone (no separator), like SNI's unformatted inputs.
    """

    descriptor: str
    key: str


@dataclass(frozen=True)
class Header:
    """A descriptor-only element (e.g. "Options" above an enumeration): ``casing(d) + separator``."""

    descriptor: str


@dataclass(frozen=True)
class Options:
    """An enumeration of the list ``example[key]``; ``descriptor`` (e.g. "Option") prefixes each item."""

    key: str
    descriptor: str = ""


Element = Field | Header | Options


@dataclass(frozen=True)
class Layout:
    """The elements of one prompt, in order, then the output field (``output`` is its descriptor)."""

    fields: tuple[Element, ...]
    output: str = "Answer"

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))
        if not self.fields:
            raise LlmgenError("a prompt layout needs at least one input field")
        for f in self.fields:
            if not isinstance(f, Field | Header | Options):
                raise LlmgenError(f"layout element must be Field, Header or Options, got {type(f).__name__}")
        if sum(isinstance(f, Options) for f in self.fields) > 1:
            raise LlmgenError("a layout holds at most one Options enumeration")

    @property
    def options(self) -> Options | None:
        return next((f for f in self.fields if isinstance(f, Options)), None)

    def relevant_attributes(self) -> tuple[str, ...]:
        """The Format attributes that can change this layout's rendering (the others are inert)."""
        attrs = ["separator", "space"]
        descriptors = [f.descriptor for f in self.fields if not isinstance(f, Options)] + [self.output]
        opts = self.options
        if opts is not None:
            descriptors.append(opts.descriptor)
            attrs += ["option_space", "wrapper", "numbering"] + (["option_separator"] if opts.descriptor else [])
        if any(descriptors):
            attrs.append("casing")
        return tuple(a for a in ATTRIBUTES if a in attrs)

    def to_dict(self) -> dict:
        return {"fields": [{"type": type(f).__name__, **asdict(f)} for f in self.fields], "output": self.output}

    @classmethod
    def from_dict(cls, d: Mapping) -> Layout:
        kinds = {"Field": Field, "Header": Header, "Options": Options}
        try:
            elems = [kinds[f["type"]](**{k: v for k, v in f.items() if k != "type"}) for f in d["fields"]]
            return cls(fields=tuple(elems), output=d["output"])
        except (KeyError, TypeError) as e:
            raise LlmgenError(f"malformed layout description: {e}") from None


# --- format: how a prompt is spelled ----------------------------------------------------------------

@dataclass(frozen=True)
class Format:
    """One assignment of the grammar's choices. The defaults are the "original" plain format."""

    separator: str = ": "
    space: str = "\n"
    casing: str = "identity"
    option_space: str = " "
    option_separator: str = " "
    wrapper: str = "(x)"
    numbering: str = "A"

    def __post_init__(self) -> None:
        for name, known in (("casing", CASINGS), ("wrapper", WRAPPERS), ("numbering", NUMBERINGS)):
            if getattr(self, name) not in known:
                raise LlmgenError(f"unknown {name} {getattr(self, name)!r} (known: {', '.join(map(repr, known))})")
        for name in ("separator", "space", "option_space", "option_separator"):
            if not isinstance(getattr(self, name), str):
                raise LlmgenError(f"format {name} must be a string, got {getattr(self, name)!r}")

    @classmethod
    def original(cls) -> Format:
        """``Descriptor: text`` fields on separate lines, options as ``(A) text (B) text``."""
        return cls()

    def case(self, descriptor: str) -> str:
        return _CASE[self.casing](descriptor)

    def wrap(self, label: str) -> str:
        return self.wrapper.replace("x", label, 1)

    def option_label(self, index: int) -> str:
        """The answer string of option ``index`` in this format (the number, unwrapped)."""
        return number(self.numbering, index)

    def render(self, layout: Layout, values: Mapping[str, str | Sequence[str]], answer: str | None = None) -> str:
        """The fields of one example; the output field is left empty when ``answer`` is None."""
        parts = []
        for f in layout.fields:
            if isinstance(f, Header):
                parts.append(self.case(f.descriptor) + self.separator)
            elif isinstance(f, Field):
                text = _value(values, f.key, str)
                parts.append(self.case(f.descriptor) + self.separator + text if f.descriptor else text)
            else:
                items = _value(values, f.key, list)
                prefix = self.case(f.descriptor) + self.option_separator if f.descriptor else ""
                parts.append(self.option_space.join(
                    prefix + self.wrap(self.option_label(i)) + self.separator + str(t) for i, t in enumerate(items)))
        out = self.case(layout.output) + self.separator if layout.output else ""
        parts.append(out + (answer or ""))
        return self.space.join(parts)

    def template(self, layout: Layout, num_options: int = 3) -> str:
        """The format's identity for this layout: every text (and the answer) rendered as ``{}``."""
        values = {f.key: "{}" if isinstance(f, Field) else ["{}"] * num_options
                  for f in layout.fields if not isinstance(f, Header)}
        return self.render(layout, values, answer="{}")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, str]) -> Format:
        unknown = set(d) - set(ATTRIBUTES)
        if unknown:
            raise LlmgenError(f"unknown format attribute {sorted(unknown)[0]!r} (known: {', '.join(ATTRIBUTES)})")
        return cls(**d)


ATTRIBUTES = tuple(f.name for f in fields(Format))
VALUES: dict[str, tuple[str, ...]] = {
    "separator": SEPARATORS, "space": SPACES, "casing": CASINGS, "option_space": SPACES,
    "option_separator": OPTION_SEPARATORS, "wrapper": WRAPPERS, "numbering": NUMBERINGS,
}


def _value(values: Mapping, key: str, kind: type):
    if key not in values:
        raise LlmgenError(f"example has no field {key!r} needed by the prompt layout")
    v = values[key]
    if kind is str and not isinstance(v, str):
        raise LlmgenError(f"field {key!r} must be a string, got {type(v).__name__}")
    if kind is list and (isinstance(v, str) or not isinstance(v, Sequence) or not v):
        raise LlmgenError(f"options field {key!r} must be a non-empty list of strings")
    return v


# --- plausibility ----------------------------------------------------------------------------------

def implausibility(fmt: Format, layout: Layout) -> str | None:
    """Why a format looks broken for this layout (the paper's rules), or None when it is plausible.

    The rules exclude formats no human would write, e.g. ``Input<text>`` (empty separator) or a
    descriptor split from its text by a newline while the fields themselves share one line.
    """
    elements = [*layout.fields, "output"]
    uses_separator = any(isinstance(f, Header | Options) or (isinstance(f, Field) and f.descriptor)
                         for f in layout.fields) or bool(layout.output)
    if uses_separator and fmt.separator == "":
        return "a field's separator is never empty"
    opts = layout.options
    if opts is not None:
        option_sep = fmt.option_separator if opts.descriptor else ""
        if ("\n" in fmt.separator or "\n" in option_sep) and "\n" not in fmt.option_space:
            return "a newline inside enumerated options needs a newline between options"
    if "\n" not in fmt.space and "\n" in fmt.separator:
        text_fields = any(isinstance(f, Options) or (isinstance(f, Field) and f.descriptor) for f in layout.fields)
        if text_fields or layout.output:
            return "fields on one line cannot split a descriptor from its text with a newline"
    if fmt.space == "" and not all(isinstance(f, Header) for f in elements[:-1]):
        return "an empty space may only follow descriptor-only fields"
    return None


def is_plausible(fmt: Format, layout: Layout) -> bool:
    return implausibility(fmt, layout) is None


# --- sampling ---------------------------------------------------------------------------------------

def sample_formats(layout: Layout, n: int, seed: int = 0, original: Format | None = None,
                   max_enumerate: int = 200_000) -> list[Format]:
    """``n`` distinct plausible formats, the original first; all of them when there are at most ``n``.

    Small spaces are enumerated, filtered and deduplicated by rendered template, then sampled
    without replacement (uniform over distinct formats). Spaces too large to enumerate are sampled
    uniformly over the grammar's choices, rejecting implausible and already seen templates.
    Attributes that cannot change this layout keep the original's values.
    """
    if n < 1:
        raise LlmgenError(f"number of formats must be >= 1, got {n}")
    original = original or Format.original()
    attrs = layout.relevant_attributes()
    rng = random.Random(seed)
    seen = {original.template(layout)}
    size = 1
    for a in attrs:
        size *= len(VALUES[a])

    def make(choice: Sequence[str]) -> Format:
        return replace(original, **dict(zip(attrs, choice, strict=True)))

    if size <= max_enumerate:
        pool = []
        for choice in itertools.product(*(VALUES[a] for a in attrs)):
            fmt = make(choice)
            key = fmt.template(layout)
            if key not in seen and is_plausible(fmt, layout):
                seen.add(key)
                pool.append(fmt)
        picked = pool if len(pool) <= n - 1 else rng.sample(pool, n - 1)
        return [original, *picked]
    out = [original]
    for _ in range(200 * n):
        if len(out) == n:
            break
        fmt = make([rng.choice(VALUES[a]) for a in attrs])
        key = fmt.template(layout)
        if key not in seen and is_plausible(fmt, layout):
            seen.add(key)
            out.append(fmt)
    return out


def save_formats(path: str | Path, formats: Sequence[Format], layout: Layout, seed: int | None = None) -> Path:
    """Write a sampled set so that every model is evaluated on the very same formats."""
    return atomic_write_json(path, {"layout": layout.to_dict(), "seed": seed,
                                    "formats": [f.to_dict() for f in formats],
                                    "templates": [f.template(layout) for f in formats]})


def load_formats(path: str | Path, layout: Layout | None = None) -> list[Format]:
    """Read a set written by ``save_formats``; with ``layout``, check it was sampled for that layout."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("formats"), list) or not data["formats"]:
        raise LlmgenError(f"{path}: expected an object with a non-empty 'formats' list")
    formats = [Format.from_dict(d) for d in data["formats"]]
    if layout is not None and "layout" in data and Layout.from_dict(data["layout"]) != layout:
        raise LlmgenError(f"{path}: formats were sampled for a different prompt layout than this task's")
    return formats


def differing_attributes(a: Format, b: Format, layout: Layout) -> list[str]:
    """The attributes (among those that matter for ``layout``) where two formats differ."""
    return [k for k in layout.relevant_attributes() if getattr(a, k) != getattr(b, k)]


# --- prompt assembly ---------------------------------------------------------------------------------

def build_prompt(fmt: Format, layout: Layout, instruction: str,
                 demos: Sequence[tuple[Mapping, str]], query: Mapping) -> str:
    """instruction + "\\n\\n" + demonstrations (same format) joined by "\\n\\n" + "\\n\\n" + query.

    The query ends at the empty output field (e.g. ``...\\nAnswer: ``), as in the reference code.
    Empty parts are skipped rather than leaving runs of blank lines.
    """
    blocks = [instruction] if instruction else []
    blocks += [fmt.render(layout, values, answer) for values, answer in demos]
    blocks.append(fmt.render(layout, query))
    return "\n\n".join(blocks)
