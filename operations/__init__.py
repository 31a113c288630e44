"""FHIR operations, one module each. Importing this package registers them all."""

import importlib
import pkgutil

from .registry import OPERATIONS, Operation, OperationCall, find, operation  # noqa: F401


def load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "registry" and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
