"""Training curves from a Hugging Face trainer_state.json: loss / eval loss, learning rate, grad norm.

PATH is a trainer_state.json, a checkpoint directory holding one, or an output directory (its own
trainer_state.json, else the one of its latest checkpoint-N/). A training log (text with the trainer's
"{'loss': ..., 'learning_rate': ...}" lines) also works; its x axis is then the epoch.

Draws DIR/loss.png, DIR/lr.png (and DIR/grad_norm.png when logged), writes DIR/curves.md linking them
and DIR/curves.json with the numbers, and prints the numbers.

  python -m eval.curves outputs/my-run/adapter --out outputs/my-run/curves
"""
import argparse
import ast
import json
import re
from pathlib import Path

from common.errors import InputError, cli
from eval import report

STATE = "trainer_state.json"
SERIES = ("loss", "eval_loss", "learning_rate", "grad_norm")


def find_state(path):
    """The trainer_state.json (or log file) that PATH names."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_file():
        return path
    if (path / STATE).exists():
        return path / STATE
    checkpoints = sorted((p for p in path.glob("checkpoint-*") if (p / STATE).exists()),
                         key=lambda p: int(re.sub(r"\D", "", p.name.split("-")[-1]) or 0))
    if checkpoints:
        return checkpoints[-1] / STATE
    raise InputError(f"no {STATE} here or in a checkpoint-*/ folder (a run with save_strategy: \"no\" saves "
                     "none; pass its training log instead)", path)


def _log_entries(path, text):
    """Trainer log dicts printed in a training log."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in re.finditer(r"\{[^{}]*'(?:loss|eval_loss)'[^{}]*\}|\{[^{}]*\"(?:loss|eval_loss)\"[^{}]*\}", line):
            try:
                entry = ast.literal_eval(match.group(0))
            except (ValueError, SyntaxError):
                continue
            if isinstance(entry, dict):
                entries.append({k: (float(v) if isinstance(v, str) and re.fullmatch(r"[-+.\deE]+", v) else v)
                                for k, v in entry.items()})
    if not entries:
        raise InputError("no trainer log lines ({'loss': ...}) found", path)
    return entries


def read_history(path):
    """(source file, [log entries]) with a numeric x ('step', or 'epoch' for plain logs)."""
    source = find_state(path)
    text = source.read_text(encoding="utf-8", errors="replace")
    if source.suffix == ".json":
        try:
            state = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"invalid JSON: {err.msg}", source, err.lineno) from None
        history = state.get("log_history") if isinstance(state, dict) else None
        if not isinstance(history, list):
            raise InputError("no log_history list; is this a trainer_state.json?", source, field="log_history")
        entries = [e for e in history if isinstance(e, dict)]
    else:
        entries = _log_entries(source, text)
    return source, entries


def series(entries):
    """{name: [(x, value)]} for loss, eval_loss, learning_rate, grad_norm, and the x axis name."""
    x_key = "step" if any("step" in e for e in entries) else "epoch"
    out = {name: [] for name in SERIES}
    for n, e in enumerate(entries):
        x = e.get(x_key, n)
        for name in SERIES:
            value = e.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[name].append((x, float(value)))
    if not out["loss"] and not out["eval_loss"]:
        raise InputError("the log history has no loss or eval_loss")
    return out, x_key


def _plot(target, curves, x_key, title, ylabel, logy=False):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for label, points, style in curves:
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, style, label=label)
    ax.set_xlabel(x_key)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if len([c for c in curves if c[1]]) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(target, format="png")
    plt.close(fig)


def table_rows(data):
    """Rows (x, loss, eval_loss, learning_rate, grad_norm) merged by x."""
    merged = {}
    for name, points in data.items():
        for x, value in points:
            merged.setdefault(x, {})[name] = value
    return [[x] + [merged[x].get(name) for name in SERIES] for x in sorted(merged)]


def summary(data):
    out = {}
    if data["loss"]:
        out["first_loss"], out["last_loss"] = data["loss"][0][1], data["loss"][-1][1]
    if data["eval_loss"]:
        best = min(data["eval_loss"], key=lambda p: p[1])
        out["last_eval_loss"], out["best_eval_loss"], out["best_eval_at"] = data["eval_loss"][-1][1], best[1], best[0]
    if data["learning_rate"]:
        out["max_learning_rate"] = max(v for _, v in data["learning_rate"])
    return out


def draw(path, out=None, title=None, force=False):
    """Loss (train and eval), learning-rate and grad-norm curves of a run as PNG, with curves.json and
    curves.md, into out (default: curves/ next to the trainer state). Returns (result, x_key, rows, the
    files written)."""
    source, entries = read_history(path)
    data, x_key = series(entries)
    out = Path(out) if out else source.parent / "curves"
    title = title or source.parent.name
    files = {"loss.png": lambda t: _plot(t, [("train loss", data["loss"], "-"),
                                             ("eval loss", data["eval_loss"], "o-")], x_key,
                                         f"{title}: loss", "loss"),
             "lr.png": lambda t: _plot(t, [("learning rate", data["learning_rate"], "-")], x_key,
                                       f"{title}: learning rate", "learning rate")}
    if data["grad_norm"]:
        files["grad_norm.png"] = lambda t: _plot(t, [("grad norm", data["grad_norm"], "-")], x_key,
                                                 f"{title}: gradient norm", "grad norm", logy=True)
    if not data["learning_rate"]:
        del files["lr.png"]
    rows = table_rows(data)
    result = {"source": str(source), "x": x_key, "summary": summary(data),
              "series": {k: [list(p) for p in v] for k, v in data.items()}}
    rep = report.Report(f"Training curves: {title}")
    rep.kv({"source": str(source), **result["summary"]})
    for name, caption in (("loss.png", "loss"), ("lr.png", "learning rate"), ("grad_norm.png", "gradient norm")):
        if name in files:
            rep.figure(name, caption)
    rep.heading("Logged values").table([x_key, *SERIES], rows)
    files["curves.json"] = report.dumps(result)
    files["curves.md"] = rep.render()
    report.write_outputs(out, files, force)
    return result, x_key, rows, [out / name for name in sorted(files)]


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m eval.curves", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="trainer_state.json, a checkpoint or output directory, or a training log")
    parser.add_argument("--out", help="output directory (default: curves/ next to the trainer state)")
    parser.add_argument("--title", help="run name for the titles")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    result, x_key, rows, written = draw(args.path, args.out, args.title, args.force)
    print("\t".join([x_key, *SERIES]))
    for row in rows:
        print("\t".join(report.fmt(v, 6) if isinstance(v, float) else report.fmt(v) for v in row))
    print(f"curves: {', '.join(p.name for p in written)} -> {written[0].parent}")
    return result


if __name__ == "__main__":
    main()
