"""Metadata filters: a small JSON language, checked at the edge and compiled to one SQL WHERE.

The language (README "Filters"): an object over `document_id`, `source`, `title`, `date`,
`url` (document level, strings), `page` (chunk level, an integer or NULL) and
`metadata.<key>` (`metadata.a.b` reaches nested keys), with the operators `$eq $ne $in $nin
$gt $gte $lt $lte $prefix $exists`, and `$and`/`$or` (non-empty lists of filters) and `$not`
(one filter). A bare value means `$eq`; several entries in one object are ANDed.

Semantics are Mongo's, the least surprising:
- comparisons are typed: a string only ever matches a string, a number a number, a boolean a
  boolean (`true` is not 1, `"5"` is not 5), so `{"$gt": 3}` never matches the string "4";
- a list-valued metadata field matches `$eq`, `$in`, the ranges and `$prefix` when ANY of its
  elements does;
- a missing field (or a NULL `page`/`date`/...) matches nothing but `$ne`, `$nin`,
  `$exists: false` and what `$not` makes of it: `$ne`/`$nin` are exactly not-`$eq`/not-`$in`.

Why compile to SQL rather than test rows in Python: the filter must run INSIDE the search
(the keyword query joins it; the vector search gets the ids it allows), so that a selective
filter still finds k passages. Every compiled expression is 0 or 1, never NULL, so `NOT` is
the plain complement and `$ne` of a missing field is true.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qa.errors import InvalidInput

DOCUMENT_FIELDS = {"document_id": "d.id", "source": "d.source", "title": "d.title",
                   "date": "d.date", "url": "d.url"}
CHUNK_FIELDS = {"page": "c.page"}
METADATA = "metadata"
FIELDS = (*DOCUMENT_FIELDS, *CHUNK_FIELDS, f"{METADATA}.<key>")
OPERATORS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$prefix", "$exists")
LOGICAL = ("$and", "$or", "$not")
_RANGES = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}

# Caps at the edge: a filter is a few conditions written by a person or a site, never a list
# of ids. They bound the SQL a request can make (SQLite binds at most 32,766 values).
MAX_DEPTH = 8  # filter objects nested in $and/$or/$not
MAX_CONDITIONS = 128  # field conditions in the whole filter
MAX_LIST_ITEMS = 1000  # items of one $in/$nin, filters of one $and/$or
MAX_VALUES = 10_000  # values in the whole filter, $in items included
MAX_STRING_CHARS = 1000
MAX_KEY_CHARS = 200  # a field name, `metadata.` and its path included
_INT64 = 2**63  # SQLite's integers: a larger one cannot be bound, so it is refused


@dataclass(frozen=True)
class Filter:
    """A checked filter. `key` is its canonical JSON (sorted keys): equal filters have equal
    keys, which is what caches of the chunks a filter allows are keyed by."""

    key: str
    _where: str = field(repr=False, compare=False)
    _params: tuple[object, ...] = field(repr=False, compare=False)

    def sql(self) -> tuple[str, list[object]]:
        """A WHERE fragment over `c` (chunks) and `d` (documents), and its bound values."""
        return self._where, list(self._params)

    @property
    def matches_all(self) -> bool:
        """True for `{}`: nothing to narrow, so a search can skip the filter altogether."""
        return self._where == "1"


def parse_filter(value: object, where: str = "filter") -> Filter:
    """Check a filter (as decoded from JSON) and compile it; InvalidInput names what is wrong
    and where, e.g. `filter.metadata.tag: unknown operator "$inn" (known: $eq, ...)`."""
    compiler = _Compiler()
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{where}: a filter is a JSON object, got {_shown(value)}")
    clause, params = compiler.filter(value, where, depth=1)
    key = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return Filter(key, clause, tuple(params))


def all_of(*filters: Filter | None) -> Filter | None:
    """The AND of the given filters (None where none is given): a key's fixed filter with a
    request's, which can therefore only narrow what the key allows."""
    given = [f for f in filters if f is not None]
    narrowing = [f for f in given if not f.matches_all]
    if len(narrowing) <= 1:
        return narrowing[0] if narrowing else (given[0] if given else None)
    key = json.dumps({"$and": [json.loads(f.key) for f in narrowing]}, sort_keys=True,
                     separators=(",", ":"), ensure_ascii=False)
    return Filter(key, " AND ".join(f"({f._where})" for f in narrowing),
                  tuple(p for f in narrowing for p in f._params))


class _Compiler:
    """One pass over the filter: checks each part (with its path) and writes its SQL."""

    def __init__(self) -> None:
        self.conditions = 0
        self.values = 0

    def filter(self, value: Mapping[Any, Any], path: str, depth: int) -> tuple[str, list[object]]:
        if depth > MAX_DEPTH:
            raise InvalidInput(f"{path}: filters nested more than {MAX_DEPTH} deep "
                               f"(MAX_DEPTH {MAX_DEPTH})")
        if not value:
            if depth > 1:
                raise InvalidInput(f"{path}: an empty filter inside $and/$or/$not (it would "
                                   "match everything); leave it out")
            return "1", []
        parts: list[str] = []
        params: list[object] = []
        for name, operand in value.items():
            if not isinstance(name, str):
                raise InvalidInput(f"{path}: field names are strings, got {_shown(name)}")
            if name.startswith("$"):
                clause, values = self.logical(name, operand, path, depth)
            else:
                clause, values = self.field(name, operand, path)
            parts.append(clause)
            params += values
        return (parts[0] if len(parts) == 1 else " AND ".join(f"({p})" for p in parts)), params

    def logical(self, name: str, operand: object, path: str, depth: int
                ) -> tuple[str, list[object]]:
        here = f"{path}.{_name(name)}"
        if name == "$not":
            if not isinstance(operand, Mapping):
                raise InvalidInput(f"{here}: $not takes one filter (an object), got "
                                   f"{_shown(operand)}")
            inner, values = self.filter(operand, here, depth + 1)
            return f"NOT ({inner})", values
        if name not in ("$and", "$or"):
            known = ", ".join(LOGICAL)
            hint = (f"; {name} applies to a field, e.g. {{\"page\": {{\"{name}\": ...}}}}"
                    if name in OPERATORS else "")
            raise InvalidInput(f"{path}: unknown operator \"{_name(name)}\" (known here: "
                               f"{known}, or a field){hint}")
        if not isinstance(operand, list) or not operand:
            raise InvalidInput(f"{here}: {name} takes a non-empty list of filters, got "
                               f"{_shown(operand)}")
        if len(operand) > MAX_LIST_ITEMS:
            raise InvalidInput(f"{here}: more than {MAX_LIST_ITEMS} filters "
                               f"(MAX_LIST_ITEMS {MAX_LIST_ITEMS})")
        parts: list[str] = []
        params: list[object] = []
        for i, item in enumerate(operand):
            if not isinstance(item, Mapping):
                raise InvalidInput(f"{here}[{i}]: a filter is a JSON object, got "
                                   f"{_shown(item)}")
            clause, values = self.filter(item, f"{here}[{i}]", depth + 1)
            parts.append(f"({clause})")
            params += values
        return (" AND " if name == "$and" else " OR ").join(parts), params

    def field(self, name: str, operand: object, path: str) -> tuple[str, list[object]]:
        here = f"{path}.{_name(name)}"
        target = _target(name, here)
        if isinstance(operand, Mapping):
            if not operand:
                raise InvalidInput(f"{here}: an empty condition; give an operator ("
                                   f"{', '.join(OPERATORS)}) or a value")
            conditions = list(operand.items())
        else:
            conditions = [("$eq", operand)]  # a bare value: its errors name the field alone
        parts: list[str] = []
        params: list[object] = []
        for op, value in conditions:
            if not isinstance(op, str) or not op.startswith("$"):
                raise InvalidInput(f"{here}: an object where a value is expected (operators "
                                   f"start with $: {', '.join(OPERATORS)}); got {_shown(op)}")
            if op == "$not":
                raise InvalidInput(f"{here}: $not applies to a whole filter: write "
                                   f"{{\"$not\": {{\"{_name(name)}\": {{...}}}}}}")
            if op not in OPERATORS:
                raise InvalidInput(f"{here}: unknown operator \"{_name(op)}\" (known: "
                                   f"{', '.join(OPERATORS)})")
            self.conditions += 1
            if self.conditions > MAX_CONDITIONS:
                raise InvalidInput(f"{here}: more than {MAX_CONDITIONS} conditions in one "
                                   f"filter (MAX_CONDITIONS {MAX_CONDITIONS})")
            clause, values = target.condition(
                op, value, f"{here}.{op}" if isinstance(operand, Mapping) else here, self)
            parts.append(clause)
            params += values
        return (parts[0] if len(parts) == 1 else " AND ".join(f"({p})" for p in parts)), params

    def count(self, n: int, path: str) -> None:
        self.values += n
        if self.values > MAX_VALUES:
            raise InvalidInput(f"{path}: more than {MAX_VALUES} values in one filter "
                               f"(MAX_VALUES {MAX_VALUES})")


Scalar = str | int | float | bool


class _Column:
    """A document or chunk column: one type (text, or integer for `page`), NULL when unset."""

    def __init__(self, column: str, kind: type) -> None:
        self.column = column
        self.kind = kind  # str or int

    def condition(self, op: str, value: object, path: str, compiler: _Compiler
                  ) -> tuple[str, list[object]]:
        col = self.column
        if op == "$exists":
            return f"{col} IS {'NOT ' if _boolean(value, path) else ''}NULL", []
        if op in ("$in", "$nin"):
            items = [self.operand(v, f"{path}[{i}]")
                     for i, v in enumerate(_items(value, path, compiler))]
            clause = (f"coalesce({col} IN ({','.join('?' * len(items))}), 0)" if items
                      else "0")
            return (clause if op == "$in" else f"NOT ({clause})"), list(items)
        if op == "$prefix" and self.kind is not str:
            raise InvalidInput(f"{path}: $prefix applies to text; this field is an integer")
        compiler.count(1, path)
        operand = self.operand(value, path)
        if op == "$eq":
            return f"{col} IS ?", [operand]
        if op == "$ne":
            return f"{col} IS NOT ?", [operand]
        if op == "$prefix":
            return f"coalesce(substr({col}, 1, ?) = ?, 0)", [len(str(operand)), operand]
        return f"coalesce({col} {_RANGES[op]} ?, 0)", [operand]

    def operand(self, value: object, path: str) -> Scalar:
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"{path}: expected an integer (a page number), got "
                                   f"{_shown(value)}")
            return _integer(value, path)
        if not isinstance(value, str):
            raise InvalidInput(f"{path}: expected a string, got {_shown(value)}"
                               + (' (dates are text, e.g. "2025-01-01")'
                                  if self.column == "d.date" else ""))
        return _string(value, path)


class _Metadata:
    """A path into the document's metadata JSON. Its value is typed there (text, integer,
    real, true, false, null, array, object), and a comparison holds only within a type."""

    def __init__(self, json_path: str) -> None:
        self.json_path = json_path

    def condition(self, op: str, value: object, path: str, compiler: _Compiler
                  ) -> tuple[str, list[object]]:
        p = self.json_path
        if op == "$exists":  # present, even as null
            return f"json_type(d.metadata, ?) IS {'NOT ' if _boolean(value, path) else ''}NULL", [p]
        if op in ("$in", "$nin"):
            items = [_scalar(v, f"{path}[{i}]")
                     for i, v in enumerate(_items(value, path, compiler))]
            test = _any_of(items)
        else:
            compiler.count(1, path)
            operand = _scalar(value, path)
            if op in ("$eq", "$ne"):
                test = _any_of([operand])
            elif op == "$prefix":
                if not isinstance(operand, str):
                    raise InvalidInput(f"{path}: $prefix takes a string, got {_shown(operand)}")
                test = _Test("({t} = 'text' AND substr({v}, 1, ?) = ?)", [len(operand), operand])
            else:
                if isinstance(operand, bool):
                    raise InvalidInput(f"{path}: {op} takes a string or a number, got "
                                       f"{_shown(operand)}")
                kind = "{t} = 'text'" if isinstance(operand, str) else _NUMBER
                test = _Test(f"({kind} AND {{v}} {_RANGES[op]} ?)", [operand])
        if test.never:
            clause, params = "0", []
        else:
            # A list: any element; anything else (a scalar, null, an object, absent): itself.
            each, each_params = test.on("j.type", "j.value")
            one, one_params = test.on("json_type(d.metadata, ?)", "json_extract(d.metadata, ?)",
                                      p)
            clause = (f"CASE json_type(d.metadata, ?) WHEN 'array' THEN EXISTS (SELECT 1 FROM"
                      f" json_each(d.metadata, ?) j WHERE {each}) ELSE coalesce({one}, 0) END")
            params = [p, p, *each_params, *one_params]
        return (f"NOT ({clause})" if op in ("$ne", "$nin") else clause), params


_NUMBER = "{t} IN ('integer', 'real')"


@dataclass
class _Test:
    """A test of one JSON value, given as its type `{t}` and SQL value `{v}`."""

    template: str
    params: list[object]
    never: bool = False

    def on(self, type_sql: str, value_sql: str, path: str | None = None
           ) -> tuple[str, list[object]]:
        """The test's SQL and values; `path` is bound wherever `{t}`/`{v}` take one."""
        out: list[object] = []
        pieces = self.template.split("?")
        sql = []
        for i, piece in enumerate(pieces):
            # Each `{t}`/`{v}` in this piece binds the path before the piece's own `?`.
            for _ in range(piece.count("{t}") + piece.count("{v}")):
                if path is not None:
                    out.append(path)
            sql.append(piece.format(t=type_sql, v=value_sql))
            if i < len(pieces) - 1:
                out.append(self.params[i])
        return "?".join(sql), out


def _any_of(items: list[Scalar]) -> _Test:
    """A value equal to one of `items`, type for type (True is not 1)."""
    strings = [v for v in items if isinstance(v, str)]
    numbers = [v for v in items if isinstance(v, int | float) and not isinstance(v, bool)]
    flags = {v for v in items if isinstance(v, bool)}
    ors: list[str] = []
    params: list[object] = []
    if strings:
        ors.append(f"({{t}} = 'text' AND {{v}} IN ({','.join('?' * len(strings))}))")
        params += strings
    if numbers:
        ors.append(f"({_NUMBER} AND {{v}} IN ({','.join('?' * len(numbers))}))")
        params += numbers
    ors += [f"{{t}} = '{'true' if flag else 'false'}'" for flag in sorted(flags)]
    if not ors:
        return _Test("0", [], never=True)
    return _Test(" OR ".join(ors) if len(ors) == 1 else f"({' OR '.join(ors)})", params)


def _target(name: str, path: str) -> _Column | _Metadata:
    if len(name) > MAX_KEY_CHARS:
        raise InvalidInput(f"{path}: a field name longer than {MAX_KEY_CHARS} characters "
                           f"(MAX_KEY_CHARS {MAX_KEY_CHARS})")
    if name in DOCUMENT_FIELDS:
        return _Column(DOCUMENT_FIELDS[name], str)
    if name in CHUNK_FIELDS:
        return _Column(CHUNK_FIELDS[name], int)
    head, dot, rest = name.partition(".")
    if head != METADATA:
        raise InvalidInput(f"{path}: unknown field \"{name}\" (known: {', '.join(FIELDS)})")
    if not dot or not rest:
        raise InvalidInput(f"{path}: name a metadata key, as metadata.<key> (metadata.a.b "
                           "for a nested one)")
    segments = rest.split(".")
    for segment in segments:
        if not segment:
            raise InvalidInput(f"{path}: an empty key in \"{name}\" (two dots, or one at an "
                               "end)")
        bad = next((c for c in segment if c in '"\\' or ord(c) < 0x20 or
                    0xD800 <= ord(c) <= 0xDFFF), None)
        if bad is not None:
            raise InvalidInput(f"{path}: metadata keys cannot hold {bad!r} in a filter")
    # Every key quoted, so `$`, `[`, spaces and the like are plain characters of the key.
    return _Metadata("$" + "".join(f'."{s}"' for s in segments))


def _items(value: object, path: str, compiler: _Compiler) -> list[object]:
    if not isinstance(value, list):
        raise InvalidInput(f"{path}: expected a list of values, got {_shown(value)}")
    if len(value) > MAX_LIST_ITEMS:
        raise InvalidInput(f"{path}: more than {MAX_LIST_ITEMS} values "
                           f"(MAX_LIST_ITEMS {MAX_LIST_ITEMS})")
    compiler.count(len(value), path)
    return value


def _scalar(value: object, path: str) -> Scalar:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return _integer(value, path)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{path}: numbers must be finite, got {value}")
        return value
    if isinstance(value, str):
        return _string(value, path)
    if value is None:
        raise InvalidInput(f"{path}: null is not a value a filter compares (for a missing "
                           "field, use {\"$exists\": false})")
    hint = " (for any of several values, use $in)" if isinstance(value, list) else ""
    raise InvalidInput(f"{path}: expected a string, number or boolean, got {_shown(value)}"
                       f"{hint}")


def _integer(value: int, path: str) -> int:
    if not -_INT64 <= value < _INT64:
        raise InvalidInput(f"{path}: integer out of range (64-bit)")
    return value


def _string(value: str, path: str) -> str:
    if len(value) > MAX_STRING_CHARS:
        raise InvalidInput(f"{path}: a string longer than {MAX_STRING_CHARS} characters "
                           f"(MAX_STRING_CHARS {MAX_STRING_CHARS})")
    if "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise InvalidInput(f"{path}: a string with NUL or a lone surrogate (not text)")
    return value


def _boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{path}: $exists takes true or false, got {_shown(value)}")
    return value


def _name(name: str) -> str:
    """A field or operator name as echoed in an error: cut short, never a wall of text."""
    return name if len(name) <= 60 else name[:57] + "..."


def _shown(value: object) -> str:
    """A value as echoed in an error: short JSON and what kind of value it is."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    kind = ("a boolean" if isinstance(value, bool) else "a number"
            if isinstance(value, int | float) else "a string" if isinstance(value, str)
            else "null" if value is None else type(value).__name__)
    text = json.dumps(value, ensure_ascii=False, default=str)
    return f"{text if len(text) <= 60 else text[:57] + '...'} ({kind})"
