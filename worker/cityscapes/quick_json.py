"""The entries of a JSON document's top-level lists, found by scanning its bytes with numpy and
built by yajl's C builder a batch at a time: about 4x less CPU than walking the parse events in
Python, which is what a manifest of street scenes spends most of its reading on.

It takes only documents it can vouch for: an object at the root, whose values are scalars or
lists of containers, with every limit of the exact reading (nesting, values in an entry, the
length of one token) kept by a margin. Anything else raises Unsure before a value it cannot vouch
for is handed out, and the caller reads the file again the exact way, which names the problem as
it always has. yajl parses every byte either way, so the values are the ones the exact reading
builds.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from typing import Any

import ijson
import numpy as np
import orjson
import xxhash

BLOCK = 1 << 20  # bytes scanned at a time
BATCH = 1 << 20  # bytes of entries built at a time
MAX_GAP = 4096  # bytes between two entries of a list (blanks and a comma, as writers put them)

_BRACKET = np.zeros(256, np.int8)
_BRACKET[[ord("["), ord("{")]] = 1
_BRACKET[[ord("]"), ord("}")]] = -1
_QUOTE, _BACKSLASH = ord('"'), ord("\\")
# The root object's own text, between its containers: keys, scalars and separators.
_ROOT_TOKEN = re.compile(rb'[ \t\n\r]*("(?:[^"\\]|\\.)*"|[^ \t\n\r,:"{}\[\]]+|[,:])', re.S)
_BLANK = re.compile(rb"[ \t\n\r]*")  # JSON's blanks, no others
_SEPARATOR = re.compile(rb"[ \t\n\r]*,[ \t\n\r]*")


_LIST = object()  # a member's value that is a list, read entry by entry


class Unsure(Exception):
    """The document holds something only the exact, event by event reading may judge."""


class Entry:
    """An entry of a top-level list with where its bytes lie in the document: `digest` is the
    XXH3-128 of those bytes, which decide its value. `value` is None where the reader was told
    the digest is known (the entry was not built)."""

    __slots__ = ("value", "digest", "offset", "size")

    def __init__(self, value: Any, digest: bytes, offset: int | None, size: int):
        self.value, self.digest, self.offset, self.size = value, digest, offset, size


def _scalar(token: bytes) -> Any:
    """One JSON scalar, as yajl reads it."""
    try:
        (value,) = ijson.items(io.BytesIO(token), "", use_float=True)  # the token whole
    except (ijson.JSONError, ValueError):
        raise Unsure from None
    return value


class QuickValues:
    """("", key) for each key of the root object and (prefix, value) for each entry of a
    top-level list (prefix "images.item") or scalar at a key ("version") among `wanted`, in file
    order, as `manifest.top_level_values` yields them. `wanted` may change between values.

    With `entries`, a list's entries come as Entry; those whose digest `known` (given with the
    wanted prefixes) accepts are not built (their bytes were read to a valid value before)."""

    def __init__(self, read: Callable[[int], bytes], wanted: tuple[str, ...], max_depth: int,
                 max_entry_bytes: int, max_text_bytes: int, block: int = BLOCK,
                 entries: bool = False):
        self.read, self.wanted = read, wanted
        self.max_depth, self.max_entry, self.max_text = max_depth, max_entry_bytes, max_text_bytes
        self.block = block
        self.entries = entries
        self.known: Callable[[bytes], bool] | None = None
        self._values = self._scan()

    def __iter__(self) -> QuickValues:
        return self

    def want(self, wanted: tuple[str, ...], known: Callable[[bytes], bool] | None = None) -> None:
        self.wanted, self.known = wanted, known

    def __next__(self) -> tuple[str, Any]:
        return next(self._values)

    def _scan(self) -> Iterator[tuple[str, Any]]:
        self._depth, in_string, escaped = 0, False, False
        self._text = bytearray()  # at the root or between entries, since the last bracket
        self._entry = bytearray()  # the entry still open at the end of the last block
        self._pieces: list[bytes] = []  # entries read, not yet built
        self._places: list[int] = []  # where each of them begins in the document
        self._size = self._entries = 0  # bytes in _pieces; entries of the list so far
        self._offset = self._entry_at = 0  # where `data` begins; where _entry began
        root = _RootGrammar()
        section = ""  # the list being read, as a prefix ("shapes.item")
        while data := self.read(self.block):
            codes = np.frombuffer(data, np.uint8)
            quotes, escaped = _unescaped_quotes(data, codes, escaped)
            brackets = np.flatnonzero(_BRACKET[codes])
            if len(quotes):
                inside = (np.searchsorted(quotes, brackets) + in_string) & 1
                brackets = brackets[inside == 0]
                in_string = bool((len(quotes) + in_string) & 1)
            elif in_string:  # the whole block lies within one string
                brackets = brackets[:0]
            steps = _BRACKET[codes[brackets]].astype(np.int64)
            after = self._depth + np.cumsum(steps)
            if len(after) and (after.max() > self.max_depth or after.min() < 0):
                raise Unsure
            before = after - steps
            shallow = np.flatnonzero(np.minimum(before, after) <= 2)
            at, was, now = brackets[shallow], before[shallow], after[shallow]
            start = first = 0  # bytes of `data` and brackets of `at` not yet taken
            for level in [*np.flatnonzero(np.maximum(was, now) <= 2).tolist(), len(at)]:
                if level > first:  # entries open and close at at[first:level]
                    start = self._entry_run(data, start, at[first:level])
                    if self._size >= BATCH:
                        yield from self._built(section)
                if level == len(at):
                    break
                place, first = int(at[level]), level + 1
                self._text += data[start:place]
                start = place + 1
                if was[level] == 2:  # a list at a key of the root closes
                    if data[place] != ord("]") or not _BLANK.fullmatch(self._text):
                        raise Unsure
                    yield from self._built(section)
                else:  # the root opens or closes, or a list at one of its keys opens
                    members = root.take(self._text)
                    if now[level] == 2:
                        key = root.open_list(data[place])
                        if key in self.wanted:  # wanted whole: the exact reading builds it
                            raise Unsure
                        members.append((key, _LIST))
                        section, self._entries = key + ".item", 0
                    elif now[level] == 1:
                        root.open(data[place])
                    else:
                        root.close(data[place])
                    yield from self._wanted(members)
                self._text.clear()
            self._depth = int(after[-1]) if len(after) else self._depth
            piece = self._entry if self._depth >= 3 else self._text
            piece += data[start:]
            self._offset += len(data)
            if len(piece) > (self.max_entry if self._depth >= 3 else self.max_text):
                raise Unsure
        if self._depth or in_string or root.state != "closed" or not _BLANK.fullmatch(self._text):
            raise Unsure

    def _entry_run(self, data: bytes, start: int, at: np.ndarray) -> int:
        """Take the entries of a list that open and close at `at` (alternately; the first may
        close one opened in an earlier block, the last may open one that goes on); return
        where the bytes not taken begin. Each entry is taken as a slice of its own; the
        separators between them are checked here, their insides by yajl or orjson."""
        if self._entry:  # the first closes the entry open since an earlier block
            self._entry += data[start:int(at[0]) + 1]
            self._take(bytes(self._entry), self._entry_at)
            self._entry.clear()
            start, at = int(at[0]) + 1, at[1:]
        if not len(at):
            return start
        opens, closes = at[0::2], at[1::2]
        self._text += data[start:int(opens[0])]
        if not (_SEPARATOR if self._entries else _BLANK).fullmatch(self._text):
            raise Unsure
        self._text.clear()
        whole = len(closes)
        if whole:
            gaps = opens[1:] - closes[: len(opens) - 1]
            if len(gaps) and int(gaps.max()) > MAX_GAP:
                raise Unsure
            first, ends = opens[:whole].tolist(), (closes + 1).tolist()
            for k, (begin, end) in enumerate(zip(first, ends)):
                if k and not _SEPARATOR.fullmatch(data, ends[k - 1], begin):
                    raise Unsure
                self._take(data[begin:end], self._offset + begin)
            start = ends[-1]
        if len(opens) > whole:  # the last one goes on past this block
            if whole and not _SEPARATOR.fullmatch(data, start, int(opens[-1])):
                raise Unsure
            start = int(opens[-1])
            self._entry_at = self._offset + start
        return start

    def _take(self, entry: bytes, offset: int) -> None:
        if len(entry) > self.max_entry:
            raise Unsure
        self._pieces.append(entry)
        self._places.append(offset)
        self._size += len(entry)
        self._entries += 1

    def _wanted(self, members: list[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
        for key, value in members:
            yield "", key
            if value is not _LIST and key in self.wanted:
                yield key, value

    def _built(self, section: str) -> list[tuple[str, Any]]:
        """The entries taken so far, built by a C parser (and parsed even if not wanted: the
        exact reading fails on a malformed entry wherever it is). orjson is 3x faster than
        yajl's builder and reads valid JSON to the same values, except integers past 64 bits,
        which yajl refuses: where a run of 19 digits may hold one, yajl builds the batch."""
        if not self._pieces:
            return []
        pieces, places = self._pieces, self._places
        self._pieces, self._places, self._size = [], [], 0
        digests = [xxhash.xxh3_128_digest(p) for p in pieces] if self.entries else []
        known = [False] * len(pieces)
        if self.known is not None and section in self.wanted:
            known = [self.known(d) for d in digests]
        built = [p for p, k in zip(pieces, known) if not k]
        batch = b"[" + b",".join(built) + b"]"
        try:
            if _has_long_number(batch):
                values = list(ijson.items(io.BytesIO(batch), "item", use_float=True))
            else:
                values = orjson.loads(batch)
        except (ijson.JSONError, orjson.JSONDecodeError):
            raise Unsure from None
        if section not in self.wanted:
            return []
        if not self.entries:
            return [(section, value) for value in values]
        if len(built) < len(pieces):  # the known ones were not built
            values = iter(values)
            values = [None if k else next(values) for k in known]
        return [(section, Entry(value, digest, place, len(piece)))
                for value, digest, place, piece in zip(values, digests, places, pieces)]


def _has_long_number(data: bytes) -> bool:
    """Whether `data` holds 19 digits in a row (in a number or a string: a bound)."""
    run = (np.frombuffer(data, np.uint8) - 48) < 10  # 1 or more in a row
    for width in (1, 2, 4, 8):  # 2, 4, 8, 16 or more in a row
        run = run[:-width] & run[width:]
    return bool((run[:-3] & run[3:]).any())  # 19 or more


def _unescaped_quotes(data: bytes, codes: np.ndarray, escaped: bool
                      ) -> tuple[np.ndarray, bool]:
    """The places of the quotes that open or close strings, and whether the block ends on a
    backslash that escapes the next byte. Backslashes are rare: where a block holds one, its
    quotes are looked at one by one."""
    quotes = np.flatnonzero(codes == _QUOTE)
    if not escaped and b"\\" not in data:
        return quotes, False
    kept = []
    run = 1 if escaped else 0  # backslashes just before the current byte, as a parity
    position = 0
    for at in np.flatnonzero((codes == _QUOTE) | (codes == _BACKSLASH)):
        at = int(at)
        if at != position:
            run = 0
        if codes[at] == _BACKSLASH:
            run ^= 1
        else:
            if not run:
                kept.append(at)
            run = 0
        position = at + 1
    ends_escaped = bool(run) and position == len(data)
    return np.asarray(kept, np.int64), ends_escaped


class _RootGrammar:
    """The root object's own tokens, checked as they come: "{" key ":" value ("," key ":"
    value)* "}", where a value is a scalar or a list."""

    def __init__(self) -> None:
        self.state = "open"  # what may come next
        self.key = ""

    def take(self, text: bytearray) -> list[tuple[str, Any]]:
        """The members begun in `text`, all of it: (key, scalar value), or (key, _LIST) for the
        key of the list that opens after it."""
        events: list[tuple[str, Any]] = []
        position = 0
        while match := _ROOT_TOKEN.match(text, position):
            position, token = match.end(), match[1]
            if self.state in ("key or end", "key") and token.startswith(b'"'):
                self.key, self.state = _scalar(token), "colon"
                if not isinstance(self.key, str):
                    raise Unsure
            elif self.state == "colon" and token == b":":
                self.state = "value"
            elif self.state == "value" and token not in (b",", b":"):
                self.state = "comma or end"
                events.append((self.key, _scalar(token)))
            elif self.state == "value" and token == b"[":  # (handed in by the scan)
                self.state = "comma or end"
                events.append((self.key, _LIST))
            elif self.state == "comma or end" and token == b",":
                self.state = "key"
            else:
                raise Unsure
        if not _BLANK.fullmatch(text, position):
            raise Unsure
        return events

    def open(self, bracket: int) -> None:
        if self.state != "open" or bracket != ord("{"):
            raise Unsure
        self.state = "key or end"

    def open_list(self, bracket: int) -> str:
        if self.state != "value" or bracket != ord("["):
            raise Unsure
        self.state = "comma or end"
        return self.key

    def close(self, bracket: int) -> None:
        if self.state not in ("key or end", "comma or end") or bracket != ord("}"):
            raise Unsure
        self.state = "closed"
