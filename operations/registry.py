"""The operation registry: each `operations/<name>.py` module registers its FHIR operation here.

The HTTP layer (fhir_server/interactions/operation.py) dispatches `$name` calls to the registered
handler, and the CapabilityStatement lists exactly what is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fhir_server.outcome import FhirError


@dataclass
class OperationCall:
    """What a handler receives.

    - `level`: "system", "type" or "instance"; `resource_type` and `resource_id` as applicable.
    - `parameters`: a dict name -> list of values, merged from the query string and, for POST,
      the body's Parameters resource (valueX unwrapped; `resource` parts kept as dicts).
    - `body`: the raw parsed JSON body of a POST (or None).
    - `store`: the storage facade (fhir_server.storage.Store): `store.read(type, id)` returns the
      current Record (`.resource` JSON, `.version`, `.last_updated`) or raises FhirError 404/410.
    - `request`: the Flask request (headers such as Accept, Accept-Language).
    - `lang`: "fr" or "en", from Accept-Language.
    """

    name: str
    level: str
    resource_type: str | None
    resource_id: str | None
    parameters: dict[str, list[Any]]
    body: dict | None
    store: Any
    request: Any
    lang: str = "en"

    def param(self, name: str, default=None):
        values = self.parameters.get(name)
        return values[0] if values else default

    def format_asked(self, names: tuple[str, ...], formats: dict[str, str], refusal: tuple[str, str], element: str):
        """The output the first of the `names` parameters given asks for, mapped by `formats`
        (its media type's parameters ignored), None when none is given; 406 with `refusal`
        (English, French: "{value}" is replaced) at `element` for one `formats` does not know."""
        for name in names:
            value = self.param(name)
            if value:
                chosen = formats.get(str(value).split(";")[0].strip().lower())
                if chosen is None:
                    en, fr = (text.replace("{value}", str(value)) for text in refusal)
                    raise FhirError.of(406, "not-supported", en, fr, element)
                return chosen
        return None


@dataclass
class Operation:
    name: str  # without the leading $
    handler: Callable[[OperationCall], Any]  # returns a resource dict or a flask Response
    system: bool = False
    types: tuple[str, ...] = ()  # type-level on these resource types
    instance_types: tuple[str, ...] = ()  # instance-level on these resource types
    affects_state: bool = False
    description: str = ""
    parameters: list[dict] = field(default_factory=list)  # OperationDefinition.parameter entries
    audited: bool = False  # system level: an AuditEvent for every call, as for patient data (auth/audit.py)


OPERATIONS: dict[str, Operation] = {}


def operation(
    name: str,
    *,
    system: bool = False,
    types=(),
    instance_types=(),
    affects_state: bool = False,
    description: str = "",
    parameters=None,
    audited: bool = False,
):
    """Decorator registering a handler as the FHIR operation `$name`."""

    def register(handler):
        OPERATIONS[name] = Operation(
            name,
            handler,
            system,
            tuple(types),
            tuple(instance_types),
            affects_state,
            description,
            list(parameters or []),
            audited,
        )
        return handler

    return register


def find(name: str, level: str, resource_type: str | None) -> Operation | None:
    op = OPERATIONS.get(name)
    if op is None:
        return None
    if level == "system" and op.system:
        return op
    if level == "type" and resource_type in op.types:
        return op
    if level == "instance" and resource_type in op.instance_types:
        return op
    return None
