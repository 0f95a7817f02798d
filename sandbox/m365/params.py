"""Parameter binding as PowerShell does it for the cmdlets the sandbox serves.

InvokeCommand carries parameters as JSON values: strings, numbers, ``true``/``false``, ``null`` for ``$null``, ``true``
for a switch, arrays for string lists. Names match case-insensitively; unknown names, missing mandatory parameters and
values of the wrong type are refused with PowerShell's texts (``ParameterBindingException``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sandbox.m365.errors import PARAMETER_BINDING, CmdletFailure

COMMON_PARAMETERS = frozenset(
    {"confirm", "whatif", "erroraction", "warningaction", "verbose", "debug", "informationaction", "force"}
)
"""Accepted everywhere and ignored (the sandbox never prompts)."""
NO_CHANGE = "The command completed successfully but no settings of '{0}' have been modified."
"""The warning of a ``Set-`` cmdlet that changed nothing (``{0}``: the object's name)."""


class Kind(Enum):
    """How a parameter's value binds."""

    STRING = "System.String"
    NULLABLE_STRING = "System.String (or $null)"
    BOOL = "System.Boolean"
    SWITCH = "System.Management.Automation.SwitchParameter"
    STRINGS = "System.String[]"
    RESULT_SIZE = "Microsoft.Exchange.Data.Unlimited`1[System.UInt32]"


@dataclass(frozen=True)
class Param:
    """One parameter of a cmdlet."""

    name: str
    kind: Kind = Kind.STRING
    mandatory: bool = False


@dataclass(frozen=True)
class Spec:
    """A cmdlet's parameters."""

    name: str
    params: tuple[Param, ...] = ()

    def bind(self, raw: Mapping[str, Any] | None) -> dict[str, Any]:
        """The bound parameters under their canonical names (only those given).

        Raises:
            CmdletFailure: an unknown parameter, a missing mandatory one, or a value of the wrong type.
        """
        by_lower = {p.name.lower(): p for p in self.params}
        bound: dict[str, Any] = {}
        for given, value in (raw or {}).items():
            param = by_lower.get(given.lower())
            if param is None:
                if given.lower() in COMMON_PARAMETERS:
                    continue
                raise CmdletFailure(
                    f"A parameter cannot be found that matches parameter name '{given}'.", PARAMETER_BINDING
                )
            bound[param.name] = _convert(param, value)
        missing = [
            p.name
            for p in self.params
            if p.mandatory
            and (p.name not in bound or (p.kind is not Kind.NULLABLE_STRING and bound[p.name] in (None, "", [])))
        ]
        if missing:
            raise CmdletFailure(
                f"Cannot process command because of one or more missing mandatory parameters: {' '.join(missing)}.",
                PARAMETER_BINDING,
            )
        return bound


def _cannot_convert(param: Param, value: Any) -> CmdletFailure:
    return CmdletFailure(
        f'Cannot bind parameter \'{param.name}\'. Cannot convert value "{value}" to type "{param.kind.value}".',
        PARAMETER_BINDING,
    )


def _convert(param: Param, value: Any) -> Any:
    kind = param.kind
    if value is None:
        if kind in (Kind.NULLABLE_STRING, Kind.STRINGS):
            return None
        raise CmdletFailure(
            f"Cannot validate argument on parameter '{param.name}'. The argument is null or empty. Provide an "
            f"argument that is not null or empty, and then try the command again.",
            PARAMETER_BINDING,
        )
    if kind in (Kind.STRING, Kind.NULLABLE_STRING):
        if isinstance(value, (bool, list, dict)):
            raise _cannot_convert(param, value)
        return str(value)
    if kind is Kind.SWITCH:
        if isinstance(value, bool):
            return value
        raise _cannot_convert(param, value)
    if kind is Kind.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("$true", "true", "$false", "false"):
            return value.strip().lower().lstrip("$") == "true"
        raise _cannot_convert(param, value)
    if kind is Kind.STRINGS:
        if isinstance(value, str):
            # "-AzureKeyIDs uri1, uri2" may arrive as one string: PowerShell would have split it on the comma.
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [v.strip() for v in value]
        raise _cannot_convert(param, value)
    # RESULT_SIZE: a positive number or "Unlimited"
    if isinstance(value, str) and value.strip().lower() == "unlimited":
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise _cannot_convert(param, value) from None
    if isinstance(value, bool) or size < 1:
        raise _cannot_convert(param, value)
    return size


@dataclass
class Output:
    """What a cmdlet writes: its output objects and its warnings (``WARNING: ...`` in PowerShell)."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


Handler = Callable[[dict[str, Any]], Awaitable[Output]]
"""A cmdlet's implementation: bound parameters in, output out."""


@dataclass(frozen=True)
class Cmdlet:
    """A cmdlet the sandbox serves: its parameters, its implementation, whether it changes anything."""

    spec: Spec
    handler: Handler
    changes: bool = False
    """Changing cmdlets run one at a time per tenant (reads run concurrently)."""
