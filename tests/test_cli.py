"""Every command's bad input: exit code 2 and one line on stderr that starts with the program and the
command, ``python -m samlib <command>: error:``, as argparse's own errors do (no bare ``error:``)."""

from pathlib import Path

import pytest

from samlib import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command, args", [
    ("train", ["--set", "notebook=x"]),  # not a Config key
    ("bench", ["--methods", "sgd,nosuch"]),
    ("sharpness", ["/nonexistent/run"]),
    ("study", [str(REPO / "params" / "quick.yaml"), "--only", "nosuch", "--dry-run",
               "--notebooks", str(REPO / "notebooks")]),  # a notebook the study does not have
    ("study", [str(REPO / "params" / "quick.yaml"), "--scheduler", "tcp://x:1"]),
    ("report", ["/nonexistent/study"]),
])
def test_bad_input_names_the_program_and_the_command(capsys, command, args):
    assert cli.main([command, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"python -m samlib {command}: error: "), err
