"""Comment- and style-preserving edits of params.yaml, re-validated through the params schema.

ruamel.yaml's round-trip composer gives every node of the document with its exact start and end position
in the source. An edit replaces only the characters of the value it changes (or inserts one `key: value`
into a mapping), so comments, alignment, quoting, flow/block style and every other line stay byte for byte
as they were: the diff is exactly the changed lines, whatever style params.yaml has (a round-trip *dump*
would re-indent and re-align the whole file). The edited text is then parsed again and compared with the
intended data, and validated by `infopt.params.parse_params`.

Key paths use the names params errors use: `deployments[textcls-premium].replicas.min`; `[name]` selects
the list item whose `name` is that value, `[3]` the item at that index. `dvc_key` turns a path into the
index form `dvc exp run -S` takes (`deployments.0.replicas.min`).
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from agent.contract import ParamChange, ParamValue
from infopt.params import Params, parse_params

_SEGMENT = re.compile(r"([^.\[\]]+)|\[([^\]]+)\]")


class ParamsEditError(ValueError):
    """A change cannot be applied: unknown path, stale old value, or an edit the text form cannot take."""


@dataclass(frozen=True)
class Key:
    name: str


@dataclass(frozen=True)
class Select:
    """A list item: by position (`[3]`) or by its `name` field (`[textcls-premium]`)."""

    value: str

    @property
    def index(self) -> int | None:
        return int(self.value) if self.value.isdigit() else None


Segment = Key | Select


def parse_path(path: str) -> list[Segment]:
    segments: list[Segment] = []
    position = 0
    for match in _SEGMENT.finditer(path):
        gap = path[position : match.start()]
        if gap not in ("", "."):
            raise ParamsEditError(f"key path {path!r}: unexpected {gap!r} at character {position}")
        position = match.end()
        key, selector = match.groups()
        segments.append(Key(key) if key is not None else Select(selector))
    if not segments or position != len(path):
        raise ParamsEditError(f"key path {path!r} is not of the form a.b[name].c")
    return segments


# ----------------------------------------------------------------------------- plain data
def _select(items: list[Any], selector: Select, where: str) -> int:
    if selector.index is not None:
        if selector.index >= len(items):
            raise ParamsEditError(f"{where}: index {selector.index} is out of range ({len(items)} items)")
        return selector.index
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == selector.value:
            return index
    names = [item.get("name") for item in items if isinstance(item, dict)]
    raise ParamsEditError(f"{where}: no item named {selector.value!r} (items are {names})")


_MISSING = object()


def get_value(data: Any, path: str) -> Any:
    """The value at `path` in plain loaded data; `_MISSING` (ParamsEditError for a missing parent) if absent."""
    node = data
    segments = parse_path(path)
    for number, segment in enumerate(segments):
        where = _format(segments[: number + 1])
        last = number == len(segments) - 1
        if isinstance(segment, Key):
            if not isinstance(node, dict):
                raise ParamsEditError(f"{where}: parent is not a mapping")
            if segment.name not in node:
                if last:
                    return _MISSING
                raise ParamsEditError(f"{where} is absent; set the whole section at {where} instead")
            node = node[segment.name]
        else:
            if not isinstance(node, list):
                raise ParamsEditError(f"{where}: parent is not a list")
            node = node[_select(node, segment, where)]
    return node


def set_value(data: Any, path: str, value: Any) -> None:
    segments = parse_path(path)
    parent = data
    for number, segment in enumerate(segments[:-1]):
        where = _format(segments[: number + 1])
        if isinstance(segment, Key):
            if not isinstance(parent, dict) or segment.name not in parent:
                raise ParamsEditError(f"{where} is absent; set the whole section at {where} instead")
            parent = parent[segment.name]
        else:
            parent = parent[_select(parent, segment, where)]
    last = segments[-1]
    if isinstance(last, Key):
        parent[last.name] = value
    else:
        parent[_select(parent, last, path)] = value


def dvc_key(path: str, data: Any) -> str:
    """The `dvc exp run -S` form of `path`: name selectors become list indexes."""
    parts: list[str] = []
    node = data
    segments = parse_path(path)
    for number, segment in enumerate(segments):
        if isinstance(segment, Key):
            parts.append(segment.name)
            node = node.get(segment.name) if isinstance(node, dict) else None
        else:
            if not isinstance(node, list):
                raise ParamsEditError(f"{_format(segments[: number + 1])}: parent is not a list")
            index = _select(node, segment, _format(segments[: number + 1]))
            parts.append(str(index))
            node = node[index]
    return ".".join(parts)


def _format(segments: Sequence[Segment]) -> str:
    out = ""
    for segment in segments:
        if isinstance(segment, Key):
            out += ("." if out else "") + segment.name
        else:
            out += f"[{segment.value}]"
    return out


# ----------------------------------------------------------------------------- rendering
def _plain_ok(text: str) -> bool:
    """True when `text` written unquoted reads back as the same string in flow and block context."""
    if not text or text != text.strip() or any(ch in text for ch in ",[]{}#:\n\"'"):
        return False
    loaded = YAML(typ="safe").load(f"k: {text}")
    return isinstance(loaded, dict) and loaded.get("k") == text


def render(value: ParamValue, *, quote: str | None = None) -> str:
    """A YAML flow-style rendering of `value`; strings keep the quote style of the scalar they replace."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParamsEditError(f"cannot write {value!r} to params.yaml")
        text = repr(value)
        mantissa, _, exponent = text.partition("e")
        if exponent and "." not in mantissa:
            text = f"{mantissa}.0e{exponent}"  # YAML 1.2 floats need the dot
        return text
    if isinstance(value, str):
        if quote == "'":
            return "'" + value.replace("'", "''") + "'"
        if quote == '"' or not _plain_ok(value):
            return json.dumps(value)
        return value
    if isinstance(value, list):
        return "[" + ", ".join(render(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {render(item)}" for key, item in value.items()) + "}"
    raise ParamsEditError(f"cannot write a {type(value).__name__} to params.yaml")


# ----------------------------------------------------------------------------- source edits
@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str
    order: int


def _child(node: Node, segment: Segment, where: str) -> tuple[Node | None, MappingNode | None]:
    """(child node or None if the key is absent, the mapping it belongs to)."""
    if isinstance(segment, Key):
        if not isinstance(node, MappingNode):
            raise ParamsEditError(f"{where}: parent is not a mapping")
        for key_node, value_node in node.value:
            if key_node.value == segment.name:
                return value_node, node
        return None, node
    if not isinstance(node, SequenceNode):
        raise ParamsEditError(f"{where}: parent is not a list")
    items = node.value
    if segment.index is not None:
        if segment.index >= len(items):
            raise ParamsEditError(f"{where}: index {segment.index} is out of range ({len(items)} items)")
        return items[segment.index], None
    for item in items:
        if isinstance(item, MappingNode):
            for key_node, value_node in item.value:
                if (
                    key_node.value == "name"
                    and isinstance(value_node, ScalarNode)
                    and value_node.value == segment.value
                ):
                    return item, None
    raise ParamsEditError(f"{where}: no item named {segment.value!r}")


def _aligned(text: str, start: int, end: int, new: str, order: int) -> _Edit:
    """Replace text[start:end] by `new`, keeping a trailing comment in its column where the padding allows."""
    padding = len(text[end:]) - len(text[end:].lstrip(" "))
    if padding and text[end + padding : end + padding + 1] == "#":
        keep = max(1, padding - (len(new) - (end - start)))
        return _Edit(start, end + padding, new + " " * keep, order)
    return _Edit(start, end, new, order)


def _last_content_index(node: Node) -> int:
    if isinstance(node, ScalarNode) or getattr(node, "flow_style", False):
        return int(node.end_mark.index)
    children: list[Node] = []
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            children += [key_node, value_node]
    elif isinstance(node, SequenceNode):
        children = list(node.value)
    return max((_last_content_index(child) for child in children), default=int(node.start_mark.index))


def _edit_for(text: str, root: Node, change: ParamChange, order: int) -> _Edit:
    segments = parse_path(change.path)
    node: Node = root
    for number, segment in enumerate(segments[:-1]):
        child, _ = _child(node, segment, _format(segments[: number + 1]))
        if child is None:
            where = _format(segments[: number + 1])
            raise ParamsEditError(f"{where} is absent; set the whole section at {where} instead")
        node = child
    target, mapping = _child(node, segments[-1], change.path)
    if target is not None:
        if isinstance(target, ScalarNode):
            quote = target.style if target.style in ("'", '"') and isinstance(change.new, str) else None
            return _aligned(
                text, target.start_mark.index, target.end_mark.index, render(change.new, quote=quote), order
            )
        if getattr(target, "flow_style", False):
            return _Edit(target.start_mark.index, target.end_mark.index, render(change.new), order)
        raise ParamsEditError(
            f"{change.path} is a block-style {type(target).__name__.removesuffix('Node').lower()}; "
            "change its scalar keys one by one"
        )
    assert mapping is not None and isinstance(segments[-1], Key)  # a missing list item raised above
    entry = f"{segments[-1].name}: {render(change.new)}"
    if getattr(mapping, "flow_style", False):
        close = int(mapping.end_mark.index) - 1
        if text[close] != "}":
            raise ParamsEditError(f"{change.path}: cannot find the closing brace of its flow mapping")
        return _Edit(close, close, (", " if mapping.value else "") + entry, order)
    indent = int(mapping.value[0][0].start_mark.column) if mapping.value else 0
    end = _last_content_index(mapping)
    newline = text.find("\n", end)
    at = len(text) if newline < 0 else newline + 1
    prefix = "" if newline >= 0 or text.endswith("\n") else "\n"
    return _Edit(at, at, f"{prefix}{' ' * indent}{entry}\n", order)


@dataclass(frozen=True)
class EditResult:
    before: str
    after: str
    params: Params  # the edited file, validated
    diff: str  # unified diff, `a/<name>` -> `b/<name>`

    @property
    def changed_lines(self) -> int:
        return sum(1 for line in self.diff.splitlines() if line.startswith("+") and not line.startswith("+++"))


def check_old_values(data: Any, changes: Sequence[ParamChange]) -> None:
    """Each change's `old` must be what params.yaml holds now (absent keys read as None)."""
    for change in changes:
        current = get_value(data, change.path)
        current = None if current is _MISSING else current
        if current != change.old:
            raise ParamsEditError(
                f"{change.path} is {current!r} in params.yaml but the evidence was read with {change.old!r}; "
                "re-run the agent on the current params"
            )


def apply_changes(text: str, changes: Sequence[ParamChange], *, source: str = "params.yaml") -> EditResult:
    """Edit `text` in place; raises ParamsEditError (bad path/edit) or infopt ParamsError (schema)."""
    if not changes:
        raise ParamsEditError("no changes to apply")
    paths = [change.path for change in changes]
    if len(set(paths)) != len(paths):
        raise ParamsEditError(f"the same key is changed twice: {paths}")
    data = YAML(typ="safe").load(text)
    check_old_values(data, changes)
    root = YAML().compose(text)
    edits = [_edit_for(text, root, change, order) for order, change in enumerate(changes)]
    spans = sorted((edit.start, edit.end) for edit in edits if edit.end > edit.start)
    for (_, first_end), (second_start, _) in itertools.pairwise(spans):
        if second_start < first_end:
            raise ParamsEditError(f"changes {paths} overlap (one path contains another)")
    after = text
    for edit in sorted(edits, key=lambda e: (e.start, e.order), reverse=True):
        after = after[: edit.start] + edit.text + after[edit.end :]
    expected = copy.deepcopy(data)
    for change in changes:
        set_value(expected, change.path, change.new)
    reread = YAML(typ="safe").load(after)
    if reread != expected:
        raise ParamsEditError(f"editing {paths} did not give the intended data (a quoting or style case not handled)")
    params = parse_params(reread, f"{source} (as edited by the agent)")
    diff = "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{source}", f"b/{source}", n=1
        )
    )
    return EditResult(before=text, after=after, params=params, diff=diff)
