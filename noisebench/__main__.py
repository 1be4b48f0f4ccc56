"""`python -m noisebench` and the `noisebench` command: Ctrl-C at any moment once this module
runs, even while the command is still importing, exits with code 130 and one line."""

import os
import sys

INTERRUPTED_CODE = 130


def _exit_interrupted() -> None:
    # CPython remembers a Ctrl-C that lands while it runs code through PyRun (as some imports
    # do) and, at exit, ends the process by SIGINT even though the interrupt was handled;
    # leaving with os._exit keeps the exit code 130.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(INTERRUPTED_CODE)


def main() -> None:
    try:
        from noisebench.cli import INTERRUPTED, app
    except KeyboardInterrupt:
        print("interrupted while starting: nothing was written", file=sys.stderr)
        _exit_interrupted()
    try:
        app(prog_name="noisebench")
    except KeyboardInterrupt:  # outside the commands' own handlers (they print the same)
        print(INTERRUPTED, file=sys.stderr)
        _exit_interrupted()
    except SystemExit as exc:
        if exc.code == INTERRUPTED_CODE:
            _exit_interrupted()
        raise


if __name__ == "__main__":
    main()
