"""SMART on FHIR scopes: `system/Observation.write`, `system/*.read`, `user/Patient.rs` ...

SMART v1 (`.read`, `.write`, `.*`) and v2 (`.cruds` letters in that order) are both read into the
permission letters c (create), r (read by id), u (update), d (delete), s (search): `.read` is rs,
`.write` cud, `.*` all. A wildcard type (`*`) never covers the types listed in EXPLICIT_ONLY: the
audit log is readable only with a scope that names AuditEvent.
"""

from __future__ import annotations

import re
from functools import lru_cache

SCOPE = re.compile(r"^(system|user|patient)/(\*|[A-Z][A-Za-z]+)\.(read|write|\*|c?r?u?d?s?)$")
V1 = {"read": "rs", "write": "cud", "*": "cruds"}
EXPLICIT_ONLY = frozenset({"AuditEvent"})


class ScopeError(ValueError):
    pass


class Scopes:
    """A parsed scope string: type (or '*') -> permission letters."""

    def __init__(self, text: str | None):
        self.text = " ".join((text or "").split())
        self.grants: dict[str, set[str]] = {}
        self.contexts: set[str] = set()
        for item in self.text.split():
            match = SCOPE.match(item)
            if not match or not match.group(3):
                raise ScopeError(f"'{item}' is not a SMART scope like system/Observation.read")
            context, rtype, perms = match.groups()
            self.contexts.add(context)
            self.grants.setdefault(rtype, set()).update(V1.get(perms, perms))

    @property
    def items(self) -> list[str]:
        return self.text.split()

    def allows(self, rtype: str | None, perm: str) -> bool:
        """May `perm` (one letter of cruds) be done on `rtype` (None or '*': on every type)?"""
        if rtype in (None, "*"):
            return perm in self.grants.get("*", ())
        if perm in self.grants.get(rtype, ()):
            return True
        return rtype not in EXPLICIT_ONLY and perm in self.grants.get("*", ())

    def allows_any(self, rtype: str | None, perms: str) -> bool:
        return any(self.allows(rtype, p) for p in perms)

    def covers(self, other: "Scopes") -> bool:
        """Is every permission of `other` granted here (a requested scope within an allowed one)?"""
        for rtype, perms in other.grants.items():
            for perm in perms:
                if rtype == "*":
                    if perm not in self.grants.get("*", ()):
                        return False
                elif not self.allows(rtype, perm):
                    return False
        return other.contexts <= self.contexts or not other.contexts

    def __repr__(self) -> str:
        return f"Scopes({self.text!r})"


@lru_cache(maxsize=4096)
def parse(text: str) -> Scopes:
    """Parsed scopes, cached: the same few scope strings come with every request."""
    return Scopes(text)
