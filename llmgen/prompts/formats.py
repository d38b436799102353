"""The prompt-format grammar of FormatSpread (Sclar et al., ICLR 2024), usable for any task.

A prompt's *layout* says what it contains; a ``Format`` says how it is spelled. As in the reference
grammar (msclar/formatspread, ``grammar_definition.py``) a layout is a tree:

- ``Field(descriptor, key, suffix, prefix)``: ``casing(descriptor) + separator + prefix + text + suffix`` (the
  reference's ``SimplePromptFormat``); an empty descriptor renders the text alone
  (``NoTextPromptFormat``); ``suffix`` is fixed text that follows the value in every format (the
  ``?`` of ``Question: {{question}}?``).
- ``Text(text)``: fixed text every format writes as is (a preamble, a line such as ``Choices:``).
- ``Header(descriptor)``: a descriptor without text, e.g. "Options" above an enumeration.
- ``Enumeration(key, descriptor)``: items ``casing(d) + option_separator + wrapper(number(i)) +
  separator + text`` joined by the enumeration's own item spacing (``NewEnumerationPromptFormat``);
  it has its own wrapper, numbering, item spacing and option separator, and its own separator and
  casing unless it shares the layout's.
- ``Group(name, elements)``: elements joined by the group's own spacing (a nested
  ``SpacingBetweenPromptComponents``), optionally restricted to whitespace-only spacings.
- the output field ``casing(output) + separator + answer``, last.

The top-level elements are joined by ``space``. ``separator`` and ``casing`` are shared by every
element that does not own them (the reference's ``SharedPropertyAmongPrompts``). A ``Format`` maps
*slots* to values: ``separator``, ``space``, ``casing``, ``<group>.space`` and, per enumeration
``<key>``, ``<key>.item_space``, ``<key>.wrapper``, ``<key>.numbering``, ``<key>.option_separator``
and, when owned, ``<key>.separator`` / ``<key>.casing``. Formats that differ in one slot are
"atomic perturbations" of each other. Sampled sets are distinct value assignments, as the
reference's (``sample_formats``); two assignments may render the same template (``Format.template``).

Typical use::

    layout = Layout(fields=(Field("Question", "question"),), output="Answer")
    formats = sample_formats(layout, k, seed=0)          # formats[0] is the original
    text = build_prompt(formats[i], layout, instruction, demos=[(values, answer)], query=values)
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmgen.errors import LlmgenError
from llmgen.io import atomic_write_json, read_json

# Value sets of the reference grammar (grammar_definition.py), in its order; the reference lists " -- "
# twice among the spaces, so a drawn space is " -- " with P = 2/16 (``sample_formats``).
SEPARATORS = ("", "::: ", ":: ", ": ", " \n\t", "\n    ", " : ", " - ", " ", "\n ", "\n\t", ":", "::",
              "- ", "\t")
SPACES = ("", " ", "\n", " \n", " -- ", "  ", "; \n", " || ", " <sep> ", " -- ", ", ", " \n ", " , ", "\n ",
          ". ", " ,  ")
OPTION_SEPARATORS = ("", " ", "  ", "\t")
CASINGS = ("identity", "title", "upper", "lower")
WRAPPERS = ("(x)", "x.", "x)", "x )", "[x]", "<x>")
# arabic, upper/lower letters, Unicode Roman numerals (U+2160.., at most 12), lower/upper roman
NUMBERINGS = ("1", "A", "a", "Ⅰ", "i", "I")

ROMAN = ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii", "xiii", "xiv", "xv")
_CASE = {"identity": lambda s: s, "title": str.title, "upper": str.upper, "lower": str.lower}
_LIMITS = {"1": 10**6, "A": 26, "a": 26, "Ⅰ": 12, "i": len(ROMAN), "I": len(ROMAN)}

# The value set of a slot, by the slot's last name part.
VALUES: dict[str, tuple[str, ...]] = {
    "separator": SEPARATORS, "space": SPACES, "casing": CASINGS, "item_space": SPACES,
    "option_separator": OPTION_SEPARATORS, "wrapper": WRAPPERS, "numbering": NUMBERINGS,
}
# Values a slot takes when a format does not set it (option_separator depends on the descriptor).
DEFAULTS = {"separator": ": ", "space": "\n", "casing": "identity", "item_space": " ", "wrapper": "(x)",
            "numbering": "1"}


def number(numbering: str, index: int) -> str:
    """The label of item ``index`` (0-based) under a numbering: 1, A, a, Ⅰ, i or I."""
    if numbering not in _LIMITS:
        raise LlmgenError(f"unknown numbering {numbering!r} (known: {', '.join(NUMBERINGS)})")
    if not 0 <= index < _LIMITS[numbering]:
        raise LlmgenError(f"numbering {numbering!r} cannot label option {index + 1} (at most {_LIMITS[numbering]})")
    if numbering == "1":
        return str(index + 1)
    if numbering in ("A", "a"):
        return chr(ord(numbering) + index)
    if numbering == "Ⅰ":
        return chr(0x2160 + index)
    return ROMAN[index].upper() if numbering == "I" else ROMAN[index]


def _kind(slot: str) -> str:
    return slot.rsplit(".", 1)[-1]


def _check_value(slot: str, value: str) -> None:
    kind = _kind(slot)
    if kind not in VALUES:
        raise LlmgenError(f"unknown format attribute {slot!r} (known kinds: {', '.join(VALUES)})")
    if not isinstance(value, str):
        raise LlmgenError(f"format {slot} must be a string, got {value!r}")
    if kind in ("casing", "numbering") and value not in VALUES[kind]:
        raise LlmgenError(f"unknown {kind} {value!r} (known: {', '.join(map(repr, VALUES[kind]))})")
    if kind == "wrapper" and "x" not in value:
        raise LlmgenError(f"wrapper {value!r} must hold an 'x' where the number goes")


# --- layout: what a prompt contains -----------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """An input field: ``descriptor`` names it in the prompt, ``key`` names its text in an example.

    An empty descriptor renders the text alone (no separator), like SNI's unformatted inputs;
    ``suffix`` is fixed text written right after the value (a prompt read from someone else's
    template keeps it in every format).
    """

    descriptor: str
    key: str
    suffix: str = ""
    prefix: str = ""  # fixed text between the separator and the value


@dataclass(frozen=True)
class Text:
    """Fixed text, written as is in every format (joined to its neighbours by the layout's spacing)."""

    text: str


@dataclass(frozen=True)
class Header:
    """A descriptor-only element (e.g. "Options" above an enumeration): ``casing(d) + separator``."""

    descriptor: str


@dataclass(frozen=True)
class Enumeration:
    """The items of the list ``example[key]``, each prefixed by ``descriptor`` and its number.

    ``numbers`` fixes the (0-based) number of each item (SNI task065 lists sentences 1, 3, 4, 5);
    ``sizes`` are the item counts a task's raw text may hold (used when parsing, largest first).
    ``own_separator``/``own_casing``: the item separator / descriptor casing are this enumeration's
    own slots rather than the layout's shared ones.
    """

    key: str
    descriptor: str = ""
    own_separator: bool = True
    own_casing: bool = False
    numbers: tuple[int, ...] = ()
    sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "numbers", tuple(self.numbers))
        object.__setattr__(self, "sizes", tuple(self.sizes))

    def slot(self, kind: str) -> str:
        return f"{self.key}.{kind}"

    @property
    def template_size(self) -> int:
        return len(self.numbers) or max(self.sizes, default=3)


@dataclass(frozen=True)
class Group:
    """Elements joined by their own spacing ``<name>.space``; ``whitespace_only`` restricts it to
    non-empty whitespace (the reference's ``allow_only_non_char_spaces``)."""

    name: str
    elements: tuple
    whitespace_only: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "elements", tuple(self.elements))


Element = Field | Header | Enumeration | Group | Text


def walk(elements: Sequence[Element]) -> Iterator[Element]:
    """Every element of a tree, depth first, groups before their children."""
    for e in elements:
        yield e
        if isinstance(e, Group):
            yield from walk(e.elements)


@dataclass(frozen=True)
class Layout:
    """The elements of one prompt, in order, then the output field (``output`` is its descriptor).

    ``fixed`` names slots that sampling never varies (a reference structure whose shared
    properties are not part of its search space, e.g. SNI task220).
    """

    fields: tuple
    output: str = "Answer"
    fixed: tuple[str, ...] = ()
    output_text: str = ""  # fixed text between the output's separator and the answer ("Let's think step by step. ")

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))
        object.__setattr__(self, "fixed", tuple(self.fixed))
        if not self.fields:
            raise LlmgenError("a prompt layout needs at least one input field")
        names = []
        for e in walk(self.fields):
            if not isinstance(e, Field | Header | Enumeration | Group | Text):
                raise LlmgenError(f"layout element must be Field, Header, Enumeration, Group or Text, got {type(e).__name__}")
            if isinstance(e, Group):
                if not e.elements:
                    raise LlmgenError(f"group {e.name!r} has no elements")
                names.append(e.name)
            elif isinstance(e, Enumeration):
                names.append(e.key)
        if len(set(names)) != len(names):
            raise LlmgenError(f"layout group names and enumeration keys must be unique, got {names}")

    @property
    def enumerations(self) -> list[Enumeration]:
        return [e for e in walk(self.fields) if isinstance(e, Enumeration)]

    @property
    def options(self) -> Enumeration | None:
        """The last enumeration (the answer options of a multiple-choice layout), if any."""
        enums = self.enumerations
        return enums[-1] if enums else None

    def enumeration(self, key: str) -> Enumeration:
        for e in self.enumerations:
            if e.key == key:
                return e
        raise LlmgenError(f"layout has no enumeration {key!r}")

    def _uses_shared(self, kind: str) -> bool:
        if self.output:
            return True
        for e in walk(self.fields):
            if isinstance(e, Header) or (isinstance(e, Field) and e.descriptor):
                return True
            if isinstance(e, Enumeration) and not (e.own_separator if kind == "separator" else e.own_casing):
                if kind == "separator" or e.descriptor:
                    return True
        return False

    def slots(self) -> tuple[str, ...]:
        """Every slot this layout reads, shared ones first."""
        out = ["separator", "space", "casing"]
        for e in walk(self.fields):
            if isinstance(e, Group):
                out.append(f"{e.name}.space")
            elif isinstance(e, Enumeration):
                out += [e.slot(k) for k in ("item_space", "option_separator", "wrapper", "numbering")]
                out += [e.slot("separator")] if e.own_separator else []
                out += [e.slot("casing")] if e.own_casing else []
        return tuple(out)

    def relevant_attributes(self) -> tuple[str, ...]:
        """The slots sampling varies: those that can change this layout's rendering, minus ``fixed``.

        As the reference's ``attributes_under_control``: an enumeration without a descriptor has
        no casing or option separator to vary; shared properties exist when some element uses them.
        """
        attrs = ["separator"] if self._uses_shared("separator") else []
        attrs.append("space")
        if self._uses_shared("casing") and (self.output or any(
                getattr(e, "descriptor", "") for e in walk(self.fields))):
            attrs.append("casing")
        for e in walk(self.fields):
            if isinstance(e, Group):
                attrs.append(f"{e.name}.space")
            elif isinstance(e, Enumeration):
                attrs += [e.slot("item_space"), e.slot("wrapper"), e.slot("numbering")]
                attrs += [e.slot("separator")] if e.own_separator else []
                if e.descriptor:
                    attrs += [e.slot("option_separator")] + ([e.slot("casing")] if e.own_casing else [])
        return tuple(a for a in attrs if a not in self.fixed)

    def to_dict(self) -> dict:
        out = {"fields": [_element_dict(f) for f in self.fields], "output": self.output, "fixed": list(self.fixed)}
        return {**out, "output_text": self.output_text} if self.output_text else out

    @classmethod
    def from_dict(cls, d: Mapping) -> Layout:
        try:
            return cls(fields=tuple(_element_from(f) for f in d["fields"]), output=d["output"],
                       fixed=tuple(d.get("fixed", ())), output_text=d.get("output_text", ""))
        except (KeyError, TypeError) as e:
            raise LlmgenError(f"malformed layout description: {e}") from None


_KINDS = {"Field": Field, "Header": Header, "Enumeration": Enumeration, "Options": Enumeration, "Group": Group,
          "Text": Text}


def _element_dict(e: Element) -> dict:
    if isinstance(e, Group):
        return {"type": "Group", "name": e.name, "elements": [_element_dict(x) for x in e.elements],
                "whitespace_only": e.whitespace_only}
    d = asdict(e)
    for k in ("numbers", "sizes"):
        if k in d:
            d[k] = list(d[k])
    return {"type": type(e).__name__, **d}


def _element_from(d: Mapping) -> Element:
    kind = _KINDS[d["type"]]
    args = {k: v for k, v in d.items() if k != "type"}
    if kind is Group:
        args["elements"] = tuple(_element_from(x) for x in args["elements"])
    return kind(**args)


# --- format: how a prompt is spelled ----------------------------------------------------------------

@dataclass(frozen=True)
class Format:
    """One assignment of the grammar's slots; unset slots take ``DEFAULTS`` (the plain format).

    ``Format(separator=" - ", space=" || ")`` sets shared slots; per-element slots go in a mapping:
    ``Format({"options.wrapper": "[x]"}, casing="upper")``.
    """

    values: tuple[tuple[str, str], ...] = field(default=())

    def __init__(self, values: Mapping[str, str] | Sequence[tuple[str, str]] = (), **kw: str) -> None:
        merged = {**dict(values), **kw}
        for slot, v in merged.items():
            _check_value(slot, v)
        canon = {k: v for k, v in merged.items() if DEFAULTS.get(_kind(k)) != v}
        object.__setattr__(self, "values", tuple(sorted(canon.items())))

    @classmethod
    def original(cls) -> Format:
        """``Descriptor: text`` fields on separate lines, enumerations as ``(1) text (2) text``."""
        return cls()

    def get(self, slot: str, default: str | None = None) -> str | None:
        return dict(self.values).get(slot, DEFAULTS.get(_kind(slot), default))

    def __getitem__(self, slot: str) -> str:
        value = self.get(slot)
        if value is None:
            raise LlmgenError(f"format has no value for {slot!r}")
        return value

    def __getattr__(self, name: str) -> str:  # fmt.separator, fmt.casing, ... for shared slots
        if name.startswith("_") or name not in DEFAULTS:
            raise AttributeError(name)
        return self[name]

    def settings(self, layout: Layout) -> dict[str, str]:
        """The effective value of every slot of ``layout`` (defaults filled in)."""
        out = {}
        for slot in layout.slots():
            if _kind(slot) == "option_separator":
                out[slot] = self._enum_value(layout.enumeration(slot.rsplit(".", 1)[0]), "option_separator")
            else:
                out[slot] = self[slot]
        return out

    def replace(self, changes: Mapping[str, str]) -> Format:
        return Format({**dict(self.values), **changes})

    def case(self, descriptor: str, slot: str = "casing") -> str:
        return _CASE[self[slot]](descriptor)

    def _enum_value(self, e: Enumeration, kind: str) -> str:
        if kind == "separator" and not e.own_separator:
            return self["separator"]
        if kind == "casing" and not e.own_casing:
            return self["casing"]
        if kind == "option_separator":
            return self.get(e.slot(kind), " " if e.descriptor else "")
        return self[e.slot(kind)]

    def option_label(self, index: int, enumeration: Enumeration | None = None) -> str:
        """The answer string of item ``index`` (the number, unwrapped) of an enumeration."""
        if enumeration is None:
            return number(self.get("options.numbering"), index)
        n = enumeration.numbers[index] if enumeration.numbers else index
        return number(self._enum_value(enumeration, "numbering"), n)

    def _render_enumeration(self, e: Enumeration, items: Sequence) -> str:
        if e.numbers and len(e.numbers) != len(items):
            raise LlmgenError(f"enumeration {e.key!r} numbers {len(e.numbers)} items, the example has {len(items)}")
        prefix = _CASE[self._enum_value(e, "casing")](e.descriptor) + self._enum_value(e, "option_separator")
        wrapper, sep = self._enum_value(e, "wrapper"), self._enum_value(e, "separator")
        return self._enum_value(e, "item_space").join(
            prefix + wrapper.replace("x", self.option_label(i, e), 1) + sep + str(t) for i, t in enumerate(items))

    def _render_element(self, e: Element, values: Mapping) -> str:
        if isinstance(e, Header):
            return self.case(e.descriptor) + self["separator"]
        if isinstance(e, Text):
            return e.text
        if isinstance(e, Field):
            text = e.prefix + _value(values, e.key, str) + e.suffix
            return self.case(e.descriptor) + self["separator"] + text if e.descriptor else text
        if isinstance(e, Enumeration):
            return self._render_enumeration(e, _value(values, e.key, list))
        return self[f"{e.name}.space"].join(self._render_element(x, values) for x in e.elements)

    def render(self, layout: Layout, values: Mapping[str, str | Sequence[str]], answer: str | None = None,
               output: bool = True) -> str:
        """The fields of one example and (``output``) the output field, left empty when ``answer`` is None."""
        parts = [self._render_element(e, values) for e in layout.fields]
        if output:
            out = self.case(layout.output) + self["separator"] + layout.output_text if layout.output else ""
            parts.append(out + (answer or ""))
        return self["space"].join(parts)

    def template(self, layout: Layout) -> str:
        """The format's identity for this layout: every text (and the answer) rendered as ``{}``."""
        return self.render(layout, placeholder_values(layout, "{}"), answer="{}")

    def instruction(self, text: str, layout: Layout) -> str:
        """``text`` with ``{<enumeration key>_<i>}`` replaced by item i's number in this format.

        The reference writes multiple-choice instructions this way ("answer '{enum1_1}' or
        '{enum1_2}'") so that they name the options as the format numbers them.
        """
        enums = {e.key: e for e in layout.enumerations}

        def sub(m: re.Match) -> str:
            e = enums.get(m.group(1))
            if e is None:
                return m.group(0)
            return self.option_label(int(m.group(2)) - 1, e)

        return re.sub(r"\{(\w+?)_(\d+)\}", sub, text)

    def to_dict(self) -> dict[str, str]:
        return dict(self.values)

    @classmethod
    def from_dict(cls, d: Mapping[str, str]) -> Format:
        return cls(d)


def placeholder_values(layout: Layout, text: str) -> dict:
    """Example values that put ``text`` in every field and every enumeration item."""
    out: dict = {}
    for e in walk(layout.fields):
        if isinstance(e, Field):
            out[e.key] = text
        elif isinstance(e, Enumeration):
            out[e.key] = [text] * e.template_size
    return out


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

def _separator_of(fmt: Format, e: Element, output: bool = False) -> str | None:
    """The separator an element prints between descriptor and text (None: it has none to check)."""
    if output or (isinstance(e, Field) and e.descriptor):
        return fmt["separator"]
    if isinstance(e, Enumeration):
        return fmt._enum_value(e, "separator")
    return None


def _spacing_problem(fmt: Format, elements: Sequence, space: str, whitespace_only: bool, prohibit: bool,
                     output: bool) -> str | None:
    """The reference's holistic checks for one spacing (the root or a group) and its subtree."""
    if whitespace_only and not space.isspace():
        return "this group's spacing must be whitespace"
    kids = list(elements) + (["output"] if output else [])
    if space == "" and not all(isinstance(e, Header) for e in kids[:-1]):
        return "an empty space may only follow descriptor-only fields"
    prohibit = prohibit or "\n" not in space
    for e in kids:
        if isinstance(e, Group):
            problem = _spacing_problem(fmt, e.elements, fmt[f"{e.name}.space"], e.whitespace_only, prohibit, False)
            if problem:
                return problem
            continue
        sep = _separator_of(fmt, e, output=e == "output")
        if prohibit and sep is not None and "\n" in sep:
            return "fields on one line cannot split a descriptor from its text with a newline"
    return None


def implausibility(fmt: Format, layout: Layout) -> str | None:
    """Why a format looks broken for this layout (the reference's rules), or None when it is plausible.

    The rules exclude formats no human would write, e.g. ``Input<text>`` (empty separator), a
    newline inside enumerated items that are on one line, or a descriptor split from its text by
    a newline while the fields themselves share one line.
    """
    shared_users = [e for e in walk(layout.fields) if isinstance(e, Header) or (isinstance(e, Field) and e.descriptor)]
    if (shared_users or layout.output) and fmt["separator"] == "":
        return "a field's separator is never empty"
    for e in layout.enumerations:
        if ("\n" in fmt._enum_value(e, "separator") or "\n" in fmt._enum_value(e, "option_separator")) \
                and "\n" not in fmt._enum_value(e, "item_space"):
            return "a newline inside enumerated options needs a newline between options"
    return _spacing_problem(fmt, layout.fields, fmt["space"], False, False, output=True)


def is_plausible(fmt: Format, layout: Layout) -> bool:
    return implausibility(fmt, layout) is None


# --- sampling ---------------------------------------------------------------------------------------

def sample_formats(layout: Layout, n: int, seed: int = 0, original: Format | None = None,
                   max_tries: int = 1000) -> list[Format]:
    """The original, then up to ``n - 1`` distinct plausible value assignments, drawn as FormatSpread's
    ``main.py`` (``_sample_value_assignments``) draws them.

    When the grammar's choices have at most ``n - 1`` combinations (counted over the value lists as
    the reference lists them: " -- " twice among the spaces), every plausible assignment is taken.
    Otherwise each slot's value is drawn uniformly from its list (so " -- " with P = 2/16), an
    implausible assignment is rejected and one already drawn is drawn again, until ``n - 1`` distinct
    assignments. Assignments, not rendered templates, are distinct (two assignments that render the
    same template, e.g. ``title`` casing of "Review", both count), as in the reference. Unlike the
    reference, the original's own assignment is not drawn again, and the loop stops after
    ``max_tries * n`` draws (the reference loops forever when too few assignments are plausible).
    Slots that cannot change this layout keep the original's values.
    """
    if n < 1:
        raise LlmgenError(f"number of formats must be >= 1, got {n}")
    original = original or Format.original()
    attrs = layout.relevant_attributes()
    choices = [VALUES[_kind(a)] for a in attrs]
    rng = random.Random(seed)
    seen = {tuple(original.settings(layout).get(a) for a in attrs)}
    combinations = math.prod(len(c) for c in choices)

    def keep(choice: tuple[str, ...]) -> Format | None:
        fmt = original.replace(dict(zip(attrs, choice, strict=True)))
        if choice in seen or not is_plausible(fmt, layout):
            return None
        seen.add(choice)
        return fmt

    if combinations <= n - 1:
        return [original, *(f for f in map(keep, itertools.product(*choices)) if f is not None)]
    out = [original]
    for _ in range(max_tries * n):
        if len(out) == n:
            break
        fmt = keep(tuple(rng.choice(c) for c in choices))
        if fmt is not None:
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


# --- prompt assembly ---------------------------------------------------------------------------------

def build_prompt(fmt: Format, layout: Layout, instruction: str,
                 demos: Sequence[tuple[Mapping, str]], query: Mapping) -> str:
    """instruction + "\\n\\n" + demonstrations (same format) joined by "\\n\\n" + "\\n\\n" + query.

    The query ends at the empty output field (e.g. ``...\\nAnswer: ``), as in the reference code;
    the instruction's ``{<enumeration>_<i>}`` placeholders name the options as this format does.
    Empty parts are skipped rather than leaving runs of blank lines.
    """
    blocks = [fmt.instruction(instruction, layout)] if instruction else []
    blocks += [fmt.render(layout, values, answer) for values, answer in demos]
    blocks.append(fmt.render(layout, query))
    return "\n\n".join(blocks)


def _descriptor_spelling(stop: str, layout: Layout, original: Format, fmt: Format) -> str | None:
    """``stop`` spelled in ``fmt`` when it is the original format's spelling of a descriptor (see
    ``format_stops``), else None."""
    core = stop.lstrip()
    if not core:
        return None
    lead, sep, new_sep = stop[:len(stop) - len(core)], original["separator"], fmt["separator"]
    names = [e.descriptor for e in walk(layout.fields) if isinstance(e, Field | Header) and e.descriptor]
    for name in names + ([layout.output] if layout.output else []):
        spelled = original.case(name)
        if not core.startswith(spelled):
            continue
        tail = core[len(spelled):]
        if tail == sep and sep != sep.rstrip():  # "Question: " (the separator's whitespace included)
            return lead + fmt.case(name) + new_sep
        if tail == sep.rstrip():  # "Question:": the separator's visible part
            if tail and not new_sep.strip():  # fmt's separator is whitespace: the descriptor at a line start
                return lead + ("" if "\n" in lead else "\n") + fmt.case(name)
            return lead + fmt.case(name) + new_sep.rstrip()
        if not tail:  # "Question" alone
            return lead + fmt.case(name)
    return None


def format_stops(stops: Sequence[str], layout: Layout, original: Format, fmt: Format) -> tuple[str, ...]:
    """The stop strings of a task written for its ``original`` format, for a run in ``fmt``.

    A generation task stops where the model starts the next example, and its stops spell that
    start in the task's own format (lm-eval's gsm8k: ``until: ["Question:", ...]``). In a format that
    writes ``QUESTION::`` the model starts its made-up next example that way, so the original stops
    never fire and every response runs to the token limit. Each stop that is the original spelling of
    a descriptor of ``layout`` (an input field's, a header's or the output's: casing + separator,
    the separator whole, without its trailing whitespace, or left out), after leading whitespace
    (``"\\n\\nProblem:"``, kept), gets ``fmt``'s spelling of the same part added. Where ``fmt``'s
    separator is whitespace only, the stop for ``Question:`` is the descriptor at the start of a line
    (``"\\nquestion"``): the word alone would cut a response that writes "the question is", and each
    example of a prompt starts on a new line. Stops that spell no descriptor (EOS texts, ``"\\n\\n"``)
    are kept as they are.

    The original stops are kept too (supplemented, not replaced): every format then stops wherever
    the original format stops (a model that falls back to ``Question:`` is cut as format 0 would
    cut it), so formats differ by their spelling alone, and ``fmt == original`` gives ``stops``
    unchanged, byte for byte (lm-eval's own ``until`` for format 0).
    """
    out = list(stops)
    for stop in stops:
        spelled = _descriptor_spelling(stop, layout, original, fmt)
        if spelled is not None and spelled not in out:
            out.append(spelled)
    return tuple(out)


# --- parsing raw text in a layout's original format --------------------------------------------------

_MARK = "\x00{}\x00"


def parse_regexes(layout: Layout, fmt: Format) -> list[tuple[re.Pattern, list[tuple[str, int | None]]]]:
    """Regexes that read a raw input written in ``fmt`` back into field values, longest first.

    Each text becomes a greedy group, anchored at both ends, as the reference's ``extract_regex``
    (the reference limits the group to a fixed character class; any character is accepted here).
    One regex per combination of enumeration sizes (``Enumeration.sizes``), most items first.
    """
    enums = layout.enumerations
    size_sets = [e.sizes or (e.template_size,) for e in enums]
    combos = sorted(itertools.product(*size_sets), key=lambda c: -sum(c))
    out = []
    for combo in combos:
        marks: list[tuple[str, int | None]] = []
        values: dict = {}
        sizes = dict(zip((e.key for e in enums), combo, strict=True))
        for e in walk(layout.fields):
            if isinstance(e, Field):
                values[e.key] = _MARK.format(len(marks))
                marks.append((e.key, None))
            elif isinstance(e, Enumeration):
                values[e.key] = []
                for i in range(sizes[e.key]):
                    values[e.key].append(_MARK.format(len(marks)))
                    marks.append((e.key, i))
        if any(e.numbers and len(e.numbers) != sizes[e.key] for e in enums):
            continue
        text = fmt.render(layout, values, output=False)
        order = [int(m) for m in re.findall("\x00(\\d+)\x00", text)]
        pattern = re.escape(text)
        for k in order:
            pattern = pattern.replace(re.escape(_MARK.format(k)), "(.+)", 1)
        out.append((re.compile("^" + pattern + "$", re.DOTALL), [marks[k] for k in order]))
    return out


def parse_input(text: str, layout: Layout, fmt: Format) -> dict | None:
    """The example values of a raw input written in ``fmt``, or None when it does not match."""
    for regex, marks in parse_regexes(layout, fmt):
        m = regex.match(text)
        if not m:
            continue
        values: dict = {}
        for (key, item), group in zip(marks, m.groups(), strict=True):
            if item is None:
                values[key] = group
            else:
                values.setdefault(key, []).append(group)
        return values
    return None
