"""Copy a recipe into your own folder (`recipe cp RECIPE DEST`, as torchtune's `tune cp`): the YAML, its
README, its deploy section, the local data files, DeepSpeed JSON and accelerate configs it uses, with the
paths in the YAML (and README) rewritten to the copies. The YAML is edited line by line, so its comments
stay. Paths stay relative to the repo root, where Axolotl runs; outputs go to outputs/<DEST's name>/...
Files already in DEST are refused unless force.
"""
import os
import re
import shutil
from pathlib import Path

from common import ROOT
from common.io import atomic_open, atomic_path, check_output
from common.run import Run, repo_path


def path_value(path):
    """A path as a recipe writes it: relative to the repo root (with ../ when outside it)."""
    return Path(os.path.relpath(Path(path).resolve(), ROOT)).as_posix()


def _sources(run, dest):
    """(source file, copy, recipe key or None) for everything the copy needs."""
    src_dir = run.path.resolve().parent
    out = []

    def target(path):
        path = path.resolve()
        return dest / (path.relative_to(src_dir) if path.is_relative_to(src_dir) else Path("data") / path.name)

    for key in ("datasets", "test_datasets"):
        for i, _, path in run.data_paths(key):
            out.append((path, target(path), f"{key}[{i}].path"))
    ds = run.cfg.get("deepspeed")
    if isinstance(ds, str) and repo_path(ds).is_file():
        out.append((repo_path(ds), target(repo_path(ds)), "deepspeed"))
    if run.cfg.get("fsdp_config") and (src_dir / "accelerate").is_dir():
        out += [(p, dest / "accelerate" / p.name, None) for p in sorted((src_dir / "accelerate").glob("*.yaml"))]
    deploy = run.deploy_file()
    if deploy:
        out.append((deploy, dest / deploy.name, None))
    return out


def _replace_on_line(lines, number, old, new, what):
    line = lines[number - 1]
    if old not in line:
        raise ValueError(f"{what}: {old!r} not on line {number}")
    lines[number - 1] = line.replace(old, new, 1)


def copy_recipe(recipe, dest, force=False):
    """Copy the recipe and what it uses into dest; returns the new YAML's path."""
    run = Run.load(recipe)
    dest = Path(dest).resolve()
    src_dir = run.path.resolve().parent
    new_yml = dest / run.path.name
    files = _sources(run, dest)
    readme = src_dir / "README.md"
    targets = [new_yml] + [copy for _, copy, _ in files] + ([dest / "README.md"] if readme.is_file() else [])
    for target in targets:
        check_output(target, force)  # refuse before writing anything

    lines = run.text.splitlines(keepends=True)
    for src, copy, key in files:
        if key:
            old = run.cfg["deepspeed"] if key == "deepspeed" else \
                run.cfg[key.split("[")[0]][int(key.split("[")[1].split("]")[0])]["path"]
            _replace_on_line(lines, run.lines[key], old, path_value(copy), key)
    old_out, new_out = f"outputs/{run.name}/", f"outputs/{dest.name}/"
    for key in ("output_dir", "dataset_prepared_path"):
        value = run.cfg.get(key)
        if isinstance(value, str) and value.startswith(old_out) and key in run.lines:
            _replace_on_line(lines, run.lines[key], value, new_out + value[len(old_out):], key)

    for src, copy in dict.fromkeys((src, copy) for src, copy, _ in files):  # a file used twice is copied once
        with atomic_path(copy, force) as tmp:
            shutil.copy2(src, tmp)
    if readme.is_file():
        text = readme.read_text(encoding="utf-8")
        copied = {new_yml, *(copy for _, copy, _ in files)}

        def repoint(m):  # a path to a file the copy has (siblings not copied stay as they were)
            return path_value(dest / m.group(1)) if dest / m.group(1) in copied else m.group(0)

        text = re.sub(rf"\brecipes/{re.escape(run.name)}/([\w.-]+(?:/[\w.-]+)*)", repoint, text)
        with atomic_open(dest / "README.md", force) as fh:
            stem = run.path.stem  # the copied recipe's outputs (a sibling recipe's stay as they were)
            fh.write(re.sub(rf"\b{re.escape(old_out + stem)}\b", new_out + stem, text))
    with atomic_open(new_yml, force) as fh:
        fh.write("".join(lines))
    return new_yml
