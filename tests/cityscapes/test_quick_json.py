"""The quick reading of a document's top-level lists against the exact, event by event one: where
the quick one gives values, they must be the exact reading's, value for value and type for type;
everywhere else it must say Unsure (the caller then reads the exact way). Documents come from
hypothesis, written by the standard library's json in several styles, then cut, spliced and
scribbled on, and read in small blocks so that every token may straddle two."""

import io
import json
import math
import os
from functools import partial

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.cityscapes import manifest as M
from worker.cityscapes.quick_json import QuickValues, Unsure
from worker.errors import ManifestError
from worker.synth import make_manifest

WANTED = ("version", "labels.item", "images.item", "shapes.item")
KEYS = st.sampled_from(["version", "labels", "images", "shapes", "other", "a[b", 'q"{'])
TEXT = st.text(st.sampled_from(list('ab"\\[]{},: \u00e9\u20ac\U0001f600\n')), max_size=12)
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0001234567890123456, 1e-300, 123456789012345678]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
VALUES = st.recursive(
    SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                     st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12)
MEMBER = st.tuples(KEYS, st.one_of(SCALARS, st.lists(VALUES, max_size=5),
                                   st.lists(st.dictionaries(TEXT, VALUES, max_size=3), max_size=5)))
STYLES = [{}, {"separators": (",", ":")}, {"indent": 1}, {"indent": "\t"}, {"ensure_ascii": False}]


def document(members: list[tuple[str, object]], style: dict) -> bytes:
    """A root object that may repeat keys, as a writer would put it (json.dumps cannot)."""
    body = ", ".join(f"{json.dumps(k)}: {json.dumps(v, **style)}" for k, v in members)
    return ("{" + body + "}").encode()


def exact(data: bytes, wanted=WANTED):
    stream = io.BytesIO(data)
    try:
        return list(M.top_level_values(M.json_events(stream, "doc"), wanted))
    except (ManifestError, M.ijson.JSONError) as exc:
        return type(exc).__name__


def quick(data: bytes, block: int, wanted=WANTED):
    guard = M.JsonGuard(io.BytesIO(data), "doc")
    values = QuickValues(partial(M._quick_read, guard), wanted, M.MAX_DEPTH, M.MAX_ITEM_VALUES,
                         M.MAX_VALUE_BYTES, block=block)
    try:
        return list(values)
    except Unsure:
        return None


def typed(value):
    """A value with its types spelled out: 1 and 1.0 and True are not the same reading."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [typed(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return ("nan",)
    return (type(value).__name__, value)


def agree(data: bytes, block: int) -> bool:
    """False when the quick reading gave values the exact reading does not."""
    fast = quick(data, block)
    if fast is None:
        return True
    return typed(fast) == typed(exact(data))


# QUICK_EXAMPLES=10000 searches longer (it found the last two bugs at 8,000 and 10,000).
@settings(max_examples=int(os.environ.get("QUICK_EXAMPLES", 400)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(MEMBER, max_size=6), st.sampled_from(STYLES), st.integers(1, 40))
def test_well_formed_documents_read_as_the_exact_reading_does(members, style, block):
    data = document(members, style)
    fast = quick(data, block)
    assert fast is None or typed(fast) == typed(exact(data))


@settings(max_examples=int(os.environ.get("QUICK_EXAMPLES", 300)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(MEMBER, max_size=6), st.sampled_from(STYLES), st.integers(1, 40))
def test_entries_are_the_bytes_they_were_built_from(members, style, block):
    """Each entry says where its bytes lie and their digest: those bytes alone read to its
    value (what lets a cache key name an entry by its bytes, and a memo skip building it)."""
    data = document(members, style)
    guard = M.JsonGuard(io.BytesIO(data), "doc")
    values = QuickValues(partial(M._quick_read, guard), WANTED, M.MAX_DEPTH, M.MAX_ITEM_VALUES,
                         M.MAX_VALUE_BYTES, block=block, entries=True)
    try:
        read = list(values)
    except Unsure:
        return
    for prefix, value in read:
        if prefix.endswith(".item"):
            piece = data[value.offset:value.offset + value.size]
            assert xxhash.xxh3_128_digest(piece) == value.digest
            assert typed(list(M.ijson.items(io.BytesIO(piece), "", use_float=True))[0]) == \
                typed(value.value)


@settings(max_examples=int(os.environ.get("QUICK_EXAMPLES", 600)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(MEMBER, min_size=1, max_size=5), st.sampled_from(STYLES), st.integers(1, 40),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 3),
                          st.sampled_from([b"", b",", b"]", b"}", b"[", b"{", b'"', b"\\", b"1",
                                           b"\x0c", b"\xff", b"\\ud800", b"12345678901234567890",
                                           b" ", b":"])), min_size=1, max_size=3))
def test_damaged_documents_are_never_read_otherwise(members, style, block, edits):
    data = bytearray(document(members, style))
    for where, cut, insert in edits:
        where %= len(data) + 1
        data[where:where + cut] = insert
    assert agree(bytes(data), block)


@pytest.mark.parametrize("text", [
    b'{"version": 1, "images": [{"id": 1}, {"id": 2}], "shapes": []}',
    b'{"images": [{"id": 1} , {"id": 2}]}',
    b'{"images": [{"id": 1}, 7, {"id": 2}]}',  # a scalar between entries
    b'{"images": [{"id": 1}, {"id": 2},]}',  # a trailing comma
    b'{"images": [{"id": 1} {"id": 2}]}',  # no comma
    b'{"images": [{"id": 1}], }',
    b'{"images": [{"id": 1}]} {}',
    b'{"images": [{"n": 123456789012345678901}]}',  # past 64 bits: yajl refuses it
    b'{"images": [{"n": 1e400}]}',
    b'{"images": [{"n": "\\u005d\\""}]}',
    b'{"images": [{"n": "\\\\"}, {"m": "]"}]}',
    b'{"images": [{"n": "a], [[b"}, {"m": "}{"}]}',  # brackets in strings that span blocks
    b'{"version": 1 "images": []}',
    b'{"version": tru, "images": []}',
    b'{"version": {"a": 1}, "images": []}',
    b'[{"version": 1}]',
    b'{"images": [{"id": 1}]',
])
@pytest.mark.parametrize("block", [1, 2, 3, 5, 8, 1 << 20])
def test_hand_made_documents(text, block):
    assert agree(text, block)


def test_unsure_where_a_limit_is_near():
    deep = b'{"images": [' + b"[" * 70 + b"]" * 70 + b"]}"
    assert quick(deep, 1 << 20) is None
    assert exact(deep) == "ManifestError"
    wide = b'{"shapes": [{"points": [' + b",".join([b"1"] * 600_000) + b"]}]}"
    assert quick(wide, 1 << 20) is None  # over the entry's bytes; the exact reading judges
    assert isinstance(exact(wide), list)  # (and takes it: fewer values than the limit)


@pytest.mark.parametrize("style", STYLES)
def test_manifests_are_read_quickly_and_to_the_same_shapes(tmp_path, style):
    """The product's own kind of file, as writers indent it, takes the quick path whole."""
    manifest = make_manifest(6, seed=3, objects=12)
    data = json.dumps(manifest, **style).encode()
    assert quick(data, 1 << 20) is not None
    assert typed(quick(data, 1 << 20)) == typed(exact(data))
    path = tmp_path / "m.json"
    path.write_bytes(data)
    read = M.read_manifest(path, tmp_path)
    assert [i.name for i in read.images] == [i["name"] for i in manifest["images"]]
    first = manifest["shapes"][0]
    assert read.shapes_of(0)[0].points.tolist() == [float(p) for p in first["points"]]
