"""Progress bars and error messages for the CLI, on stderr so stdout stays clean for
results."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


@contextmanager
def counting(total: int, label: str, unit: str = "people") -> Iterator[Callable[[int], None]]:
    """A progress bar; yields a function that advances it by a count."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


class DemoRefused(Exception):
    """The demo would overwrite work it did not create (here, not in ``hub.demo``, so
    that every command's error handling does not import the generator)."""


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a CLI error (escaped: messages may quote user input) and the exit to raise."""
    console.print(f"[bold red]error:[/] {escape(str(message))}", soft_wrap=True)
    return typer.Exit(code)
