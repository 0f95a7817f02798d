"""The OpenAPI document, with the body of ``POST /api/operations`` typed per kind.

The route reads its body by hand (after authentication, within the size limit) and validates ``params`` with the
kind's own model, so FastAPI cannot derive its schema. This hook publishes it: a union of one request model per
registered kind, discriminated by ``kind``, each with that kind's public params model — so ``/docs``, client
generators and fuzzers (schemathesis) know every kind's parameters.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

from ckey.operations import OperationKind
from workflows import product_registry

START_PATH = "/api/operations"


class _StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")


def start_request_model(kind: OperationKind) -> type[BaseModel]:
    """The request body that starts ``kind``: ``{"kind": "<name>", "params": {...}}``."""
    name = "Start_" + re.sub(r"[^A-Za-z0-9]+", "_", kind.name)
    model: type[BaseModel] = create_model(
        name,
        __base__=_StartRequest,
        __doc__=f"Start {kind.name} (role {kind.role.value}). {kind.description}".strip(),
        kind=(Literal[kind.name], ...),  # type: ignore[arg-type]
        params=(kind.public_params, ...),
    )
    return model


def start_request_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """The body's JSON schema and the component schemas it refers to."""
    models = [start_request_model(kind) for kind in product_registry()]
    if not models:
        return {"type": "object"}, {}
    body: Any = models[0] if len(models) == 1 else Annotated[Union[tuple(models)], Field(discriminator="kind")]  # noqa: UP007
    schema = TypeAdapter(body).json_schema(ref_template="#/components/schemas/{model}")
    defs: dict[str, Any] = schema.pop("$defs", {})
    return schema, defs


def install(app: FastAPI) -> None:
    """Replace ``app.openapi`` with one that types the start request per kind (rebuilt when the kinds change)."""
    cache: dict[tuple[str, ...], dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        kinds = tuple(kind.name for kind in product_registry())
        if kinds not in cache:
            document = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            body, defs = start_request_schema()
            document.setdefault("components", {}).setdefault("schemas", {}).update(defs)
            request_body = document["paths"][START_PATH]["post"]["requestBody"]
            request_body["content"]["application/json"]["schema"] = body
            cache.clear()
            cache[kinds] = document
        return cache[kinds]

    app.openapi = openapi  # type: ignore[method-assign]
