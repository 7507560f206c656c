"""Label maps: which class id, colour, train id and instance flag each label name gets.

Two kinds of map exist. The official one is the Cityscapes table (ids 0-33, the license plate at
-1), used whenever every label of a task is in it, so that the official scripts and the training
tools read our output unchanged. Any other task gets ids in its own label order, background first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from worker.errors import LabelMapError

Color = tuple[int, int, int]

# Train id 255 is "ignore"; -1 means the label is never written to a label image.
IGNORE_TRAIN_ID = 255
MAX_LABEL_ID = 255  # labelIds images are 8-bit


@dataclass(frozen=True, slots=True)
class Label:
    name: str  # as written to polygons.json and label_color.txt
    id: int  # pixel value in labelIds; -1: not drawn
    color: Color
    has_instances: bool
    train_id: int = IGNORE_TRAIN_ID


# The Cityscapes label table: name, id, train id, has instances, colour.
_OFFICIAL_ROWS: tuple[tuple[str, int, int, bool, Color], ...] = (
    ("unlabeled", 0, 255, False, (0, 0, 0)),
    ("ego vehicle", 1, 255, False, (0, 0, 0)),
    ("rectification border", 2, 255, False, (0, 0, 0)),
    ("out of roi", 3, 255, False, (0, 0, 0)),
    ("static", 4, 255, False, (0, 0, 0)),
    ("dynamic", 5, 255, False, (111, 74, 0)),
    ("ground", 6, 255, False, (81, 0, 81)),
    ("road", 7, 0, False, (128, 64, 128)),
    ("sidewalk", 8, 1, False, (244, 35, 232)),
    ("parking", 9, 255, False, (250, 170, 160)),
    ("rail track", 10, 255, False, (230, 150, 140)),
    ("building", 11, 2, False, (70, 70, 70)),
    ("wall", 12, 3, False, (102, 102, 156)),
    ("fence", 13, 4, False, (190, 153, 153)),
    ("guard rail", 14, 255, False, (180, 165, 180)),
    ("bridge", 15, 255, False, (150, 100, 100)),
    ("tunnel", 16, 255, False, (150, 120, 90)),
    ("pole", 17, 5, False, (153, 153, 153)),
    ("polegroup", 18, 255, False, (153, 153, 153)),
    ("traffic light", 19, 6, False, (250, 170, 30)),
    ("traffic sign", 20, 7, False, (220, 220, 0)),
    ("vegetation", 21, 8, False, (107, 142, 35)),
    ("terrain", 22, 9, False, (152, 251, 152)),
    ("sky", 23, 10, False, (70, 130, 180)),
    ("person", 24, 11, True, (220, 20, 60)),
    ("rider", 25, 12, True, (255, 0, 0)),
    ("car", 26, 13, True, (0, 0, 142)),
    ("truck", 27, 14, True, (0, 0, 70)),
    ("bus", 28, 15, True, (0, 60, 100)),
    ("caravan", 29, 255, True, (0, 0, 90)),
    ("trailer", 30, 255, True, (0, 0, 110)),
    ("train", 31, 16, True, (0, 80, 100)),
    ("motorcycle", 32, 17, True, (0, 0, 230)),
    ("bicycle", 33, 18, True, (119, 11, 32)),
    ("license plate", -1, -1, False, (0, 0, 142)),
)
OFFICIAL_LABELS: tuple[Label, ...] = tuple(
    Label(name, id_, color, inst, train) for name, id_, train, inst, color in _OFFICIAL_ROWS
)
# Names of the label at id 0, as tools and datasets write it ("void": the category of
# Cityscapes' own id 0, and the first line of some label_color.txt files).
BACKGROUND_NAMES = frozenset({"background", "unlabeled", "unlabelled", "void"})
_NAME_JUNK = re.compile(r"[\s_\-]+")
# Control characters, and every line break str.splitlines() honours (NEL is a C1 control): a name
# holding one would split a line of label_color.txt for some reader.
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# A label_color.txt line: ASCII digits only (int() takes '²' and '٣'), ASCII blanks between.
_LABEL_LINE = re.compile(r"[ \t]*([0-9]+)[ \t]+([0-9]+)[ \t]+([0-9]+)[ \t]+(.*?)[ \t]*")


def normalize_name(name: str) -> str:
    """The key names are compared by: case, spaces, '-' and '_' do not count."""
    return _NAME_JUNK.sub("", name).lower()


def parse_color(value: str | Sequence[int], where: str) -> Color:
    """'#rrggbb' or an (r, g, b) sequence, each channel 0-255."""
    if isinstance(value, str):
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", value):
            raise LabelMapError(f"{where}: colour {value!r} is not of the form #rrggbb")
        return (int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16))
    channels = tuple(value)
    if len(channels) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in channels):
        raise LabelMapError(f"{where}: colour {value!r} is not three integers 0-255")
    return channels  # type: ignore[return-value]


class LabelMap:
    """Label name -> Label, with the background label at id 0."""

    def __init__(
        self, labels: Iterable[Label], official: bool, file_names: dict[int, str] | None = None
    ):
        self.labels: tuple[Label, ...] = tuple(labels)
        self.official = official
        self._file_names = file_names or {}  # label index -> name in label_color.txt
        self._by_key: dict[str, Label] = {}
        for label in self.labels:
            self._by_key.setdefault(normalize_name(label.name), label)
        self.background = self.labels[0]
        if official:
            for alias in BACKGROUND_NAMES:
                self._by_key.setdefault(alias, self.background)

    def fingerprint(self) -> str:
        """Everything about the map that an export's bytes depend on."""
        return repr((self.labels, self.official, sorted(self._file_names.items())))

    @classmethod
    def cityscapes(cls, spellings: Iterable[str] = ()) -> LabelMap:
        """The official table; `spellings` are the task's names for its labels.

        label_color.txt then uses the task's spelling ("trafficlight"), so that a tool importing
        the zip back into the same task matches its labels; polygons.json keeps the official one.
        """
        labels = list(OFFICIAL_LABELS)
        by_key = {normalize_name(label.name): i for i, label in enumerate(labels)}
        spelled = {}
        for name in spellings:
            i = by_key.get(normalize_name(name))
            if i is not None:
                spelled[i] = name
        return cls(labels, official=True, file_names=spelled)

    @classmethod
    def from_task(cls, task_labels: Sequence[tuple[str, Color]], mode: str = "source") -> LabelMap:
        """The map an export uses for a task's labels.

        mode "source": the official table if every label (but a black background) is in it, else
        the task's own order with the background first; "cityscapes": always the official table;
        "custom": always the task's own order.
        """
        names = [name for name, _ in task_labels]
        check_label_names(names)
        if mode == "cityscapes" or (mode == "source" and fits_official_table(task_labels)):
            return cls.cityscapes(names)
        if mode not in ("source", "custom"):
            raise LabelMapError(f"label map {mode!r} is not one of source, cityscapes or a list")
        background = [n for n, _ in task_labels if normalize_name(n) in BACKGROUND_NAMES][:1]
        bg_name = background[0] if background else "background"
        labels = [Label(bg_name, 0, (0, 0, 0), has_instances=False)]
        for name, color in task_labels:
            if name in background:
                continue
            labels.append(Label(name, len(labels), color, has_instances=True))
        if len(labels) - 1 > MAX_LABEL_ID:
            raise LabelMapError(
                f"{len(labels)} labels with the background; labelIds PNGs hold at most 256"
            )
        return cls(labels, official=False)

    @classmethod
    def from_label_color_txt(cls, lines: Sequence[tuple[str, Color]]) -> LabelMap:
        """The map an archive's label_color.txt describes: line k is id k, whatever its name, so
        the first line is the background ('void', say) and nothing is shifted. The official table
        when the lines are it, in its order (its instance flags and plate kept)."""
        names = [name for name, _ in lines]
        check_label_names(names)
        official = cls.cityscapes(names)
        if all(getattr(official.lookup(name), "id", None) == i for i, name in enumerate(names)):
            return official
        if len(lines) - 1 > MAX_LABEL_ID:
            raise LabelMapError(f"{len(lines)} labels; labelIds PNGs hold at most 256")
        return cls(
            (Label(name, i, color, has_instances=i > 0) for i, (name, color) in enumerate(lines)),
            official=False,
        )

    def lookup(self, name: str) -> Label | None:
        return self._by_key.get(normalize_name(name))

    def by_id(self, label_id: int) -> Label | None:
        """The label a pixel value's class id stands for (first in the table)."""
        for label in self.labels:
            if label.id == label_id:
                return label
        return None

    def drawn(self) -> list[Label]:
        """Labels with a pixel value, in id order."""
        return sorted((label for label in self.labels if label.id >= 0), key=lambda lb: lb.id)

    def manifest_labels(self) -> list[dict[str, str]]:
        """The drawable labels as manifest v1 entries, in id order."""
        return [{"name": label.name, "color": color_hex(label.color)} for label in self.drawn()]

    def to_label_color_txt(self) -> str:
        lines = ["# r g b label_name"]
        for i, label in enumerate(self.labels):
            if label.id < 0:
                continue
            r, g, b = label.color
            name = self._file_names.get(i, label.name)
            if _UNSAFE_NAME.search(name) or name != name.strip() or not name:
                raise LabelMapError(f"label name {name!r} cannot be a line of label_color.txt")
            lines.append(f"{r} {g} {b} {name}")
        return "\n".join(lines) + "\n"


def color_hex(color: Color) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def fits_official_table(task_labels: Sequence[tuple[str, Color]]) -> bool:
    official = {normalize_name(label.name) for label in OFFICIAL_LABELS}
    for name, color in task_labels:
        key = normalize_name(name)
        if key in official:
            continue
        if key in BACKGROUND_NAMES and color == (0, 0, 0):
            continue
        return False
    return True


def check_label_names(names: Sequence[str]) -> None:
    seen: dict[str, str] = {}
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise LabelMapError(f"label name {name!r} is empty")
        if _UNSAFE_NAME.search(name) or name != name.strip() or name.startswith("#"):
            raise LabelMapError(
                f"label name {name!r} has control characters, edge spaces or a leading '#'"
            )
        key = normalize_name(name)
        if key in seen:
            raise LabelMapError(f"label names {seen[key]!r} and {name!r} are the same label")
        seen[key] = name


def parse_label_color_txt(text: str, source: str = "label_color.txt") -> list[tuple[str, Color]]:
    """`r g b name` lines (names may hold spaces; '#' starts a comment line); order is the id.
    Lines end at '\n' only (a '\r' before it is dropped), as to_label_color_txt writes them."""
    labels: list[tuple[str, Color]] = []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        stripped = line.strip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        match = _LABEL_LINE.fullmatch(line)
        if match is None or not match[4]:
            raise LabelMapError(f"{source} line {number}: expected 'r g b name', got {line!r}")
        color = parse_color([int(p) for p in match.groups()[:3]], f"{source} line {number}")
        name = match[4]
        if _UNSAFE_NAME.search(name) or name != name.strip():
            raise LabelMapError(
                f"{source} line {number}: label name {name!r} has control characters, line breaks"
                " or edge spaces"
            )
        labels.append((name, color))
    if not labels:
        raise LabelMapError(f"{source}: no labels")
    return labels
