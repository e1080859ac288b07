"""``consentctl doctor``: check a deployment and say what to fix."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Mount ``doctor`` on the root command."""
