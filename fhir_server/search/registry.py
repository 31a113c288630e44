"""The search parameter registry, loaded from parameters.json (search parameters as data)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).with_name("parameters.json")
SORTABLE_TYPES = {"string", "token", "date", "reference", "uri", "number", "quantity"}
_SEGMENT = re.compile(r"^(?P<name>[A-Za-z0-9_]+)(?:\[(?P<key>\w+)=(?P<value>[^\]]+)\])?$")


@dataclass(frozen=True)
class PathStep:
    name: str
    where_key: str | None = None
    where_value: str | None = None


@dataclass(frozen=True)
class SearchParameter:
    code: str
    base: str
    type: str
    paths: tuple[tuple[PathStep, ...], ...]
    expression: str
    target: tuple[str, ...] = ()

    @property
    def field(self) -> str:
        """The document field holding the indexed values."""
        return f"s.{self.code}"


def _compile_path(path: str) -> tuple[PathStep, ...]:
    steps = []
    for segment in path.split("."):
        m = _SEGMENT.match(segment)
        if not m:
            raise ValueError(f"bad search path segment {segment!r} in {path!r}")
        steps.append(PathStep(m["name"], m["key"], m["value"]))
    return tuple(steps)


@lru_cache(maxsize=1)
def load() -> dict[str, dict[str, SearchParameter]]:
    """resource type -> code -> SearchParameter."""
    document = json.loads(DATA.read_text(encoding="utf-8"))
    registry: dict[str, dict[str, SearchParameter]] = {}
    for entry in document["parameters"]:
        paths = tuple(_compile_path(p) for p in entry["paths"])
        for base in entry["base"]:
            registry.setdefault(base, {})[entry["code"]] = SearchParameter(
                entry["code"], base, entry["type"], paths, entry["expression"], tuple(entry.get("target") or ())
            )
    return registry


@dataclass(frozen=True)
class DeclaredIndex:
    """One index of the plan (parameters.json "indexes"): its keys in order with their direction
    (1 ascending, -1 descending), the query it serves, who makes it, and the role of the
    principal whose query it is (a laboratory's unless said)."""

    keys: tuple[tuple[str, int], ...]
    serves: str
    why: str
    role: str = "laboratory"

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(field for field, _ in self.keys)


@lru_cache(maxsize=1)
def declared_indexes() -> dict[str, tuple[DeclaredIndex, ...]]:
    """collection -> the indexes created on it, in order."""
    document = json.loads(DATA.read_text(encoding="utf-8"))
    return {
        collection: tuple(_declared(entry) for entry in entries)
        for collection, entries in document["indexes"].items()
        if collection != "description"
    }


def _declared(entry: dict) -> DeclaredIndex:
    keys = tuple((key[1:], -1) if key.startswith("-") else (key, 1) for key in entry["keys"])
    return DeclaredIndex(keys, entry["serves"], entry["for"], entry.get("as", "laboratory"))


def parameters_for(resource_type: str) -> dict[str, SearchParameter]:
    return load().get(resource_type, {})
