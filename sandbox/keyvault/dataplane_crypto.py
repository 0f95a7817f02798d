"""The data plane's cryptographic operations: encrypt, decrypt, wrap, unwrap, sign and verify with a key."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from sandbox.keyvault import crypto, errors
from sandbox.keyvault.base import Store
from sandbox.keyvault.dataplane_shapes import Context, Handler, KeyRoute, b64, key_id, unb64
from sandbox.keyvault.keys import Keys, KeyView

CRYPTO_OPERATIONS = ("encrypt", "decrypt", "wrapkey", "unwrapkey", "sign", "verify")


def _optional(body: dict[str, Any], field: str) -> bytes | None:
    """A base64url body property the AES algorithms take (``iv``, ``aad``, ``tag``), or None."""
    return unb64(body[field], field) if body.get(field) is not None else None


class CryptoRoutes:
    """Handlers of ``POST /keys/{name}/{version}/{operation}`` (and of a versionless key id).

    Args:
        keys: the keys (public parts, and private keys that never leave the service).
        clock: the sandbox clock, against which a version's ``nbf`` and ``exp`` count.
    """

    def __init__(self, keys: Keys, clock: Store) -> None:
        self.keys = keys
        self.clock = clock

    def routes(self) -> list[KeyRoute]:
        """The routes of every operation."""
        r: list[KeyRoute] = []
        for op in CRYPTO_OPERATIONS:
            handler = self._handler(op)
            r.append(KeyRoute(f"/keys/{{name}}/{{version}}/{op}", "POST", op, handler))
            r.append(KeyRoute(f"/keys/{{name}}//{op}", "POST", op, handler))  # a versionless key id
        return r

    def _handler(self, op: str) -> Handler:
        async def handler(ctx: Context) -> Response:
            return await self._crypto(ctx, op)

        return handler

    async def _crypto(self, ctx: Context, op: str) -> Response:
        view = await self.keys.get_key(ctx.vault.name, ctx.name, ctx.version)
        key_op = {"wrapkey": "wrapKey", "unwrapkey": "unwrapKey"}.get(op, op)
        self._check_usable(view, key_op)
        body = await ctx.body()
        alg = body.get("alg")
        if not isinstance(alg, str):
            raise errors.bad_parameter("Property alg is required.")
        value = unb64(body.get("value"), "value")
        kid = key_id(ctx.host, view)
        key = self.keys.private_key(view)
        try:
            if op in ("encrypt", "wrapkey", "decrypt", "unwrapkey"):
                wrap = op in ("wrapkey", "unwrapkey")
                iv, aad = _optional(body, "iv"), _optional(body, "aad")
                if op in ("encrypt", "wrapkey"):
                    result = crypto.encrypt(key, alg, value, wrap=wrap, iv=iv, aad=aad)
                else:
                    result = crypto.decrypt(key, alg, value, wrap=wrap, iv=iv, aad=aad, tag=_optional(body, "tag"))
                answer = {"kid": kid, "value": b64(result.value)}
                if result.iv is not None:
                    answer["iv"] = b64(result.iv)
                if result.tag is not None:
                    answer["tag"] = b64(result.tag)
                if aad is not None and op == "encrypt":
                    answer["aad"] = b64(aad)
                return JSONResponse(answer)
            if op == "sign":
                return JSONResponse({"kid": kid, "value": b64(crypto.sign_digest(key, alg, value))})
            digest = unb64(body.get("digest"), "digest")
            return JSONResponse({"value": crypto.verify_digest(key, alg, digest, value)})
        except crypto.CryptoError as exc:
            raise errors.bad_parameter(str(exc)) from None

    def _check_usable(self, view: KeyView, key_op: str) -> None:
        v, now = view.version, self.clock.now()
        if not v.enabled:
            raise errors.key_operation_forbidden(key_op, "on a disabled key", "KeyDisabled")
        if v.not_before is not None and now < v.not_before:
            raise errors.key_operation_forbidden(key_op, "on a key that is not yet valid", "KeyNotYetValid")
        if v.expires is not None and now >= v.expires:
            raise errors.key_operation_forbidden(key_op, "on an expired key", "KeyExpired")
        if key_op not in v.key_ops:
            raise errors.key_operation_forbidden(key_op, "by this key's key_ops", "KeyOperationForbidden")
