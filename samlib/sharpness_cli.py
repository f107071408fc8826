"""The old entry point of ``python -m samlib sharpness``; its arguments now live in `samlib.cli`.

Kept only while tests/test_sharpness.py imports ``samlib.sharpness_cli.main``; delete it once that
test calls ``samlib.cli.main(["sharpness", ...])``.
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from samlib.cli import main as cli_main

    return cli_main(["sharpness", *argv])
