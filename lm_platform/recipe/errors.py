"""Recipe errors as a user reads them: one line per mistake, `<file>:<line>: <field path>: <what is wrong>`,
ending with "did you mean '...'?" where a near name exists.

Pydantic's errors are translated here: the discriminator of a union (a filter's `name`) is left out of the
path, an unknown key names the key it probably meant, a value outside a fixed set names the near choice,
and an error that only follows from another one (a tuple "too short" because its one item failed) is
dropped, so one mistake gives one line.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from lm_platform.recipe.base import did_you_mean, near_name
from lm_platform.recipe.json_schema import recipe_json_schema

Loc = tuple[str | int, ...]
MISSING = "required, but missing"
_PATH = re.compile(r"^([A-Za-z_][\w-]*(?:\.[\w-]+)*): (.+)$", re.S)


@dataclass(frozen=True)
class Problem:
    """One mistake: where (a field path) and what is wrong."""

    loc: Loc
    message: str
    meant: str | None = None  # for an unknown key: the known key it was probably meant to be

    @classmethod
    def parse(cls, text: str) -> Problem:
        """`"stages.0.init_from: ..."` -> Problem(("stages", 0, "init_from"), "...")."""
        m = _PATH.match(text)
        if not m:
            return cls((), text)
        return cls(_split(m.group(1)), m.group(2))

    @property
    def path(self) -> str:
        return ".".join(str(p) for p in self.loc)


def _split(path: str) -> Loc:
    return tuple(int(p) if p.isdigit() else p for p in path.split("."))


def format_problems(problems: list[Problem], origin: str, text: str | None = None) -> str:
    """One line per problem: `<origin>:<line>: <path>: <message>` (the line where the YAML text has it)."""
    root = _compose(text)
    lines = []
    for p in problems:
        line = _line(root, p.loc) if root is not None else None
        where = f"{origin}:{line}" if line else origin
        message = " ".join(p.message.split())  # one line, whatever the message held
        lines.append(f"{where}: {p.path}: {message}" if p.loc else f"{where}: {message}")
    return "\n".join(lines)


def validation_problems(exc: ValidationError, raw: Any) -> list[Problem]:
    """The user's mistakes in a pydantic ValidationError of `Recipe.model_validate(raw)`."""
    problems = []
    for err in exc.errors():
        loc = _user_loc(tuple(err["loc"]), raw, keep_last=err["type"] in ("extra_forbidden", "missing"))
        found = _translate(err, loc, raw)
        problems += found if isinstance(found, list) else [found]
    # No cascades: an error whose field holds another error only repeats it (a tuple whose one item
    # failed is "too short"); keep the innermost. A misspelt required key is one mistake, not also a
    # missing key: the unknown key's line names the one it meant.
    locs = [p.loc for p in problems]
    meant = {p.loc[:-1] + (p.meant,) for p in problems if p.meant}
    kept = [
        p
        for p in problems
        if not any(len(other) > len(p.loc) and other[: len(p.loc)] == p.loc for other in locs)
        and not (p.message == MISSING and p.loc in meant)
    ]
    out: list[Problem] = []
    for p in kept:
        if p not in out:
            out.append(p)
    return out


def _user_loc(loc: Loc, raw: Any, keep_last: bool) -> Loc:
    """The path as the recipe spells it: pydantic's union tags ('length' in filters.1.length.min_chars)
    and type labels are not keys of the mapping, so they are dropped (with `keep_last`, the last element
    stays: an unknown or missing key is named there)."""
    out: list[str | int] = []
    node = raw
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        in_list = isinstance(node, list | tuple) and isinstance(part, int) and 0 <= part < len(node)
        if in_list or (isinstance(node, dict) and part in node):
            node = node[part]
        elif last and keep_last:
            node = None
        else:
            continue
        out.append(part)
    return tuple(out)


def _at(raw: Any, loc: Loc) -> Any:
    node = raw
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _choices(expected: str) -> list[str]:
    return re.findall(r"'([^']*)'", expected)


def _translate(err: dict, loc: Loc, raw: Any) -> Problem | list[Problem]:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    msg = err["msg"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1], raw)
        key = str(loc[-1])
        near = near_name(key, known)
        if near:
            return Problem(loc, f"unknown key '{key}'; did you mean '{near}'?", meant=near)
        return Problem(loc, f"unknown key '{key}' (known: {', '.join(known)})" if known else "unknown key")
    if kind == "missing":
        return Problem(loc, MISSING)
    if kind == "union_tag_invalid":
        tag, disc = ctx.get("tag"), str(ctx.get("discriminator", "")).strip("'")
        choices = _choices(str(ctx.get("expected_tags", "")))
        what = "filter" if "filters" in loc else disc
        near = near_name(str(tag), choices)
        hint = f"; did you mean '{near}'?" if near else f" (known: {', '.join(choices)})"
        return Problem((*loc, disc), f"unknown {what} '{tag}'{hint}")
    if kind == "union_tag_not_found":
        disc = str(ctx.get("discriminator", "")).strip("'")
        tags = _known_tags(loc, raw, disc)
        return Problem((*loc, disc), MISSING + (f" (one of: {', '.join(tags)})" if tags else ""))
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return Problem(loc, f"needs at least {n} item{'s' if n != 1 else ''}")
    if kind == "literal_error":
        choices = _choices(str(ctx.get("expected", "")))
        return Problem(
            loc, f"{_show(value)} is not one of {ctx.get('expected')}" + did_you_mean(str(value), choices)
        )
    if kind == "value_error":  # a validator's message: one mistake a line, each may start with its path
        node = _at(raw, loc)
        out = []
        for text in msg.removeprefix("Value error, ").splitlines():
            m = _PATH.match(text)
            head = _split(m.group(1)) if m else ()
            if m and isinstance(node, dict) and head[0] in node:
                out.append(Problem(loc + head, m.group(2)))
            else:
                out.append(Problem(loc, text))
        return out
    if msg.startswith("Input should be "):
        shown = "" if isinstance(value, dict | list) else f"{_show(value)} "
        return Problem(loc, f"{shown}should be {msg.removeprefix('Input should be ')}")
    return Problem(loc, msg.removeprefix("Value error, "))


@functools.cache
def _schema() -> dict:

    return recipe_json_schema()


def _node(loc: Loc, raw: Any) -> dict | None:
    """The recipe schema's node for the value at `loc` (unions left unresolved at the last step)."""
    schema = _schema()
    node: dict | None = schema
    for depth, part in enumerate(loc):
        node = _object_branch(_resolve(schema, node), _at(raw, loc[:depth]))
        if node is None:
            return None
        if isinstance(part, int):
            node = node.get("items") if isinstance(node.get("items"), dict) else None
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return _resolve(schema, node)


def _known_keys(loc: Loc, raw: Any) -> list[str]:
    """The keys the recipe's schema allows in the mapping at `loc` (for "did you mean")."""
    node = _object_branch(_node(loc, raw), _at(raw, loc))
    return list((node or {}).get("properties", {}))


def _known_tags(loc: Loc, raw: Any, disc: str) -> list[str]:
    """The values of a union's discriminator at `loc` (the filter names)."""
    node = _node(loc, raw) or {}
    branches = [_resolve(_schema(), b) for b in node.get("oneOf") or node.get("anyOf") or ()]
    return [
        b["properties"][disc]["const"] for b in branches if "const" in b.get("properties", {}).get(disc, {})
    ]


def _resolve(schema: dict, node: dict | None) -> dict | None:
    while isinstance(node, dict) and "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _object_branch(node: dict | None, value: Any) -> dict | None:
    """Of a union (anyOf/oneOf), the branch `value` belongs to: the one whose `const` properties it
    matches (a filter's name), else the first object or array branch."""
    if node is None:
        return None
    branches = node.get("oneOf") or node.get("anyOf")
    if not branches:
        return node
    schema = _schema()
    resolved = [_resolve(schema, b) for b in branches]
    if isinstance(value, dict):
        for b in resolved:
            consts = {k: p["const"] for k, p in b.get("properties", {}).items() if "const" in p}
            if consts and all(value.get(k) == c for k, c in consts.items()):
                return b
    wanted = "array" if isinstance(value, list) else "object"
    return next((b for b in resolved if b.get("type") == wanted), None)


def _compose(text: str | None):
    if text is None:
        return None
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None


def _line(node, loc: Loc) -> int | None:
    """The 1-based line of the deepest part of `loc` the YAML has (a key's line, else its mapping's)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
