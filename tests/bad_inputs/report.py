"""Run the whole bad-input corpus and print, per tool, how many bad inputs were tried and what happened.

  python -m tests.bad_inputs.report [--tool alpaca ...] [--verbose]

Columns: bad inputs (cases), runs (each case, and again with --skip-invalid where the tool has it),
clear error (one line naming file/line/field, exit 2), skipped+counted (--skip-invalid dropped it under its
reason, kept + dropped = records read), converted (valid extreme inputs such as a 50 MB record),
crashed (a traceback or a signal), failed (any other expectation missed). Exit 1 if any run crashed or failed.
"""
import argparse
import sys
import tempfile
import time

from tests.bad_inputs import corpus


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.bad_inputs.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tool", action="append", choices=corpus.TOOLS, help="only these tools (repeatable)")
    parser.add_argument("--verbose", action="store_true", help="print every run")
    args = parser.parse_args(argv)
    cases = [c for c in corpus.CASES if not args.tool or c.tool in args.tool]
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="bad-inputs-") as work:
        results = corpus.run_all(cases, work)
    print(corpus.format_summary(corpus.summary(results)))
    bad = [r for rs in results.values() for r in rs if r.problems]
    crashed = [r for r in bad if r.crashed]
    print(f"\n{sum(len(rs) for rs in results.values())} runs in {time.time() - start:.0f} s; "
          f"crashed: {len(crashed) or 'none'}; failed expectations: {len(bad) - len(crashed) or 'none'}")
    for rs in results.values():
        for r in rs:
            if r.problems or args.verbose:
                print(f"  {'FAIL' if r.problems else 'ok  '} {r.case.id} [{r.mode}] {r.outcome} {r.seconds:.1f}s: "
                      + ("; ".join(r.problems) if r.problems else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
