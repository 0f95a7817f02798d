"""A stand-in for ``windows365.encrypt`` registered under its workflow name, until the real one is on the worker.

``m365.dep.assign`` starts the child by name (``contracts.windows365.WINDOWS365_ENCRYPT_WORKFLOW``); this workflow
takes the same input and returns at once, so that a test can see what the parent started it with.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts.windows365 import WINDOWS365_ENCRYPT_WORKFLOW, Windows365EncryptInput


@workflow.defn(name=WINDOWS365_ENCRYPT_WORKFLOW)
class Windows365EncryptStub:
    """Takes ``windows365.encrypt``'s input and ends."""

    @workflow.run
    async def run(self, input: Windows365EncryptInput) -> str:
        """The DEP it was started for."""
        return input.dep or ""
