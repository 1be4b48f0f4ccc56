"""`python -m noisebench` and the `noisebench` command: Ctrl-C at any moment, even while the
command is still importing, exits with code 130 and one line, never a traceback."""

import sys


def main() -> None:
    try:
        from noisebench.cli import INTERRUPTED, app
    except KeyboardInterrupt:
        print("interrupted while starting: nothing was written", file=sys.stderr)
        sys.exit(130)
    try:
        app(prog_name="noisebench")
    except KeyboardInterrupt:  # between the commands' own handlers (they print the same)
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
