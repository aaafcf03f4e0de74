"""Axolotl's own `axolotl.cli.train`, quiet: `accelerate launch ... -m common.axolotl_train CONFIG`.

The known library noise is dropped where it is emitted (common.quiet). The terminal gets Axolotl's
warnings and errors; its INFO lines stay in debug.log in the output dir (Axolotl writes everything
there), and the resolved config goes to axolotl_config.json there, its path printed. Progress lines
come from the common.train_progress plugin. RECIPES_VERBOSE=1 shows everything.
"""
import json
import logging
import sys
from pathlib import Path

from common.quiet import quiet, verbose


class ConsoleView(logging.Filter):
    """On Axolotl's console handler: the resolved config goes to a file; INFO only when verbose."""

    def filter(self, record):
        if record.name == "axolotl.cli.config" and str(record.msg).startswith("config:"):
            self.save_config(record.args[0] if record.args else str(record.msg).partition("\n")[2])
        return verbose() or record.levelno >= logging.WARNING

    @staticmethod
    def save_config(text):
        from common.io import atomic_open

        out = json.loads(text).get("output_dir")
        if not out:
            return
        path = Path(out) / "axolotl_config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, force=True) as fh:
            fh.write(text + "\n")
        print(f"resolved Axolotl config: {path} (full log: {Path(out) / 'debug.log'})", flush=True)


def main():
    quiet()  # before the libraries log anything
    import fire
    from axolotl.cli.train import do_cli  # importing axolotl.cli configures its logging

    view = ConsoleView()
    for handler in logging.getLogger("axolotl").handlers:
        if getattr(handler, "stream", None) in (sys.stdout, sys.stderr):
            handler.addFilter(view)
    fire.Fire(do_cli)


if __name__ == "__main__":
    main()
