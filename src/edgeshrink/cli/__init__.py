"""The `edgeshrink` command: parses options and calls the Python API; errors are one line.

training.py  train, compress, distill     files.py    evaluate, inspect, export
measure.py   profile, devices, advise, report     listing.py  tasks, recipes, zoo
bench.py     bench (several models across runtimes)    search.py   search (recipes or architectures for a device)
"""

from __future__ import annotations

import sys

import typer

from edgeshrink.errors import EdgeshrinkError

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Compress trained PyTorch models for edge devices, measure and verify the result.",
)


def _register() -> None:
    from edgeshrink.cli import bench, files, listing, measure, search, training

    for module in (training, files, measure, bench, search, listing):
        module.register(app)


_register()


def run(args: list[str] | None = None) -> int:
    """Run the command line in this process; returns the exit status (2 for a user error, printed as
    one line on stderr)."""
    try:
        app(args=args, standalone_mode=False)
    except EdgeshrinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:  # click's usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


def main() -> None:
    sys.exit(run())
