"""Execute a notebook with papermill, its kernel connected over local Unix sockets (IPC) instead of TCP.

``python -m scripts.run_notebook NOTEBOOK OUTPUT [--cwd DIR] [-p NAME VALUE ...]`` runs like ``papermill
NOTEBOOK OUTPUT [--cwd DIR] [-p NAME VALUE ...]`` (``make figures`` uses it). The one difference: papermill's
kernel manager talks to the kernel over TCP on localhost by default, and ipykernel 7 then logs "Kernel is
running over TCP without encryption ... Use IPC transport" for every notebook. Unix sockets are only reachable
through the file system, with the user's permissions, so the warning does not apply, and it is not printed.

A failing cell exits with status 1 after the executed notebook (with the error in it) has been written, as
papermill does.
"""

from __future__ import annotations

import argparse
import sys

from traitlets.config import Config

KERNEL_CONFIG = Config({"KernelManager": {"transport": "ipc"}})
"""Config of the kernel manager that papermill (through nbclient) starts the kernel with."""


def parse_value(text: str) -> object:
    """A ``-p`` value as papermill's command line reads it: booleans, integers and floats, else the string."""
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.run_notebook", description=__doc__.splitlines()[0])
    parser.add_argument("notebook")
    parser.add_argument("output")
    parser.add_argument("--cwd", default=None, help="working directory of the kernel")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = parser.parse_args(argv)

    import papermill
    from papermill.exceptions import PapermillExecutionError

    print(f"Input notebook: {args.notebook}\nOutput notebook: {args.output}", flush=True)
    try:
        papermill.execute_notebook(args.notebook, args.output, cwd=args.cwd, config=KERNEL_CONFIG,
                                   parameters={name: parse_value(value) for name, value in args.parameter})
    except PapermillExecutionError as e:
        sys.exit(f"{args.notebook} failed in cell {e.exec_count}: {e.ename}: {e.evalue}")


if __name__ == "__main__":
    main()
