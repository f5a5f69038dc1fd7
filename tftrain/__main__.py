"""`python -m tftrain` and the `tftrain` script: the CLI (tftrain.cli.main.cli), whose process then
ends without the interpreter's TensorFlow teardown (tftrain.cli.exit)."""

from __future__ import annotations


def cli() -> None:
    from tftrain.cli.exit import exit_now
    from tftrain.cli.main import cli as run_cli

    try:
        run_cli()
    except SystemExit as e:
        exit_now(e.code)
    exit_now(0)


if __name__ == "__main__":
    cli()
