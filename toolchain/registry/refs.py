"""Model references: a path to a `.onnx` file, or a registered version `models:/NAME/VERSION` or
`models:/NAME@ALIAS` (MLflow's spelling). Plain parsing, no MLflow."""

from __future__ import annotations

import re
from dataclasses import dataclass

from toolchain.errors import RegistryError

PREFIX = "models:/"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int | None = None  # Exactly one of version and alias is set.
    alias: str | None = None

    def __str__(self) -> str:
        return f"{PREFIX}{self.name}@{self.alias}" if self.alias else f"{PREFIX}{self.name}/{self.version}"


def is_registry_ref(text: object) -> bool:
    return str(text).startswith(PREFIX)


def parse_ref(text: str) -> ModelRef:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION`; a one-line `RegistryError` naming the value otherwise."""
    body = str(text)[len(PREFIX):] if is_registry_ref(text) else ""
    name, at, alias = body.partition("@")
    if at:
        if _NAME.match(name) and _ALIAS.match(alias):
            return ModelRef(name, alias=alias)
    else:
        name, slash, version = body.partition("/")
        if slash and _NAME.match(name) and version.isdigit() and int(version) > 0:
            return ModelRef(name, version=int(version))
    raise RegistryError(f"model reference {text!r} is not models:/NAME@ALIAS or models:/NAME/VERSION (e.g. "
                        "models:/birds@champion, models:/birds/3)")


def check_name(kind: str, value: str) -> str:
    """A registered-model name or alias as MLflow and `models:/` URIs accept it."""
    pattern = _NAME if kind == "name" else _ALIAS
    if not pattern.match(value or ""):
        raise RegistryError(f"{kind} {value!r} is not usable: letters, digits, '_' and '-' (a name may also hold "
                            "'.'), starting with a letter or digit")
    return value
