"""Property-based hostile input against every registered kind's public params and the domain types (issue 8).

For arbitrary JSON-like input (random keys, text with NUL, control characters, Unicode quotes and separators, very
long strings, huge and negative numbers, nested lists and objects), the model the API validates a kind's ``params``
with must either accept it or raise :class:`pydantic.ValidationError` whose every error is a rule id or a pydantic
type; what it accepts holds no control character and stays within the bounds its JSON schema publishes; unknown
fields are refused.

The kinds are read from the registry at run time, so a model converted to :class:`ckey.operations.Params` by other
work is checked as it is then. ``CKEY_HYPOTHESIS_LONG=1`` runs many more examples.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from pydantic_core.core_schema import ErrorType

from ckey.models import (
    AZURE_VAULT_SUFFIXES,
    IDENTITY_MAX,
    KEY_URI_MAX,
    DepName,
    Description,
    KeyUri,
    KeyUriField,
    RecipientIdentity,
    UserPrincipalName,
    VaultName,
    has_control_characters,
)
from ckey.operations import OperationKind, Params
from workflows import product_registry

LONG = os.environ.get("CKEY_HYPOTHESIS_LONG") == "1"
EXAMPLES = settings(
    max_examples=2000 if LONG else 100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KINDS = list(product_registry())
PYDANTIC_TYPES = frozenset(get_args(ErrorType))
RULE_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)+\Z")


# Strategies --------------------------------------------------------------------------------------------------------

HOSTILE_PIECES = [
    "\x00",
    "\n",
    "\r\n",
    "\t",
    "\x0b",
    "\x1b[2J",
    "\x7f",
    "\x85",
    "\u2028",
    "\u2029",
    "\u202e",
    "\u2066",
    "\ufeff",
    "\u200b",
    "\u201c",
    "\u201d",
    "\u2018",
    "\u2019",
    "'",
    '"',
    "`",
    "$(",
    "${x}",
    "; Remove-Mailbox -Identity x -Confirm:$false #",
    "{uri!r}",
    "{value}",
    "%s",
    "../",
    "/",
    "?",
    "#",
    "%2F",
    "\\",
    "@",
    ",",
    " ",
    "\ud800",
]
VALID_EXAMPLES = [
    "alice@contoso.com",
    "ALICE@contoso.com",
    "USA_mailboxes",
    "contoso-eastus-kv1",
    "https://contoso-eastus-kv1.vault.azure.net/keys/exo-key-01",
    "https://contoso-westus-kv1.vault.azure.net/keys/exo-key-02",
    "https://contoso-westus-kv1.vault.azure.net/keys/exo-key-02/0123456789abcdef0123456789abcdef",
    "https://kv1.vault.ckey.test:8443/keys/k1",
    "https://contoso-eastus-kv1.vault.azure.net/keys/exo-key-01, https://contoso-westus-kv1.vault.azure.net/keys/k2",
    "exchange",
    "sharepoint",
    "multi_workload",
    "P7D",
    "PT15M",
    "ts-00000000-0000-0000-0000-000000000000",
]

pieces = st.sampled_from(HOSTILE_PIECES)
unicode_text = st.text(st.characters(codec="utf-8"), max_size=40)
hostile_text = st.one_of(
    unicode_text,
    st.lists(st.one_of(pieces, st.sampled_from(VALID_EXAMPLES), unicode_text), min_size=1, max_size=6).map("".join),
    st.tuples(st.sampled_from(VALID_EXAMPLES), pieces).map("".join),
    st.tuples(pieces, st.sampled_from(VALID_EXAMPLES)).map("".join),
    st.sampled_from(VALID_EXAMPLES),
    # Very long strings: just past every bound the models publish, and far past it.
    st.tuples(st.sampled_from(["a", "é", "\x00", "a@"]), st.sampled_from([65, 257, 321, 1025, 5000, 100_000])).map(
        lambda t: t[0] * t[1]
    ),
    st.integers(min_value=0, max_value=400).map(lambda n: "a" * n + "@contoso.com"),
)
numbers = st.one_of(
    st.integers(),
    st.sampled_from([0, -1, 1, 2**31, -(2**31), 2**63, -(2**63), 10**30, -(10**30), 10**4000]),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, hostile_text)
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(hostile_text, children, max_size=5),
    ),
    max_leaves=20,
)


EAST = "https://contoso-eastus-kv1.vault.azure.net/keys/exo-key-01"
WEST = "https://contoso-westus-kv1.vault.azure.net/keys/exo-key-02"
BASELINES: dict[str, dict[str, Any]] = {
    "exchange.dep.create": {
        "name": "USA_mailboxes",
        "description": "Mailboxes in the USA",
        "azure_key_ids": [EAST, WEST],
    },
    "exchange.dep.assign": {"dep": "USA_mailboxes", "mailboxes": ["alice@contoso.com", "bob@contoso.com"]},
    "exchange.encryption.verify": {"dep": "USA_mailboxes", "mailboxes": ["alice@contoso.com"]},
    "keyvault.health": {"workload": "exchange", "keys": [EAST, WEST]},
    "keyvault.key.restore": {"key_uri": EAST},
    "keyvault.access.revoke": {"vault": "contoso-eastus-kv1", "user_principal_name": "alice@contoso.com"},
}
"""A valid request per known kind, which the strategy mutates field by field so that hostile values reach every
field's validation instead of stopping at a missing required one. Kinds without a baseline start from ``{}``."""


def hostile_value(baseline: Any) -> st.SearchStrategy[Any]:
    """Hostile replacements for one field's value, shaped like it (a list gets a hostile item among valid ones)."""
    options = [json_like, hostile_text, st.lists(hostile_text, max_size=4), st.sampled_from(VALID_EXAMPLES)]
    if isinstance(baseline, list) and baseline:
        options.append(
            st.tuples(st.integers(0, len(baseline)), hostile_text).map(
                lambda t: [*baseline[: t[0]], t[1], *baseline[t[0] :]]
            )
        )
        options.append(st.integers(3, 5000).map(lambda n: (baseline * n)[:n]))
    return st.one_of(*options)


@st.composite
def params_for(draw: st.DrawFn, kind: OperationKind) -> dict[str, Any]:
    """A kind's baseline with some fields replaced or added with hostile values, and sometimes unknown keys."""
    data = dict(BASELINES.get(kind.name, {}))
    fields = sorted(set(kind.public_params.model_fields) | set(data))
    # One or two fields at a time: a value that breaks one rule must not hide another field's acceptance.
    if fields:
        chosen = draw(st.lists(st.sampled_from(fields), unique=True, min_size=1, max_size=min(2, len(fields))))
        for name in chosen:
            data[name] = draw(hostile_value(data.get(name)))
    # A kind without parameters (inventory.sync) is only ever sent unknown ones, which it must refuse.
    if not fields or draw(st.integers(0, 4)) == 0:
        data.update(draw(st.dictionaries(hostile_text, json_like, min_size=1, max_size=3)))
    return data


# Checks ------------------------------------------------------------------------------------------------------------


def assert_only_validation_errors(exc: ValidationError) -> None:
    for error in exc.errors():
        kind = error["type"]
        assert kind in PYDANTIC_TYPES or RULE_ID.match(kind), f"error type {kind!r} is neither a rule nor pydantic's"
        if "{" not in repr(error.get("input")) and kind != "string_pattern_mismatch":  # that one quotes the pattern
            # A message template printed as written (pydantic substitutes "{name}" only, never "{name!r}").
            assert "{" not in error["msg"], error["msg"]


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings_in(item)


def bound_violations(value: Any, schema: dict[str, Any], defs: dict[str, Any], where: str) -> list[str]:
    """Where ``value`` (a JSON dump) breaks a bound the JSON ``schema`` publishes."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            branches = [bound_violations(value, branch, defs, where) for branch in schema[combinator]]
            return [] if any(not b for b in branches) else min(branches, key=len)
    for sub in schema.get("allOf", []):
        if broken := bound_violations(value, sub, defs, where):
            return broken
    kind = schema.get("type")
    found: list[str] = []
    if kind == "null":
        return [] if value is None else [f"{where}: not null"]
    if kind == "string":
        if not isinstance(value, str):
            return [f"{where}: not a string"]
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            found.append(f"{where}: {len(value)} characters > maxLength {schema['maxLength']}")
        if "minLength" in schema and len(value) < schema["minLength"]:
            found.append(f"{where}: {len(value)} characters < minLength {schema['minLength']}")
    elif kind in ("integer", "number"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            return [f"{where}: not a number"]
        if "maximum" in schema and value > schema["maximum"]:
            found.append(f"{where}: {value} > maximum")
        if "minimum" in schema and value < schema["minimum"]:
            found.append(f"{where}: {value} < minimum")
    elif kind == "array":
        if not isinstance(value, list):
            return [f"{where}: not an array"]
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            found.append(f"{where}: {len(value)} items > maxItems {schema['maxItems']}")
        for n, item in enumerate(value):
            found += bound_violations(item, schema.get("items", {}), defs, f"{where}[{n}]")
    elif kind == "object" and isinstance(value, dict):
        properties = schema.get("properties", {})
        for key, item in value.items():
            sub = properties.get(key, schema.get("additionalProperties"))
            if isinstance(sub, dict):
                found += bound_violations(item, sub, defs, f"{where}.{key}")
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} not in enum")
    return found


def unbounded(schema: dict[str, Any], defs: dict[str, Any], where: str, seen: frozenset[str]) -> list[str]:
    """Strings without ``maxLength``, arrays without ``maxItems``, integers without both bounds, in a schema."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return [] if name in seen else unbounded(defs[name], defs, where, seen | {name})
    found: list[str] = []
    for combinator in ("anyOf", "oneOf", "allOf"):
        for branch in schema.get(combinator, []):
            found += unbounded(branch, defs, where, seen)
    kind = schema.get("type")
    if "enum" in schema or "const" in schema:
        return found
    if kind == "string" and "maxLength" not in schema:
        found.append(f"{where}: string without maxLength")
    if kind in ("integer", "number") and not ("maximum" in schema and "minimum" in schema):
        found.append(f"{where}: {kind} without minimum and maximum")
    if kind == "array":
        if "maxItems" not in schema:
            found.append(f"{where}: array without maxItems")
        found += unbounded(schema.get("items", {}), defs, f"{where}[]", seen)
    if kind == "object":
        for key, sub in schema.get("properties", {}).items():
            found += unbounded(sub, defs, f"{where}.{key}", seen)
        if isinstance(schema.get("additionalProperties"), dict):
            found += unbounded(schema["additionalProperties"], defs, f"{where}.*", seen)
    return found


def accepts_unknown_fields(model: type[BaseModel]) -> bool:
    return model.model_config.get("extra") != "forbid"


# Every kind's public params ----------------------------------------------------------------------------------------


def test_the_registry_holds_the_product_kinds() -> None:
    assert {"exchange.dep.create", "exchange.dep.assign", "keyvault.health"} <= {k.name for k in KINDS}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_params_refuse_unknown_fields(kind: OperationKind) -> None:
    model = kind.public_params
    if accepts_unknown_fields(model):
        pytest.fail(
            f"{kind.name}: its public params {model.__qualname__} accept unknown fields (extra="
            f"{model.model_config.get('extra')!r}); make it a ckey.operations.Params (extra='forbid')"
        )
    with pytest.raises(ValidationError) as exc:
        model.model_validate({"__unknown_field__": 1, "follow_state": {}, "started_by": "mallory"})
    assert "extra_forbidden" in {e["type"] for e in exc.value.errors()}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_params_publish_a_bound_for_every_field(kind: OperationKind) -> None:
    schema = kind.public_params.model_json_schema()
    found = unbounded(schema, schema.get("$defs", {}), kind.name, frozenset())
    assert found == [], f"{kind.name}: unbounded fields of {kind.public_params.__qualname__}: {found}"


def check_params(kind: OperationKind, data: dict[str, Any]) -> None:
    """Validation of ``data`` accepts it within bounds and without control characters, or refuses it with rules."""
    model = kind.public_params
    schema = model.model_json_schema()
    try:
        accepted = model.model_validate(data)
    except ValidationError as exc:
        assert_only_validation_errors(exc)
        return
    if not accepts_unknown_fields(model):
        known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
        assert set(data) <= known, f"unknown fields accepted: {set(data) - known}"
    dumped = accepted.model_dump(mode="json")
    controlled = [s for s in strings_in(dumped) if has_control_characters(s)]
    assert controlled == [], f"{kind.name} accepted control characters: {controlled!r}"
    assert bound_violations(dumped, schema, schema.get("$defs", {}), kind.name) == []


FIXED_HOSTILE: list[Any] = [
    "a\x00b",
    "alice@contoso.com\n",
    "USA\u2028mailboxes",
    "x" * 100_000,
    "x" * 1025,
    -(2**63),
    10**30,
    ["alice@contoso.com", "bob\x00@contoso.com"],
    ["a" * 400 + "@contoso.com"],
    ["alice@contoso.com"] * 5000,
    [EAST] * 5000,
]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_fixed_hostile_values_in_each_field(kind: OperationKind) -> None:
    """Each field of a valid request replaced in turn by each of a fixed set of hostile values."""
    baseline = BASELINES.get(kind.name, {})
    failures = []
    for name in sorted(set(kind.public_params.model_fields) | set(baseline)):
        for value in FIXED_HOSTILE:
            try:
                check_params(kind, {**baseline, name: value})
            except AssertionError as exc:
                failures.append(f"{name}={str(value)[:40]!r}...: {str(exc).splitlines()[0][:200]}")
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_are_valid_requests(name: str) -> None:
    """The strategies mutate these; one that no longer validates would leave the hostile values unreached."""
    kind = product_registry().get(name)
    if kind is None:
        pytest.fail(f"{name} is no longer registered: update BASELINES")
    kind.public_params.model_validate(BASELINES[name])


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_hostile_params_are_accepted_within_bounds_or_refused_with_rules(kind: OperationKind) -> None:
    @EXAMPLES
    @given(params_for(kind))
    def check(data: dict[str, Any]) -> None:
        check_params(kind, data)

    check()


# The domain types --------------------------------------------------------------------------------------------------

TYPES: dict[str, Any] = {
    "RecipientIdentity": RecipientIdentity,
    "DepName": DepName,
    "KeyUri": KeyUriField,
    "UserPrincipalName": UserPrincipalName,
    "VaultName": VaultName,
}
ADAPTERS = {name: TypeAdapter(t) for name, t in TYPES.items()}
MAX_LENGTH = {"RecipientIdentity": IDENTITY_MAX, "DepName": 64, "KeyUri": KEY_URI_MAX, "UserPrincipalName": 320}


def _validate(name: str, value: Any) -> Any:
    try:
        return ADAPTERS[name].validate_python(value)
    except ValidationError as exc:
        assert_only_validation_errors(exc)
        return None


@pytest.mark.parametrize("name", list(TYPES))
@EXAMPLES
@given(value=st.one_of(hostile_text, json_like))
def test_domain_types_accept_only_clean_bounded_values(name: str, value: Any) -> None:
    accepted = _validate(name, value)
    if accepted is None:
        return
    text = str(accepted)
    assert not has_control_characters(text)
    assert 0 < len(text) <= MAX_LENGTH.get(name, 24)
    if name == "VaultName":
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]", text) and "--" not in text
    if name == "DepName":
        assert not re.search(r"\s", text)
    if name == "UserPrincipalName":
        assert text.count("@") == 1 and not set(text) & set("/\\?%")


key_uris = st.builds(
    lambda vault, suffix, name, version: f"https://{vault}.{suffix}/keys/{name}" + (f"/{version}" if version else ""),
    st.from_regex(r"[a-z][a-z0-9]{2,23}", fullmatch=True),
    st.sampled_from(AZURE_VAULT_SUFFIXES),
    st.from_regex(r"[A-Za-z0-9-]{1,127}", fullmatch=True),
    st.one_of(st.none(), st.from_regex(r"[0-9a-f]{32}", fullmatch=True)),
)


@EXAMPLES
@given(uri=key_uris, tail=pieces)
def test_key_uris_round_trip_and_refuse_anything_appended(uri: str, tail: str) -> None:
    parsed = KeyUri.parse(uri)
    assert str(parsed) == uri and KeyUri.parse(str(parsed)) == parsed
    assert parsed.port is None and parsed.host.endswith(AZURE_VAULT_SUFFIXES)
    hostile = uri + tail + "x"
    assert _validate("KeyUri", hostile) is None


@EXAMPLES
@given(
    vault=st.from_regex(r"[A-Za-z][A-Za-z0-9]{1,22}[A-Za-z0-9]", fullmatch=True),
    tail=st.sampled_from(["\n", "\r\n", "\x00", " ", "\u2028", "--x"]),
)
def test_vault_names_refuse_a_trailing_line_break(vault: str, tail: str) -> None:
    assert _validate("VaultName", vault) == vault
    assert _validate("VaultName", vault + tail) is None


@EXAMPLES
@given(
    identity=st.from_regex(r"[a-z0-9._-]{1,60}@[a-z0-9-]{1,30}\.com", fullmatch=True),
    bad=st.sampled_from(["\x00", "\n", "\x1b", "\u0085", "\u2028", "\u202e"]),
    at=st.integers(min_value=1, max_value=5),
)
def test_identities_with_a_control_character_inside_are_refused(identity: str, bad: str, at: int) -> None:
    assert _validate("RecipientIdentity", identity) == identity
    assert _validate("UserPrincipalName", identity) == identity
    hostile = identity[:at] + bad + identity[at:]
    assert _validate("RecipientIdentity", hostile) is None
    assert _validate("UserPrincipalName", hostile) is None
    assert _validate("DepName", hostile.replace("@", "_")) is None


# The checks themselves: they pass a well-made model and fail a careless one -------------------------------------


class _GoodParams(Params):
    dep: DepName
    description: Description | None = None
    mailboxes: list[RecipientIdentity] = Field(default_factory=list, max_length=1000)
    batch_size: int = Field(default=200, ge=1, le=1000)


class _CarelessParams(BaseModel):
    dep: str
    mailboxes: list[str] = Field(default_factory=list)


GOOD = OperationKind(name="test.good", workflow=object, input_model=_GoodParams)
CARELESS = OperationKind(name="test.careless", workflow=object, input_model=_CarelessParams)


def test_the_checks_pass_a_well_made_model() -> None:
    schema = _GoodParams.model_json_schema()
    assert unbounded(schema, schema.get("$defs", {}), GOOD.name, frozenset()) == []
    assert not accepts_unknown_fields(_GoodParams)
    baseline = {"dep": "USA_mailboxes", "mailboxes": ["alice@contoso.com"]}
    for name in ("dep", "description", "mailboxes", "batch_size", "extra"):
        for value in FIXED_HOSTILE:
            check_params(GOOD, {**baseline, name: value})


def test_the_checks_fail_a_careless_model() -> None:
    schema = _CarelessParams.model_json_schema()
    assert unbounded(schema, schema.get("$defs", {}), CARELESS.name, frozenset()) == [
        "test.careless.dep: string without maxLength",
        "test.careless.mailboxes: array without maxItems",
        "test.careless.mailboxes[]: string without maxLength",
    ]
    assert accepts_unknown_fields(_CarelessParams)
    with pytest.raises(AssertionError, match="accepted control characters"):
        check_params(CARELESS, {"dep": "USA\x00mailboxes"})


SCHEMA_TYPES: dict[str, Any] = {
    "RecipientIdentity": RecipientIdentity,
    "DepName": DepName,
    "VaultName": VaultName,
    "UserPrincipalName": UserPrincipalName,
    "Description": Description,
}


@pytest.mark.parametrize("name", list(SCHEMA_TYPES))
@EXAMPLES
@given(data=st.data())
def test_values_conforming_to_the_published_schema_are_accepted(name: str, data: st.DataObject) -> None:
    """Schema-driven fuzzing (schemathesis) sends schema-conforming values as valid ones: they must be accepted."""
    schema = TypeAdapter(SCHEMA_TYPES[name]).json_schema()
    # JSON Schema patterns are ECMA-262, where "$" is the end of the string; in Python it also matches before a
    # final newline, so the pattern is given to the generator with "\Z".
    pattern = schema["pattern"].removesuffix("$") + r"\Z"
    low, high = schema.get("minLength", 0), schema["maxLength"]
    value = data.draw(st.from_regex(pattern).filter(lambda v: low <= len(v) <= high))
    assert TypeAdapter(SCHEMA_TYPES[name]).validate_python(value) == (
        value.strip() if name == "RecipientIdentity" else value
    )
