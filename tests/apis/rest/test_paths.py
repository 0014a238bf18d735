"""Reading a model name, version and label from a decoded URL path (servo.apis.rest.paths):
every way the raw path could have been written, TFS's unencoded reading first, and the one
routed. The routes that use it are tested in test_app.py (/v1) and test_open_inference.py
(/v2)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from servo.apis.rest.paths import Reading, ordered, pick, readings, unambiguous

TFS_PIECE = re.compile(r"([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?", re.IGNORECASE)


def triples(found: list[Reading]) -> list[tuple[str, str | None, str | None, bool]]:
    return [(r.name, r.version, r.label, r.strict) for r in found]


def test_an_unencoded_piece_reads_one_way() -> None:
    assert triples(readings("m", labels=True)) == [("m", None, None, True)]
    assert triples(readings("m/versions/12", labels=True)) == [
        ("m", "12", None, True),
        ("m/versions/12", None, None, False),
    ]
    assert triples(readings("m/LABELS/x", labels=True))[0] == ("m", None, "x", True)


def test_every_split_is_a_reading_the_strict_one_first_then_the_shorter_names() -> None:
    assert triples(readings("a/b/labels/x/y", labels=True)) == [
        ("a/b", None, "x/y", False),  # a%2Fb/labels/x%2Fy
        ("a/b/labels/x/y", None, None, False),  # a%2Fb%2Flabels%2Fx%2Fy
    ]
    assert triples(readings("a/labels/b/labels/c", labels=True)) == [
        ("a", None, "b/labels/c", False),
        ("a/labels/b", None, "c", False),
        ("a/labels/b/labels/c", None, None, False),
    ]
    assert triples(readings("a/versions/1/versions/2", labels=True)) == [
        ("a/versions/1", "2", None, False),
        ("a/versions/1/versions/2", None, None, False),
    ]
    assert readings("", labels=True) == []
    assert triples(readings("m/versions/x", labels=True)) == [("m/versions/x", None, None, False)]
    assert triples(readings("m/labels/", labels=True)) == [("m/labels/", None, None, False)]


def test_pick_routes_a_served_name_else_the_strict_reading() -> None:
    found = readings("a/b/versions/3", labels=True)
    assert pick(found, lambda: ["a/b"]) == Reading("a/b", "3", None, False)
    assert pick(found, lambda: ["a/b/versions/3"]) == Reading("a/b/versions/3")
    assert pick(found, lambda: []) is None  # malformed, as TFS says of it unencoded
    strict = readings("m/versions/3", labels=True)
    assert pick(strict, lambda: []) == Reading("m", "3", None, True)  # 404 for m, as TFS
    assert pick(strict, lambda: ["m/versions/3"]) == Reading("m/versions/3")
    assert pick(strict, lambda: ["m", "m/versions/3"]) == Reading("m", "3", None, True)


def test_an_unambiguous_path_does_not_ask_for_the_served_names() -> None:
    def served() -> list[str]:
        raise AssertionError("asked")

    found = readings("half_plus_two", labels=True)
    assert unambiguous(found)
    assert pick(found, served) == Reading("half_plus_two", strict=True)
    assert not unambiguous(readings("m/versions/1", labels=True))


def test_readings_of_several_routes_are_ordered_together() -> None:
    piece = "m/labels/x/y/metadata"
    found = ordered(
        readings(piece, labels=True) + readings(piece[:-9], labels=True, route="metadata")
    )
    assert (found[0].name, found[0].label, found[0].route) == ("m", "x/y", "metadata")


@given(
    st.text(st.sampled_from("ab/:"), min_size=1, max_size=6),
    st.one_of(st.none(), st.integers(0, 999), st.text(st.sampled_from("xy/:"), min_size=1)),
)
def test_an_encoded_name_and_label_always_have_a_reading(name: str, suffix: object) -> None:
    """Whatever a name and label hold, the decoded path has the reading that TFS gives the
    encoded one, so serving that name routes it."""
    piece = name
    version = label = None
    if isinstance(suffix, int):
        version = str(suffix)
        piece += f"/versions/{version}"
    elif isinstance(suffix, str):
        label = suffix
        piece += f"/labels/{label}"
    found = readings(piece, labels=True)
    assert any((r.name, r.version, r.label) == (name, version, label) for r in found)
    routed = pick(found, lambda: [name])
    assert routed is not None and routed.name == name


@given(st.text(min_size=1, max_size=12))
def test_the_strict_reading_is_what_tfs_regex_reads(piece: str) -> None:
    match = TFS_PIECE.fullmatch(piece)
    strict = [r for r in readings(piece, labels=True) if r.strict]
    if match is None:
        assert strict == []
    else:
        assert [(r.name, r.version, r.label) for r in strict] == [match.groups()]
