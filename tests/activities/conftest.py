"""The sandbox fixtures of the workflow tests, for activities run on their own."""

from tests.workflows.conftest import azure, keyvault, keyvault_server, kv_control, stack_settings

__all__ = ["azure", "keyvault", "keyvault_server", "kv_control", "stack_settings"]
