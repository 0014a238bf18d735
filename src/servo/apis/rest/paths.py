"""Model names, versions and labels read from a URL path that the HTTP server has decoded.

TFS matches its route regexes on the raw path, where a name or a label cannot hold `/` or
`:` (`/v1/models/([^/:]+)...`), and then URL-decodes the captured name and label, so a model
named `a/b` is addressed as `/v1/models/a%2Fb:predict`. The REST app is handed only the
decoded path (`/v1/models/a/b:predict`), as RSGI's scope carries it (servo's HTTP server,
`http_server`, keeps the form of granian's, the server the app was first written for), so it
cannot see where the `%2F`s were. servo reads the decoded path the ways the raw one could
have been written:

- `readings` lists every split of the piece between the route's prefix and its verb or
  subresource into name [`/versions/V` | `/labels/L`], the reading TFS gives an unencoded
  path (no `/` or `:` in the name or the label) first, then by the name's length (and the
  label's);
- `pick` takes the first reading whose name is a served model, and otherwise TFS's reading
  (or none: the path is malformed, as TFS says of it).

So every path TFS routes to a served model routes to it here, and an encoded `/` in a
version label works the same way. What differs: a path that names a served model with its
`/` left unencoded (`/v1/models/a/b:predict` for a model `a/b`) is served, where TFS answers
400 "Malformed request"; and when two served names are both readings of one path (models
`a` and `a/versions/1`, say), the shorter name is meant. Decoding is `urllib.parse.unquote`'s:
a `%XX` that is not UTF-8 reads as U+FFFD, so such names cannot be addressed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass

_DIGITS = re.compile(r"[0-9]+")
_VERSIONS = "/versions/"
_LABELS = "/labels/"


@dataclass(frozen=True, slots=True)
class Reading:
    """One way to read a path's model piece: the name, and the version or label text."""

    name: str
    version: str | None = None
    label: str | None = None
    strict: bool = False  # what TFS's regex reads of the path when nothing was encoded
    route: str = ""  # which of the caller's routes the reading is of ("metadata", ...)


def readings(
    piece: str,
    *,
    labels: bool,
    version: re.Pattern[str] = _DIGITS,
    forbidden: str = "/:",
    ignore_case: bool = True,
    route: str = "",
) -> list[Reading]:
    """Every reading of `piece` as name[/versions/V][/labels/L] (labels only when `labels`),
    the strict one (no character of `forbidden` in the name or label, V matching `version`)
    first, then by the name's length. `ignore_case`: `/versions/` and `/labels/` in any
    case, as TFS's routes are written."""
    found: list[Reading] = []
    folded = piece.lower() if ignore_case else piece

    def add(name: str, version_text: str | None, label: str | None) -> None:
        if not name:
            return
        strict = not any(
            c in forbidden for piece_ in (name, version_text or "", label or "") for c in piece_
        )
        found.append(Reading(name, version_text, label, strict, route))

    add(piece, None, None)
    start = folded.find(_VERSIONS)
    while start >= 0:
        text = piece[start + len(_VERSIONS) :]
        if version.fullmatch(text):
            add(piece[:start], text, None)
        start = folded.find(_VERSIONS, start + 1)
    if labels:
        start = folded.find(_LABELS)
        while start >= 0:
            text = piece[start + len(_LABELS) :]
            if text:
                add(piece[:start], None, text)
            start = folded.find(_LABELS, start + 1)
    return ordered(found)


def ordered(found: list[Reading]) -> list[Reading]:
    """`found` (the readings of one path, of one route or several) in the order `pick` tries
    them: the strict one first, then by the name's length, then by the version's or the
    label's (`m/labels/x/y/metadata`: label `x/y`'s metadata before label `x/y/metadata`'s
    status, as a label free of '/' would read)."""
    return sorted(found, key=lambda r: (not r.strict, len(r.name), len(r.version or r.label or "")))


def pick(found: list[Reading], served: Callable[[], Collection[str]]) -> Reading | None:
    """The reading to route: the strict one when it is the only one; else the first whose
    name is served (`served()`: the served names, asked only then); else the strict one, or
    None (malformed)."""
    if not found:
        return None
    strict = found[0] if found[0].strict else None
    if strict is not None and len(found) == 1:
        return strict
    names = served()
    for reading in found:
        if reading.name in names:
            return reading
    return strict


def unambiguous(found: list[Reading]) -> bool:
    """Whether the path reads one way only (its route may be remembered: it does not depend
    on which models are served)."""
    return len(found) == 1 and found[0].strict
