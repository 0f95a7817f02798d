"""The alerts contract: an alert (a broken rule found by a scheduled check) and the activities that deliver it.

A workflow that finds something an operator must act on raises an :class:`Alert`: :meth:`AlertActivityStub.record_alert`
writes it to the log and the audit trail (``alert.raised``), :meth:`AlertActivityStub.post_alert_webhook` POSTs it as
JSON to ``CKEY_ALERT_WEBHOOK_URL``. :class:`activities.alerts.AlertActivities` implements them.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from temporalio import activity

ALERT_MAX_FINDINGS = 200
"""Findings one alert carries at most (a health check of every key in use: a few lines per key)."""


class AlertFinding(BaseModel):
    """One broken rule: which rule, on what, and what was seen."""

    rule: str
    target: str
    detail: str = ""


class Alert(BaseModel):
    """Something an operator must act on, found by an operation (its record names the same rules)."""

    rule: str
    """The alert's own rule id (``keyvault-health-failed``)."""
    operation_id: str
    kind: str
    summary: str
    """One line for a human: the operation record's error."""
    findings: list[AlertFinding] = Field(default_factory=list, max_length=ALERT_MAX_FINDINGS)
    at: datetime


class AlertDelivery(BaseModel):
    """Whether the webhook took the alert: ``delivered`` false with no status when no webhook is configured."""

    delivered: bool
    status: int | None = None


class AlertActivityStub:
    """The alert activities as workflows call them; :class:`activities.alerts.AlertActivities` runs them."""

    @activity.defn(name="record_alert")
    async def record_alert(self, input: Alert) -> None:
        """Write the alert to the log (a warning) and the audit trail (``alert.raised``)."""
        raise NotImplementedError

    @activity.defn(name="post_alert_webhook")
    async def post_alert_webhook(self, input: Alert) -> AlertDelivery:
        """POST the alert as JSON to the configured webhook; an answer other than 2xx fails the attempt."""
        raise NotImplementedError
