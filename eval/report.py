"""Markdown reports for the eval helpers, and writing an evaluation's files (JSON, Markdown, figures).

An evaluation writes into one output directory: `<name>.json`, `<name>.md` and any PNG the Markdown
links by relative path. All of them are checked first, so nothing is overwritten without --force and a
refused run writes nothing; each file appears atomically.

As a CLI it renders a results JSON written by any eval helper as Markdown on stdout.
"""
import argparse
import json
from pathlib import Path

from common.errors import cli
from common.io import atomic_path, check_output, read_json


def fmt(value, digits=4):
    """A table cell: floats rounded, None as a dash, text with pipes and newlines escaped."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


class Report:
    """A small Markdown builder: headings, paragraphs, key/value lists, tables, figures."""

    def __init__(self, title):
        self.lines = [f"# {title}", ""]

    def heading(self, text, level=2):
        self.lines += [f"{'#' * level} {text}", ""]
        return self

    def text(self, text):
        self.lines += [str(text), ""]
        return self

    def kv(self, mapping):
        self.lines += [f"- **{k}**: {fmt(v)}" for k, v in mapping.items()] + [""]
        return self

    def table(self, headers, rows):
        self.lines.append("| " + " | ".join(fmt(h) for h in headers) + " |")
        self.lines.append("|" + "|".join("---" for _ in headers) + "|")
        for row in rows:
            self.lines.append("| " + " | ".join(fmt(c) for c in row) + " |")
        self.lines.append("")
        return self

    def figure(self, filename, caption):
        """Link a figure by its path relative to the report."""
        self.lines += [f"![{caption}]({filename})", ""]
        return self

    def code(self, text, lang=""):
        self.lines += [f"```{lang}", str(text), "```", ""]
        return self

    def render(self):
        return "\n".join(self.lines).rstrip() + "\n"


def check_outputs(out_dir, names, force=False):
    """Refuse early (before any slow work) if an output exists and force is not set."""
    for name in names:
        check_output(Path(out_dir) / name, force)


def write_outputs(out_dir, files, force=False):
    """Write files into out_dir: {name: str | bytes | callable(path)}; returns their paths.

    Every target is checked before anything is written; each then appears atomically.
    """
    out_dir = Path(out_dir)
    targets = {name: out_dir / name for name in files}
    for path in targets.values():
        check_output(path, force)
    for name, content in files.items():
        with atomic_path(targets[name], force=True) as tmp:
            if callable(content):
                content(tmp)
            elif isinstance(content, bytes):
                tmp.write_bytes(content)
            else:
                tmp.write_text(content, encoding="utf-8")
    return list(targets.values())


def dumps(data):
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def generic_markdown(data, title="Results"):
    """A Markdown view of any JSON results: scalars as a list, lists of flat dicts as tables."""
    report = Report(title)
    scalars = {k: v for k, v in data.items() if not isinstance(v, (dict, list))}
    if scalars:
        report.kv(scalars)
    for key, value in data.items():
        if isinstance(value, dict):
            report.heading(key).kv({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in value.items()})
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            headers = list(dict.fromkeys(k for v in value for k in v))
            rows = [[(json.dumps(v.get(h)) if isinstance(v.get(h), (dict, list)) else v.get(h)) for h in headers]
                    for v in value]
            report.heading(key).table(headers, rows)
    return report.render()


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m eval.report", description=__doc__)
    parser.add_argument("results", help="a results JSON written by an eval helper")
    parser.add_argument("--title", default=None, help="report title (default: the file name)")
    args = parser.parse_args(argv)
    path = Path(args.results)
    data = read_json(path)
    print(generic_markdown(data, args.title or path.stem), end="")


if __name__ == "__main__":
    main()
