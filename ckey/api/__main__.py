"""Run the API with uvicorn: ``python -m ckey.api``."""

from __future__ import annotations

import uvicorn

from ckey.config import get_settings


def main() -> None:
    """Serve the API on the configured host and port."""
    settings = get_settings()
    uvicorn.run("ckey.api.app:create_app", factory=True, host=settings.api_host, port=settings.api_port)


if __name__ == "__main__":
    main()
