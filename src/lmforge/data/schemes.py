"""NER label schemes: detection, validation and conversion to the internal IOB2 (BIO) scheme.

Files come tagged in one of four schemes:

- ``iob1``: ``I-X`` everywhere; ``B-X`` only starts an entity that directly follows another X entity
  (the original CoNLL-2003 files).
- ``iob2``: every entity starts with ``B-X``, continues with ``I-X`` (a.k.a. BIO).
- ``bioes``: ``B-`` begin, ``I-`` inside, ``E-`` end, ``S-`` single-token entity.
- ``bmes``: as BIOES with ``M-`` (middle) in place of ``I-`` (common for Chinese character data).

Tags are ``O`` or ``PREFIX-TYPE``, split on the first ``-`` only, so types may contain ``-`` or ``.``
(e.g. ``B-PER.NAM``). Everything downstream works on IOB2.
"""

from __future__ import annotations

from typing import NamedTuple

from lmforge.errors import UserError

SCHEMES = ("iob1", "iob2", "bioes", "bmes")

# Prefixes each scheme allows (besides the bare tag "O").
_PREFIXES = {
    "iob1": ("B", "I"),
    "iob2": ("B", "I"),
    "bioes": ("B", "I", "E", "S"),
    "bmes": ("B", "M", "E", "S"),
}


class Conversion(NamedTuple):
    """Result of `validate_and_convert` for one sentence.

    `tags` are the IOB2 tags (only meaningful when `error_index` is None); `error_index` is the
    position of the first invalid tag and `error` says why.
    """

    tags: list[str]
    error_index: int | None = None
    error: str | None = None


def split_tag(tag: str) -> tuple[str, str | None]:
    """Split ``B-PER`` into ``("B", "PER")`` and ``O`` into ``("O", None)``.

    A tag without ``-`` (other than ``O``) comes back as ``(tag, None)``; callers treat it as an
    unknown prefix.
    """
    if tag == "O":
        return "O", None
    prefix, sep, entity_type = tag.partition("-")
    if not sep:
        return tag, None
    return prefix, entity_type


def _entity_type(tag: str | None) -> str | None:
    """The entity type of a tag, or None for ``O``, malformed tags and the sentence start (None)."""
    if tag is None:
        return None
    prefix, entity_type = split_tag(tag)
    return None if prefix == "O" else entity_type


def detect_scheme(sentences: list[list[str]]) -> str:
    """Guess the scheme of a whole file from its tag sequences.

    ``M-`` anywhere means BMES; ``E-``/``S-`` means BIOES. For B/I/O files, IOB1 is chosen only
    when some ``I-X`` starts an entity (illegal in IOB2) *and* every ``B-X`` directly follows
    another X tag (which is all IOB1 allows); anything else, including all-``O`` data, is IOB2.
    """
    prefixes: set[str] = set()
    i_starts_entity = False
    every_b_follows_same_type = True
    for tags in sentences:
        previous_type: str | None = None
        for tag in tags:
            prefix, entity_type = split_tag(tag)
            prefixes.add(prefix)
            if prefix == "I" and entity_type and previous_type != entity_type:
                i_starts_entity = True
            elif prefix == "B" and entity_type and previous_type != entity_type:
                every_b_follows_same_type = False
            previous_type = entity_type if prefix != "O" else None
    if "M" in prefixes:
        return "bmes"
    if "E" in prefixes or "S" in prefixes:
        return "bioes"
    if i_starts_entity and every_b_follows_same_type:
        return "iob1"
    return "iob2"


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise UserError(f"unknown NER tag scheme '{scheme}'; expected one of: {', '.join(SCHEMES)} (or auto)")


def _describe(tag: str | None) -> str:
    return "the start of a sentence" if tag is None else tag


def _bad_prefix(tag: str, scheme: str) -> str:
    allowed = ", ".join(f"{p}-" for p in _PREFIXES[scheme])
    why = " (O takes no type)" if tag.startswith("O-") else ""
    return f"tag '{tag}' is not valid in {scheme.upper()}: expected {allowed} or O{why}"


def validate_and_convert(
    tags: list[str], scheme: str, *, continues_before: bool = False, continues_after: bool = False
) -> Conversion:
    """Check one sentence's tags against `scheme` and convert them to IOB2.

    Returns the converted tags plus the index of the first invalid tag and the reason (both None
    when the sentence is valid). Raises UserError for an unknown scheme name.

    `continues_before` / `continues_after` say that a sentence boundary cut an entity in two (see
    `entity_continues`): the first tag may then continue an entity (it becomes ``B-``) and the
    last may leave one open. Each part is kept as an entity of its own.
    """
    _check_scheme(scheme)
    converted: list[str] = []
    for index, tag in enumerate(tags):
        prefix, entity_type = split_tag(tag)
        # "O-PER" splits into ("O", "PER"): not a plain O, so it must not pass as one.
        if tag != "O" and (prefix not in _PREFIXES[scheme] or not entity_type):
            return Conversion(converted, index, _bad_prefix(tag, scheme))
        if index == 0 and continues_before and prefix not in ("O", "B", "S"):
            converted.append(f"B-{entity_type}")
            continue
        previous = tags[index - 1] if index else None
        if scheme in ("iob1", "iob2"):
            reason, new_tag = _step_iob(scheme, tag, previous)
        else:
            at_end = index + 1 == len(tags) and not continues_after
            reason, new_tag = _step_bioes(scheme, tag, previous, at_end)
        if reason is not None:
            return Conversion(converted, index, reason)
        converted.append(new_tag)
    return Conversion(converted)


def entity_continues(last_tag: str, first_tag: str, scheme: str) -> bool:
    """Whether a sentence ending in `last_tag` and the next one starting with `first_tag` cut one
    entity in two, e.g. ``M-ORG`` | ``M-ORG`` in BMES (Resume NER splits sentences at every
    "。", even inside organisation names). Both sides must agree, so a lone unclosed entity is
    still an error."""
    _check_scheme(scheme)
    last_prefix, last_type = split_tag(last_tag)
    first_prefix, first_type = split_tag(first_tag)
    if last_type is None or last_type != first_type:
        return False
    if scheme == "iob1":
        return False  # an I- may start a sentence in IOB1 anyway: nothing to repair
    if scheme == "iob2":
        return last_prefix in ("B", "I") and first_prefix == "I"
    inside = "I" if scheme == "bioes" else "M"
    return last_prefix in ("B", inside) and first_prefix in (inside, "E")


def _step_iob(scheme: str, tag: str, previous: str | None) -> tuple[str | None, str]:
    """One IOB1/IOB2 tag (previous tags already valid): (error or None, IOB2 tag)."""
    prefix, entity_type = split_tag(tag)
    if prefix == "O":
        return None, "O"
    continues = _entity_type(previous) == entity_type
    if scheme == "iob2":
        if prefix == "I" and not continues:
            return (
                f"{tag} cannot follow {_describe(previous)} in IOB2; "
                f"did you mean B-{entity_type}, or is the file IOB1?"
            ), ""
        return None, tag
    # IOB1: B- exists only to split two adjacent entities of the same type.
    if prefix == "B" and not continues:
        return (
            f"{tag} cannot follow {_describe(previous)} in IOB1 (B- only starts an entity right "
            f"after another {entity_type} entity); is the file IOB2?"
        ), ""
    if prefix == "I" and not continues:
        return None, f"B-{entity_type}"
    return None, tag


def _step_bioes(scheme: str, tag: str, previous: str | None, at_end: bool) -> tuple[str | None, str]:
    """One BIOES/BMES tag (previous tags already valid): (error or None, IOB2 tag).

    Besides the predecessor check, a tag that leaves an entity open (B-, I-/M-) may not end the
    sentence: its E- is missing.
    """
    inside = "I" if scheme == "bioes" else "M"
    name = scheme.upper()
    prefix, entity_type = split_tag(tag)
    prev_prefix, prev_type = split_tag(previous) if previous is not None else ("O", None)
    open_type = prev_type if prev_prefix in ("B", inside) else None
    if prefix in (inside, "E"):
        if open_type != entity_type:
            return (
                f"{tag} cannot follow {_describe(previous)} in {name}: "
                f"{prefix}-{entity_type} must follow B-{entity_type} or {inside}-{entity_type}"
            ), ""
    elif open_type is not None:
        # O, B- or S- while an entity is still open: that entity never got its E-.
        return (
            f"{tag} cannot follow {previous} in {name}: {previous} must be followed by "
            f"{inside}-{open_type} or E-{open_type}"
        ), ""
    if prefix in ("B", inside) and at_end:
        return (
            f"{tag} ends the sentence in {name}: the entity must be closed by E-{entity_type} "
            f"(a single-token entity is S-{entity_type})"
        ), ""
    if prefix == "O":
        return None, "O"
    return None, ("B-" if prefix in ("B", "S") else "I-") + str(entity_type)


def has_valid_prefixes(tags: list[str], scheme: str) -> bool:
    """Every tag is O or PREFIX-TYPE with a prefix the scheme allows (what lenient reading needs)."""
    _check_scheme(scheme)
    for tag in tags:
        prefix, entity_type = split_tag(tag)
        if tag != "O" and (prefix not in _PREFIXES[scheme] or not entity_type):
            return False
    return True


def repair_to_iob2(tags: list[str], scheme: str) -> tuple[list[str], int]:
    """Lenient reading (data.lenient_tags), as conlleval reads tags: a continuation (I-, M-, E-)
    that does not continue an entity of its type starts one; an entity left open (BIOES/BMES
    B- or I-/M- not closed by E-) ends where the next tag is not its continuation. Returns the
    IOB2 tags and the number of repairs. The tags must have valid prefixes (`has_valid_prefixes`)."""
    inside = "M" if scheme == "bmes" else "I"
    out: list[str] = []
    repairs = 0
    open_type: str | None = None  # the type of the entity the previous tag left open
    for tag in tags:
        prefix, entity_type = split_tag(tag)
        if scheme in ("bioes", "bmes") and open_type is not None and not (prefix in (inside, "E") and entity_type == open_type):
            repairs += 1  # the open entity never got its E-
        if prefix == "O":
            out.append("O")
            open_type = None
            continue
        continues = prefix in (inside, "E") and entity_type == open_type
        if prefix in (inside, "E") and not continues:
            repairs += 1
        if scheme == "iob1" and prefix == "I" and not continues:
            repairs -= 1  # IOB1 starts entities with I-: not a repair
        out.append(("I-" if continues else "B-") + str(entity_type))
        open_type = None if prefix in ("E", "S") else entity_type
    if scheme in ("bioes", "bmes") and open_type is not None:
        repairs += 1
    return out, repairs


def tags_to_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """IOB2 tags to ``(type, start, end_exclusive)`` spans, tolerant like conlleval.

    Used to decode model predictions, which may be ill-formed: an ``I-X`` that does not continue
    an X entity starts a new one instead of being dropped. Tags that are neither ``O`` nor
    ``B-``/``I-`` are treated as ``O``.
    """
    spans: list[tuple[str, int, int]] = []
    current_type: str | None = None
    start = 0
    for index, tag in enumerate(tags):
        prefix, entity_type = split_tag(tag)
        if prefix not in ("B", "I") or not entity_type:
            prefix, entity_type = "O", None
        continues = prefix == "I" and entity_type == current_type
        if current_type is not None and not continues:
            spans.append((current_type, start, index))
            current_type = None
        if entity_type is not None and not continues:
            current_type, start = entity_type, index
    if current_type is not None:
        spans.append((current_type, start, len(tags)))
    return spans
