"""The console every command reports on: stderr, so stdout stays clean for data."""

from __future__ import annotations

from rich.console import Console

stderr = Console(stderr=True, soft_wrap=True)
"""Log lines stay whole in files and pipes (soft wrap)."""
