"""The prompt structure of a task written by someone else, read back from its own prompts.

FormatSpread varies a prompt through a layout (``llmgen.prompts.formats``): fields with descriptors,
enumerations, separators and spacings. A task written for another harness (lm-eval's catalogue) has
one prompt per document instead. This module reads the layout back from it, as the FormatSpread
reference parses each SNI task's instances into its structure: the prompt is cut into *slots* (the
document's values) and the literal text between them, and that text is read as descriptors,
separators, spacings, fixed text and option enumerations.

Two ways to find the slots:

- ``jinja_skeleton``: a Jinja template without control flow: every ``{{ expression }}`` is a slot
  (``{{question.strip()}}``, ``{{choices[0]}}``, ``{{ctxs|join('\\n')}}`` included), read per document by
  the template's own Jinja.
- ``aligned_skeleton``: anything else (a Python ``doc_to_text``, a ``{% set %}`` preamble): each
  document's field values (strings, list items, joined lists, one level of nested dicts) are found
  in the text the task renders, longest first; the text between them is the literal part.

``structure_of`` turns one skeleton into a ``Structure`` (layout, original format, the values of
each document as the layout names them); every document must give the same skeleton, and the
original format must render each document's prompt byte for byte (the caller checks against the
harness's own requests). A prompt that cannot be read raises ``LlmgenError`` naming what blocks it.

How the literal text is read: the whitespace runs holding a newline are the breaks between parts
(the grammar's ``space``: the shortest break, every break must end with it; the extra whitespace
of a longer break stays with the part before it). A part's head before its value is a descriptor
and separator (``Question: ``, possibly followed by fixed text: the field's prefix), an option label
(``A. ``, ``(b) ``; options may share a line) or nothing; text after a value on its line is the
field's fixed suffix (``?``); lines without values are fixed ``Text``.
Consecutive labelled parts numbered 0..k-1 in one numbering form an ``Enumeration`` (own wrapper,
numbering, separator and item spacing). The last part is the open output field: its descriptor and
separator, followed by the answer after the task's ``target_delimiter``; a prompt that ends at a
value joins the answer with the layout's spacing, which must then be that delimiter.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from llmgen.errors import LlmgenError
from llmgen.prompts.formats import NUMBERINGS, WRAPPERS, Enumeration, Field, Format, Layout, Text, number


@dataclass(frozen=True)
class Slot:
    """One value of a prompt: ``name`` in the layout, ``source`` how a document gives it (a Jinja
    expression, or ``(field, how)`` for a value found by alignment)."""

    name: str
    source: object


Skeleton = list  # [literal, Slot, literal, Slot, ..., literal]


@dataclass(frozen=True)
class Structure:
    """A prompt's layout and original format, and which slots fill which layout value."""

    layout: Layout
    original: Format
    slots: tuple[Slot, ...]
    enumerations: tuple[tuple[str, tuple[str, ...]], ...]  # (enumeration key, slot names of its items)

    def values(self, slot_values: Mapping[str, str | list[str]]) -> dict:
        """The layout's values from each slot's text (enumerations as lists: an item slot gives one
        item, a list slot, ``(path, "items")``, all of the document's items)."""
        out: dict = dict(slot_values)
        for key, names in self.enumerations:
            out[key] = []
            for n in names:
                v = slot_values[n]
                out[key] += v if isinstance(v, list) else [v]
        return out

    def enumeration_labels(self, key: str, size: int) -> list[str]:
        """The labels the original format gives the items of enumeration ``key``."""
        e = self.layout.enumeration(key)
        return [self.original.option_label(i, e) for i in range(size)]


# --- slots ----------------------------------------------------------------------------------------

_EXPR = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def slot_name(source: str) -> str:
    """A readable layout key for an expression: ``question.strip()`` -> ``question_strip``."""
    return re.sub(r"\W+", "_", source).strip("_") or "value"


def jinja_skeleton(template: str) -> Skeleton:
    """The slots of a Jinja template without control flow: each ``{{ ... }}`` is one."""
    if "{%" in template or "{#" in template:
        raise LlmgenError("its template uses Jinja control flow ({% ... %})")
    parts = _EXPR.split(template)
    out: Skeleton = []
    for i, p in enumerate(parts):
        out.append(p if i % 2 == 0 else Slot(slot_name(p.strip()), p.strip()))
    return out


def _candidates(doc: Mapping) -> list[tuple[str, str, object]]:
    """(text, slot name, source) of every value a prompt may show: strings (and stripped), list
    items and lists joined by a newline or a space, one level of nested mappings."""
    out: list[tuple[str, str, object]] = []

    def add(name: str, value, path: tuple) -> None:
        if isinstance(value, str):  # surrounding whitespace belongs to the literal text: the stripped value
            out.append((value.strip(), name, (path, "strip")))
        elif isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            for i, v in enumerate(value):
                out.append((v.strip(), f"{name}_{i}", (path + (i,), "strip")))
            for sep, how in (("\n", "join_nl"), (" ", "join_sp")):
                out.append((sep.join(value), f"{name}_{how}", (path, how)))
        elif isinstance(value, Mapping):
            for k, v in value.items():
                if isinstance(k, str) and not isinstance(v, Mapping):
                    add(f"{name}_{slot_name(k)}", v, path + (k,))

    for k, v in doc.items():
        if isinstance(k, str):
            add(slot_name(k), v, (k,))
    return [c for c in out if len(c[0].strip()) >= 2]


def read_source(doc: Mapping, source: object) -> str:
    """The text of an aligned slot in ``doc`` (see ``_candidates``; ``items``: the list's stripped
    items, the value of an enumeration whose length the document gives)."""
    path, how = source  # type: ignore[misc]
    value = _at(doc, path)
    if how == "strip":
        return str(value).strip()
    if how in ("join_nl", "join_sp"):
        return ("\n" if how == "join_nl" else " ").join(value)
    if how == "items":
        return [str(v).strip() for v in value]  # type: ignore[return-value]
    return str(value)


def shared_values(docs: Sequence[Mapping]) -> frozenset[str]:
    """The values every one of two or more documents holds: a constant a task's process_docs adds
    (TruthfulQA appends "I have no comment." to every document's correct answers, a sentence its
    fixed primer also holds) cannot tell a field from the template's text, so it stays literal."""
    if len(docs) < 2:
        return frozenset()
    return frozenset.intersection(*(frozenset(c[0] for c in _candidates(d)) for d in docs))


def aligned_skeleton(text: str, doc: Mapping, shared: frozenset[str] = frozenset()) -> Skeleton:
    """The slots of one rendered prompt: the document's values found in it, longest first, each
    at its first place not taken by a longer one (a value inside another stays part of it); the
    ``shared`` values (``shared_values``) are left to the literal text."""
    taken: list[tuple[int, int, Slot]] = []
    used: set[str] = set()
    for value, name, source in sorted(_candidates(doc), key=lambda c: -len(c[0])):
        base = name
        if base in used or value in shared:
            continue
        start = 0
        while (at := text.find(value, start)) >= 0:
            end = at + len(value)
            if all(end <= a or at >= b for a, b, _ in taken):
                taken.append((at, end, Slot(name, source)))
                used.add(base)
                break
            start = at + 1
    if not taken:
        raise LlmgenError("none of its document's values appears in its prompt")
    out: Skeleton = []
    pos = 0
    for a, b, slot in sorted(taken, key=lambda t: t[0]):
        out += [text[pos:a], slot]
        pos = b
    return [*out, text[pos:]]


def fills(skeleton: Skeleton, text: str, doc: Mapping) -> bool:
    """True when ``skeleton``'s slots filled with ``doc``'s values (``read_source``) give ``text``."""
    try:
        return "".join(p if isinstance(p, str) else read_source(doc, p.source) for p in skeleton) == text
    except (KeyError, IndexError, TypeError):
        return False


def _shape(s: Skeleton) -> tuple:
    return tuple(p if isinstance(p, str) else ("slot", p.name) for p in s)


def _majority(skeletons: Sequence[Skeleton]) -> int:
    """The index of the first skeleton of the shape most documents align to."""
    shapes = [_shape(s) for s in skeletons]
    counts = Counter(shapes)
    return max(range(len(shapes)), key=lambda i: (counts[shapes[i]], -i))


def refit(skeletons: Sequence[Skeleton], texts: Sequence[str], docs: Sequence[Mapping]) -> list[Skeleton]:
    """Each document aligned otherwise than most takes the majority's skeleton when filling it with
    its values gives its text byte for byte: alignment takes each value's first free place, which can
    be the wrong one when a value also spells the literal text (LogiQA's options ``A.``, ``B.``:
    ``A. A.\nB. B.``)."""
    ref = skeletons[_majority(skeletons)]
    return [ref if _shape(s) != _shape(ref) and fills(ref, t, d) else s
            for s, t, d in zip(skeletons, texts, docs, strict=True)]


def same_skeleton(skeletons: Sequence[Skeleton], texts: Sequence[str] | None = None,
                  docs: Sequence[Mapping] | None = None) -> Skeleton:
    """The one skeleton all documents share; a one-line error naming the first difference.

    With the rendered ``texts`` and their ``docs``, the skeleton is the one most documents align to
    and documents aligned otherwise are ``refit`` to it first."""
    ref = 0
    if texts is not None and docs is not None:
        ref, skeletons = _majority(skeletons), refit(skeletons, texts, docs)
    shapes = [_shape(s) for s in skeletons]
    for i, b in enumerate(shapes):
        if b == shapes[ref]:
            continue
        a = shapes[ref]
        j = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        x, y = (a[j] if j < len(a) else "<end>"), (b[j] if j < len(b) else "<end>")
        raise LlmgenError(f"its prompts differ between documents outside their fields (document {ref} has {x!r} "
                          f"where document {i} has {y!r})")
    return skeletons[ref]


# --- reading the literal text ---------------------------------------------------------------------

_DESC = r"(?:[^\W_]|#)(?:[^{}\n:]*[^\s{}:-])?"
_HEAD = re.compile(rf"(?P<desc>{_DESC})(?P<sep>[ \t]*(?::{{1,3}}|-{{1,2}})[ \t]*(?:\n[ \t]*)?)")
_OUT = re.compile(rf"(?P<desc>{_DESC})(?P<sep>[ \t]*(?::{{1,3}}|-{{1,2}}))")
_INLINE = re.compile(r"(?P<suffix>.*?)(?P<space>[ \t]+)(?P<head>\S.*)", re.DOTALL)
# a descriptor and separator followed by fixed text on the value's line ("Question: Is the word '{{w}}'")
_HEAD_TEXT = re.compile(rf"(?P<desc>{_DESC})(?P<sep>[ \t]*(?::{{1,3}}|-{{1,2}})[ \t]+)(?P<prefix>\S.*)", re.DOTALL)
_LABEL = r"(?P<label>[A-Za-z]|\d{1,2}|[ivxIVX]{1,4}|[\u2160-\u216b])"


def _label_regex(wrapper: str) -> re.Pattern:
    left, right = wrapper.split("x")
    return re.compile(re.escape(left) + _LABEL + re.escape(right) + r"(?P<sep>[ \t]*)")


_LABELS = [(w, _label_regex(w)) for w in WRAPPERS]


def _label(head: str) -> tuple[str, str, str] | None:
    """(wrapper, label, separator) of an option label head such as ``A. `` or ``(b) ``."""
    for wrapper, rx in _LABELS:
        m = rx.fullmatch(head)
        if m:
            return wrapper, m["label"], m["sep"]
    return None


def _breaks(lit: str) -> tuple[list[str], list[str]]:
    """A literal cut at its whitespace runs that hold a newline: (parts, breaks between them)."""
    parts, breaks, pos = [], [], 0
    for m in re.finditer(r"\s+", lit):
        if "\n" in m.group():
            parts.append(lit[pos:m.start()])
            breaks.append(m.group())
            pos = m.end()
    parts.append(lit[pos:])
    return parts, breaks


@dataclass
class _Part:
    kind: str  # "field", "text"
    head: str = ""
    slot: Slot | None = None
    suffix: str = ""
    text: str = ""


def _merge_inline(skeleton: Skeleton) -> Skeleton:
    """Values on one line joined by whitespace alone (``Q: {{context}} {{question}}``) read as one
    value, their joint text kept (an option label between them starts an inline enumeration)."""
    out = list(skeleton[:2])
    for lit, slot in zip(skeleton[2:-1:2], skeleton[3::2], strict=True):
        if lit and not lit.strip() and "\n" not in lit:
            prev = out[-1]
            out[-1] = Slot(f"{prev.name}__{slot.name}", ("concat", prev, lit, slot))
        else:
            out += [lit, slot]
    return [*out, skeleton[-1]]


def _parts(skeleton: Skeleton) -> tuple[list[_Part], list[str], str, str | None]:
    """The skeleton as parts, the breaks between them (``joins[i]`` follows ``parts[i]``), the output
    head and the break before it (None: the prompt ends on its last value's line)."""
    lits, slots = skeleton[0::2], skeleton[1::2]
    parts: list[_Part] = []
    joins: list[str] = []
    for j, lit in enumerate(lits):
        pieces, brks = _breaks(lit)
        if j == 0:
            if len(pieces) > 1:  # lines before the first value: one fixed text
                parts.append(_Part("text", text=_join_verbatim(pieces[:-1], brks[:-1])))
                joins.append(brks[-1])
        else:
            parts[-1].suffix = pieces[0]
            inline = _INLINE.fullmatch(lit) if len(pieces) == 1 and j < len(slots) else None
            if inline is not None and _label(inline["head"]) is not None:  # "(A) x (B) y": options on one line
                parts[-1].suffix = inline["suffix"]
                joins.append(inline["space"])
                parts.append(_Part("field", head=inline["head"], slot=slots[j]))
                continue
            if len(pieces) == 1:
                if j < len(slots):
                    raise LlmgenError(f"its values {slots[j - 1].name!r} and {slots[j].name!r} share a line "
                                      f"(joined by {lit!r})")
                return parts, joins, "", None
            joins.append(brks[0])
            if len(pieces) > 2:  # lines without values between two parts: one fixed text
                parts.append(_Part("text", text=_join_verbatim(pieces[1:-1], brks[1:-1])))
                joins.append(brks[-1])
        if j == len(slots):
            return parts, joins[:-1], pieces[-1], joins[-1]
        parts.append(_Part("field", head=pieces[-1], slot=slots[j]))
    raise AssertionError("unreachable")


def _merge_heads(parts: list[_Part], joins: list[str]) -> tuple[list[_Part], list[str]]:
    """A line ``Question:`` right above a value without a head is that value's descriptor, its
    separator ending with the line break (``Question:\\n{{question}}``)."""
    out, out_joins = [parts[0]], []
    for part, join in zip(parts[1:], joins, strict=True):
        prev = out[-1]
        if (part.kind == "field" and not part.head and prev.kind == "text" and not prev.suffix
                and _OUT.fullmatch(prev.text)):
            out[-1] = _Part("field", head=prev.text + join, slot=part.slot, suffix=part.suffix)
            continue
        out.append(part)
        out_joins.append(join)
    return out, out_joins


def _join_verbatim(pieces: Sequence[str], brks: Sequence[str]) -> str:
    out = pieces[0]
    for b, p in zip(brks, pieces[1:], strict=True):
        out += b + p
    return out


def _enumerations(parts: list[_Part], joins: list[str]) -> tuple[list, list[str]]:
    """Runs of labelled fields (``A. x``, ``B. y``, ...) as enumerations; returns the parts, with
    each run replaced by ``("enum", [parts], wrapper, numbering, separator, item_space)``."""
    out: list = []
    out_joins: list[str] = []
    i = 0
    while i < len(parts):
        run = _label_run(parts, joins, i)
        if run:
            k, wrapper, numbering, sep = run
            out.append(("enum", parts[i:i + k], wrapper, numbering, sep, joins[i] if k > 1 else "\n"))
            if i > 0:
                out_joins.append(joins[i - 1])
            i += k
            continue
        out.append(parts[i])
        if i > 0:
            out_joins.append(joins[i - 1])
        i += 1
    return out, out_joins


def _label_run(parts: list[_Part], joins: list[str], i: int) -> tuple[int, str, str, str] | None:
    first = _label(parts[i].head) if parts[i].kind == "field" else None
    if first is None:
        return None
    wrapper, _, sep = first
    for numbering in NUMBERINGS:
        k = 0
        while (i + k < len(parts) and parts[i + k].kind == "field" and not parts[i + k].suffix
               and (lab := _label(parts[i + k].head)) is not None and lab[0] == wrapper and lab[2] == sep
               and _is_number(numbering, k, lab[1]) and (k == 0 or joins[i + k - 1] == joins[i])):
            k += 1
        if k >= 2:
            return k, wrapper, numbering, sep
    return None


def _is_number(numbering: str, index: int, label: str) -> bool:
    try:
        return number(numbering, index) == label
    except LlmgenError:
        return False


def structure_of(skeleton: Skeleton, answer_delimiter: str | None) -> Structure:
    """The layout and original format of a prompt skeleton (see the module docstring);
    ``answer_delimiter`` is the text between the prompt and its answer (lm-eval's target_delimiter),
    None when no answer is ever written after a prompt (generation without demonstrations)."""
    if answer_delimiter is not None and answer_delimiter.strip():
        raise LlmgenError(f"its answer follows {answer_delimiter!r}, which is not whitespace")
    skeleton = _merge_inline(skeleton)
    parts, joins, out_head, out_join = _parts(skeleton)
    parts, joins = _merge_heads(parts, joins)
    items, joins = _enumerations(parts, joins)
    out_text = ""
    if out_join is None:  # the answer follows the last value on its line: the layout's spacing
        out_desc, out_sep, out_join = "", None, answer_delimiter
        if answer_delimiter is None:  # nothing is written after the prompt: the answer may follow any spacing
            out_join = min(joins, key=len) if joins else "\n"
        if not out_join:
            raise LlmgenError("its answer follows the prompt's last value with nothing between them")
    else:
        m = _OUT.fullmatch(out_head)
        out_text = ""
        delim = " " if answer_delimiter is None else answer_delimiter  # None: only a generation follows
        if m is None and (m := _HEAD_TEXT.fullmatch(out_head)) is not None:  # "A: Let's think step by step."
            out_text = m["prefix"] + delim
        if m is None:
            raise LlmgenError(f"its prompt does not end at an output field ('Answer:'), it ends {out_head!r}")
        out_sep = m["sep"] if out_text else m["sep"] + delim
        out_desc = m["desc"]
    all_joins = [*joins, out_join]
    space = min(all_joins, key=len)
    elements: list = []
    seps: set[str] = {out_sep} if out_sep is not None else set()
    fmt: dict[str, str] = {}
    enums: list[tuple[str, tuple[str, ...]]] = []
    heads: dict[int, str] = {}  # element index -> its separator
    for n, item in enumerate(items):
        join = all_joins[n] if n < len(all_joins) else None  # the break after this item
        extra = ""
        if join is not None:
            if not join.endswith(space):
                raise LlmgenError(f"its parts are joined by different spacings {space!r} and {join!r}")
            extra = join[: len(join) - len(space)]
        if isinstance(item, tuple):
            _, members, wrapper, numbering, sep, item_space = item
            key = "options" if not enums else f"options{len(enums) + 1}"
            if extra:
                raise LlmgenError(f"its options are followed by {join!r}, not its spacing {space!r}")
            elements.append(Enumeration(key))
            fmt.update({f"{key}.wrapper": wrapper, f"{key}.numbering": numbering, f"{key}.separator": sep,
                        f"{key}.item_space": item_space})
            enums.append((key, tuple(p.slot.name for p in members)))
        elif item.kind == "text":
            elements.append(Text(item.text + extra))
        else:
            m = _HEAD.fullmatch(item.head)
            prefix = ""
            if item.head and m is None and (m := _HEAD_TEXT.fullmatch(item.head)) is not None:
                prefix = m["prefix"]
            if item.head and m is None:
                raise LlmgenError(f"its text {item.head!r} before value {item.slot.name!r} is neither a descriptor "
                                  "with a separator nor an option label")
            if m is not None:
                seps.add(m["sep"])
                heads[len(elements)] = m["sep"]
            elements.append(Field(m["desc"] if m else "", item.slot.name, item.suffix + extra, prefix))
    if len(seps) > 1:
        if out_sep is None:
            raise LlmgenError(f"its fields mix separators {sorted(seps)} (a format has one)")
        # a format has one separator, the output field's: a field written with another keeps its
        # descriptor and separator as fixed text (gpqa's 'What is the correct answer to this question:')
        elements = [Field("", e.key, e.suffix, e.descriptor + heads[i] + e.prefix) if heads.get(i, out_sep) != out_sep
                    else e for i, e in enumerate(elements)]
        seps = {out_sep}
    if seps:
        fmt["separator"] = seps.pop()
    fmt["space"] = space
    slots = tuple(p for p in skeleton[1::2])
    layout = Layout(fields=tuple(elements), output=out_desc, output_text=out_text)
    return Structure(layout, Format(fmt), slots, tuple(enums))


def slot_values(slots: Sequence[Slot], doc: Mapping, jinja: Callable[[str, Mapping], str] | None = None) -> dict[str, str]:
    """``{slot name: text}`` of one document: a Jinja slot rendered by ``jinja(expression, doc)``
    (the template's own environment), an aligned slot read from the document's fields."""
    return {slot.name: _slot_text(slot, doc, jinja) for slot in slots}


def _slot_text(slot: Slot, doc: Mapping, jinja: Callable[[str, Mapping], str] | None) -> str:
    if isinstance(slot.source, str):
        if jinja is None:
            raise LlmgenError(f"slot {slot.name!r} needs the template's Jinja")
        return jinja(slot.source, doc)
    if slot.source[0] == "span":  # type: ignore[index]
        return _span_text(doc, slot.source)  # type: ignore[arg-type]
    if slot.source[0] == "concat":  # type: ignore[index]
        _, a, lit, b = slot.source  # type: ignore[misc]
        return _slot_text(a, doc, jinja) + lit + _slot_text(b, doc, jinja)
    return read_source(doc, slot.source)


# --- the structure every rendered prompt shares ---------------------------------------------------


def aligned_structure(texts: Sequence[str], docs: Sequence[Mapping], answer_delimiter: str | None,
                      render: Callable[[Mapping], str]) -> Structure:
    """The one structure of each document's rendered prompt (``texts[i]`` = ``render(docs[i])``).

    Prompts with the same values in the same order share their literal text, except where a task
    changes a value a little per document (MNLI appends a period to a hypothesis that lacks one):
    the punctuation that differs, next to the value, is part of that value as rendered (``_widened``),
    so the original format gives the same bytes and every format shows that same text. Prompts
    whose option lists differ in length (MMLU-Pro's 3 to 10 options) share one structure whose
    enumeration holds each document's whole list (``_list_enumerations``).
    """
    shared = shared_values(docs)
    skeletons = refit([aligned_skeleton(t, d, shared) for t, d in zip(texts, docs, strict=True)], texts, docs)
    names = [[p.name for p in s[1::2]] for s in skeletons]
    if all(n == names[0] for n in names):
        return structure_of(_widened(skeletons, render, shared), answer_delimiter)
    return _list_enumerations(skeletons, docs, answer_delimiter)


def _widened(skeletons: Sequence[Skeleton], render: Callable[[Mapping], str], shared: frozenset[str]) -> Skeleton:
    """The skeleton of prompts whose slots agree: a literal that differs between documents keeps
    what they share; the part that differs joins the slot before it (the slot after it for the
    prompt's first literal), read per document from its rendered prompt. That part must be
    punctuation glued to the value (a period added or not): a word or a spacing that differs
    (``Land:`` here, ``Country:`` there) is a template that differs, refused naming it."""
    first = list(skeletons[0])
    lits = [s[0::2] for s in skeletons]
    cuts: dict[int, dict[str, int]] = {}  # slot index -> {"after": common suffix kept, "before": prefix kept}
    for j in range(len(lits[0])):
        texts = [lt[j] for lt in lits]
        if all(t == texts[0] for t in texts):
            continue
        n_slots = len(first) // 2
        if j > 0:  # the differing head of the literal joins the slot before it
            keep = len(_common_suffix(texts))
            parts, side, slot_index = [t[: len(t) - keep] for t in texts], "after", j - 1
            first[2 * j] = texts[0][len(texts[0]) - keep:]
        elif n_slots:
            keep = len(_common_prefix(texts))
            parts, side, slot_index = [t[keep:] for t in texts], "before", 0
            first[0] = texts[0][:keep]
        else:
            parts = ["\n"]
        if not all(_PUNCTUATION.fullmatch(p) for p in parts):  # words or spacing: the template differs
            same_skeleton(skeletons)  # the error naming the first difference
        cuts.setdefault(slot_index, {})[side] = keep
    for i, cut in cuts.items():
        slot = first[2 * i + 1]
        first[2 * i + 1] = Slot(slot.name, ("span", slot, i, cut.get("before"), cut.get("after"), render, shared))
    return first


_PUNCTUATION = re.compile(r"[^\w\s]*")


def _common_prefix(texts: Sequence[str]) -> str:
    n = 0
    while all(len(t) > n and t[n] == texts[0][n] for t in texts):
        n += 1
    return texts[0][:n]


def _common_suffix(texts: Sequence[str]) -> str:
    return _common_prefix([t[::-1] for t in texts])[::-1]


def _span_text(doc: Mapping, source: tuple) -> str:
    """A widened slot's text in one document: its value with the literal text around it that this
    document renders differently (``_widened``)."""
    _, slot, i, before, after, render, shared = source
    skeleton = aligned_skeleton(render(doc), doc, shared)
    if len(skeleton) < 2 * i + 3 or skeleton[2 * i + 1].name != slot.name:
        raise LlmgenError(f"its prompt of a document does not show value {slot.name!r} where the others do")
    head = skeleton[2 * i][before:] if before is not None else ""
    tail = skeleton[2 * i + 2]
    tail = tail[: len(tail) - after] if after is not None else ""
    return head + read_source(doc, skeleton[2 * i + 1].source) + tail


def _list_enumerations(skeletons: Sequence[Skeleton], docs: Sequence[Mapping], answer_delimiter: str | None) -> Structure:
    """One structure for prompts that differ only in how many options they list: each document's
    structure has the same layout and original format, and each enumeration whose items differ is
    one list field's items, all of them in order; that enumeration then holds the whole list."""
    structures = [structure_of(s, answer_delimiter) for s in skeletons]
    first = structures[0]
    if any(st.layout != first.layout or st.original != first.original for st in structures):
        same_skeleton(skeletons)
    lists: dict[str, Slot] = {}
    sizes: dict[str, set[int]] = {}
    fixed = {key for key, names in first.enumerations
             if all(dict(st.enumerations).get(key) == names for st in structures)}  # the same items everywhere
    for st, doc in zip(structures, docs, strict=True):
        for key, item_names in st.enumerations:
            if key in fixed:
                continue
            items = [next(s for s in st.slots if s.name == n) for n in item_names]
            paths = {s.source[0][:-1] if isinstance(s.source, tuple) and s.source[1] == "strip" else None for s in items}
            path = paths.pop() if len(paths) == 1 else None
            whole = path is not None and [s.source[0][-1] for s in items] == list(range(len(_at(doc, path))))
            if not whole:
                same_skeleton(skeletons)
            lists[key] = Slot(f"{slot_name('_'.join(map(str, path)))}_items", (path, "items"))
            sizes.setdefault(key, set()).add(len(items))
    item_slots = {n for key, names in first.enumerations if key not in fixed for n in names}
    other = [[s for s in st.slots if s.name not in {n for k, ns in st.enumerations if k not in fixed for n in ns}]
             for st in structures]
    if any([s.name for s in o] != [s.name for s in other[0]] for o in other):
        same_skeleton(skeletons)
    fields = tuple(replace(e, sizes=tuple(sorted(sizes[e.key], reverse=True))) if isinstance(e, Enumeration)
                   and e.key in lists else e for e in first.layout.fields)
    slots = tuple(s for s in first.slots if s.name not in item_slots) + tuple(lists.values())
    return Structure(replace(first.layout, fields=fields), first.original, slots,
                     tuple((key, (lists[key].name,) if key in lists else names) for key, names in first.enumerations))


def _at(doc: Mapping, path: tuple) -> object:
    value = doc
    for p in path:
        value = value[p]  # type: ignore[index]
    return value
