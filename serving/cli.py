"""`infopt` sub-commands of serving/ (filled in by that part)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)
