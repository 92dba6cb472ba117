"""The console every command reports on: stderr, so stdout stays clean for data."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from schemas.parsing import printable

stderr = Console(stderr=True, soft_wrap=True, emoji=False)
"""Log lines stay whole in files and pipes (soft wrap); `:name:` in data never becomes an emoji."""


def safe(text: str) -> str:
    """`text` from outside (input, a file name, an error message) for a markup string: control characters
    escaped (`schemas.parsing.printable`), and brackets escaped so Rich never reads them as markup."""
    return escape(printable(text))
