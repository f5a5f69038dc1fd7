"""`python -m tftrain`: the CLI (tftrain.cli.main)."""

from tftrain.cli.main import cli

if __name__ == "__main__":
    cli()
