"""Alert activities: an alert goes to the log, the audit trail, and (when configured) a webhook.

The webhook is an activity of its own so that Temporal retries it (a receiver restarting, a 503) without writing the
log line and the audit event again; the workflow decides what a webhook that stays down means (see
:mod:`workflows.keyvault`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from ckey.operations import AuditEvent, Outcome
from ckey.store import Store
from contracts.alerts import Alert, AlertActivityStub, AlertDelivery

if TYPE_CHECKING:
    from activities import Gateways

log = logging.getLogger("ckey.alerts")

WEBHOOK_TIMEOUT = 10.0
"""Seconds one POST to the webhook may take (connect, send, answer)."""
RETRYABLE_STATUSES = frozenset({408, 425, 429})
"""Client errors that a later attempt may cure; every other 4xx is the receiver refusing the alert for good."""


class AlertActivities(AlertActivityStub):
    """Activities that raise alerts.

    Args:
        store: the audit trail.
        webhook_url: where alerts are POSTed as JSON (``CKEY_ALERT_WEBHOOK_URL``); ``None``: no webhook.
    """

    @classmethod
    def from_gateways(cls, gateways: Gateways) -> AlertActivities:
        """The family built from the worker's gateways (the store is always there; the webhook may not be)."""
        return cls(gateways.store, gateways.alert_webhook_url)

    def __init__(self, store: Store, webhook_url: str | None) -> None:
        self.store = store
        self.webhook_url = webhook_url

    @activity.defn
    async def record_alert(self, input: Alert) -> None:
        """Log a warning and append ``alert.raised`` to the operation's audit trail (once, whatever the retries)."""
        log.warning("ALERT %s from %s (%s): %s", input.rule, input.operation_id, input.kind, input.summary)
        info = activity.info()
        await self.store.append_audit(
            AuditEvent(
                # No attempt in the key: a retry after the write landed finds the entry and writes nothing.
                key=f"{info.workflow_id}/{info.workflow_run_id}/a{info.activity_id}/alert.raised",
                at=datetime.now(UTC),
                actor="ckey",
                action="alert.raised",
                outcome=Outcome.FAILED,
                operation_id=input.operation_id,
                target="operators",
                detail={
                    "rule": input.rule,
                    "summary": input.summary,
                    "rules": sorted({f.rule for f in input.findings}),
                    "findings": [f.model_dump() for f in input.findings],
                    "webhook": self.webhook_url is not None,
                },
            )
        )

    @activity.defn
    async def post_alert_webhook(self, input: Alert) -> AlertDelivery:
        """POST the alert as JSON; 2xx delivers it, 408/429/5xx and network errors are retried, other 4xx are not."""
        if self.webhook_url is None:
            return AlertDelivery(delivered=False)
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT, follow_redirects=False) as http:
            response = await http.post(
                self.webhook_url,
                content=input.model_dump_json(),
                headers={"Content-Type": "application/json", "User-Agent": "ckey-alerts"},
            )
        if response.is_success:
            return AlertDelivery(delivered=True, status=response.status_code)
        message = f"the alert webhook answered {response.status_code}"
        retryable = response.status_code >= 500 or response.status_code in RETRYABLE_STATUSES
        raise ApplicationError(message, type="alert-webhook-accepted", non_retryable=not retryable)
