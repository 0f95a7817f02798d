"""The SharePoint Customer Key cmdlets' parameters and parameter sets, as Microsoft Learn documents them.

Register-, Update- and Restore-SPODataEncryptionPolicy each have two sets ("Microsoft.Online.SharePoint.PowerShell"
reference pages): ``BYOK_MultipleParameters`` names a key by vault, key and version; ``BYOK_Uri`` by its key URI.

- Register- and Restore-: ``-Primary/SecondaryKeyVaultName``, ``-...KeyName``, ``-...KeyVersion``; or
  ``-PrimaryKeyVaultUri`` and ``-SecondaryKeyVaultUri``.
- Update- (default set: the first): ``-KeyVaultName``, ``-KeyName``, ``-KeyVersion``, ``-KeyType``; or
  ``-KeyVaultUri``, ``-KeyType``.

Every parameter of a set is mandatory in it; ``-KeyType`` (``Primary``/``Secondary``) is in both of Update's.
``-Identity`` (the geo's admin site) is the sandbox's, to address another geo than the one connected to.
A request that mixes the sets, or gives too little to choose one, is refused as PowerShell refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sandbox.m365.deps import parse_key_uri
from sandbox.m365.errors import PARAMETER_BINDING, SPO_ARGUMENT, CmdletFailure
from sandbox.m365.params import Kind, Param
from sandbox.vocabulary import KeyUri

NAMES = "BYOK_MultipleParameters"
URI = "BYOK_Uri"


@dataclass(frozen=True)
class ParameterSets:
    """A cmdlet's parameter sets: each set's own parameters (all mandatory in it), and those of every set."""

    sets: dict[str, tuple[str, ...]]
    common: tuple[str, ...] = ()
    """In every set (``-KeyType`` of Update: mandatory; ``-Identity``: optional)."""
    mandatory_common: tuple[str, ...] = ()

    def params(self) -> tuple[Param, ...]:
        """Every parameter, none mandatory at binding: :meth:`choose` checks each set's."""
        names = dict.fromkeys([*self.common, *(n for names in self.sets.values() for n in names)])
        return tuple(Param(n, Kind.STRING) for n in names)

    def choose(self, bound: dict[str, Any]) -> str:
        """The set the given parameters select (the first set when they select none in particular).

        Raises:
            CmdletFailure: parameters of two sets, or a set's mandatory parameter missing.
        """
        given = {n for n in bound if n not in self.common}
        candidates = [name for name, names in self.sets.items() if given <= set(names)]
        if not candidates:
            raise CmdletFailure(
                "Parameter set cannot be resolved using the specified named parameters. One or more parameters "
                "issued cannot be used together or an insufficient number of parameters were provided.",
                PARAMETER_BINDING,
            )
        chosen = next((c for c in candidates if given and set(self.sets[c]) & given), candidates[0])
        missing = [n for n in (*self.sets[chosen], *self.mandatory_common) if bound.get(n) in (None, "")]
        if missing:
            raise CmdletFailure(
                f"Cannot process command because of one or more missing mandatory parameters: {' '.join(missing)}.",
                PARAMETER_BINDING,
            )
        return chosen


TWO_KEYS = ParameterSets(
    sets={
        NAMES: (
            "PrimaryKeyVaultName",
            "PrimaryKeyName",
            "PrimaryKeyVersion",
            "SecondaryKeyVaultName",
            "SecondaryKeyName",
            "SecondaryKeyVersion",
        ),
        URI: ("PrimaryKeyVaultUri", "SecondaryKeyVaultUri"),
    },
    common=("Identity",),
)
"""Register- and Restore-SPODataEncryptionPolicy."""
ONE_KEY = ParameterSets(
    sets={NAMES: ("KeyVaultName", "KeyName", "KeyVersion"), URI: ("KeyVaultUri",)},
    common=("Identity", "KeyType"),
    mandatory_common=("KeyType",),
)
"""Update-SPODataEncryptionPolicy."""


def key_uri(vault_dns_suffix: str, bound: dict[str, Any], chosen: str, prefix: str = "") -> KeyUri:
    """The key a set names (``prefix``: ``Primary``, ``Secondary`` or none), always with its version.

    Raises:
        CmdletFailure: not a key URI, or one without a version (SharePoint keeps a key's version).
    """
    if chosen == URI:
        text = str(bound[f"{prefix}KeyVaultUri"])
        uri = parse_key_uri(text, SPO_ARGUMENT)
        if uri.version is None:
            raise CmdletFailure(
                f"'{text}' names no key version. -{prefix}KeyVaultUri takes a key's full URI, "
                f"https://<vault>.vault.azure.net/keys/<key name>/<key version>.",
                SPO_ARGUMENT,
            )
        return uri
    vault = str(bound[f"{prefix}KeyVaultName"]).strip()
    name = str(bound[f"{prefix}KeyName"]).strip()
    version = str(bound[f"{prefix}KeyVersion"]).strip().replace("-", "")
    return parse_key_uri(f"https://{vault}.{vault_dns_suffix}/keys/{name}/{version}", SPO_ARGUMENT)


def two_keys(vault_dns_suffix: str, bound: dict[str, Any]) -> list[KeyUri]:
    """Register's and Restore's primary and secondary keys, in two vaults.

    Raises:
        CmdletFailure: no set chosen, a key URI malformed, or both keys in one vault.
    """
    chosen = TWO_KEYS.choose(bound)
    uris = [key_uri(vault_dns_suffix, bound, chosen, p) for p in ("Primary", "Secondary")]
    if uris[0].vault == uris[1].vault:
        raise CmdletFailure("The primary and secondary keys must be in two different Azure Key Vaults.", SPO_ARGUMENT)
    return uris
