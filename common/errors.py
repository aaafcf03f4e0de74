"""Errors that name the file, line and field, and a CLI wrapper that prints them cleanly."""
import functools
import sys


class InputError(Exception):
    """Bad input. Printed as 'file:line: field: message' without a traceback. `reason`: the short key a
    skipped record is counted under (common.io.Tally)."""

    def __init__(self, message, file=None, line=None, field=None, reason=None):
        self.message, self.file, self.line, self.field, self.reason = message, file, line, field, reason
        super().__init__(str(self))

    def __str__(self):
        where = ":".join(str(p) for p in (self.file, self.line) if p is not None)
        parts = [p for p in (where, f"field '{self.field}'" if self.field else None, self.message) if p]
        return ": ".join(parts)


class StepError(Exception):
    """A step that cannot go on (a tool not installed, a subprocess that failed). The cli wrapper prints
    the message as it is and exits 1."""


def cli(main):
    """Wrap a CLI entry point: InputError, FileExistsError and FileNotFoundError exit 2 with one clear line,
    StepError exits 1 with its message; the library noise of common.quiet is filtered."""

    @functools.wraps(main)
    def wrapper(argv=None):
        from common.quiet import quiet

        quiet()  # known library noise filtered (RECIPES_VERBOSE=1 shows it)
        try:
            return main(argv)
        except (InputError, FileExistsError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except StepError as err:
            print(err, file=sys.stderr)
            sys.exit(1)

    return wrapper
