"""Deterministic generators of the recipes' sample data; each writes the files it documents."""
import argparse
from pathlib import Path

from common.io import check_output, write_jsonl


def write_files(rows_by_name, out_dir, force=False):
    """{file name: rows} -> JSONL files in out_dir; {name: path}. Without force an existing file refuses
    the whole run before anything is written."""
    paths = {name: check_output(Path(out_dir) / name, force) for name in rows_by_name}
    for name, rows in rows_by_name.items():
        write_jsonl(paths[name], rows, force=force)
    return paths


def write_splits(rows_by_split, prefix, out_dir, force=False):
    """{split: rows} -> out_dir/<prefix>_<split>.jsonl; returns {split: path}."""
    paths = write_files({f"{prefix}_{split}.jsonl": rows for split, rows in rows_by_split.items()}, out_dir, force)
    return {split: paths[f"{prefix}_{split}.jsonl"] for split in rows_by_split}


def main(module, default_out, write, argv=None):
    """The generators' shared command line: --out DIR, --force; prints each file written."""
    parser = argparse.ArgumentParser(prog=f"python -m {module.__name__}", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(default_out) if default_out else None,
                        help="folder to write to" + ("" if default_out else " (default: the module's own folders)"))
    parser.add_argument("--force", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    for path in write(args.out, args.force).values():
        print(path)
