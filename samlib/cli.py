"""``python -m samlib COMMAND ...``: each command lives in its own module as ``main(argv) -> int``."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("samlib.train", "train one run from a params file and --set overrides"),
    "bench": ("samlib.bench", "samples/s of SGD vs SAM variants on the CNN"),
    "sharpness": ("samlib.sharpness_cli", "measure the sharpness of a finished run"),
    "study": ("samlib.study.runner", "run a study grid of notebooks with papermill, then the summary"),
}


def usage() -> str:
    lines = ["usage: python -m samlib COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<10} {doc}" for name, (_, doc) in COMMANDS.items()]
    return "\n".join(lines + ["", "python -m samlib COMMAND --help for a command's arguments"])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"samlib: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)
