"""Atomic outputs: a run killed part way (a real SIGKILL) leaves nothing at the final path that looks
complete, only a `.tmp-*` sibling; and no CLI overwrites an existing output without --force."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from common import ROOT
from tests.helpers import make_adapter

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}


def start(*args):
    return subprocess.Popen([sys.executable, "-m", *map(str, args)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")


def wait_for(proc, ready, timeout=120, what="the moment to kill it"):
    """Poll ready() every few ms while proc runs; fail if proc ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = ready()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def wait_for_line(proc, pattern, what):
    """Read proc's output until a line contains pattern (the run is then still going)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if pattern in line:
            return line
    proc.wait()
    pytest.fail(f"the run ended (exit {proc.returncode}) before {what}:\n{''.join(seen)[-3000:]}")


def kill(proc):
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def temp_siblings(final):
    return sorted(final.parent.glob(f".tmp-{final.name}-*"))


def assert_nothing_final(final):
    """The final path is absent; everything next to it is a .tmp-* sibling of it."""
    assert not final.exists(), f"{final} exists after the kill"
    strays = [p.name for p in final.parent.iterdir() if not p.name.startswith(f".tmp-{final.name}-")]
    assert strays == [], f"left next to the output: {strays}"


# --- SIGKILL part way ------------------------------------------------------------------------------

N_RECORDS = 800_000


def test_converter_killed_mid_write_leaves_no_output(tmp_path):
    record = json.dumps({"instruction": "Name a primary color, and say why it is primary.",
                         "input": "Think of paint, not light.", "output": "Red: it cannot be mixed from others."})
    src = tmp_path / "big.jsonl"
    src.write_text((record + "\n") * N_RECORDS)  # ~100 MB: a few seconds of converting
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    final = out_dir / "train.jsonl"
    proc = start("data_tools.alpaca", src, "-o", final)

    def partial_output():
        for tmp in temp_siblings(final):
            part = tmp / final.name
            if part.exists() and part.stat().st_size > 1_000_000:
                return part
        return None

    part = wait_for(proc, partial_output, what="the converter wrote its first megabyte")
    kill(proc)
    assert_nothing_final(final)
    assert part.exists() and part.stat().st_size < src.stat().st_size  # it really was killed mid-write
    # the leftover does not block the next run, which writes the whole file
    done = subprocess.run([sys.executable, "-m", "data_tools.alpaca", str(src), "-o", str(final)], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with open(final, "rb") as fh:
        assert sum(1 for _ in fh) == N_RECORDS
    for big in (src, final, part):  # ~300 MB: not kept with pytest's tmp dirs
        big.unlink()


def test_merge_killed_after_the_first_shard_leaves_no_output(tmp_path, sharded_base):
    adapter = make_adapter(sharded_base, tmp_path / "adapter", targets=("q_proj", "v_proj"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    final = out_dir / "merged"
    shards = sorted(sharded_base.glob("model-*.safetensors"))
    proc = start("deploy.merge", "--base", sharded_base, "--adapter", adapter, "-o", final, "--verify")
    wait_for_line(proc, f"merge: shard 1/{len(shards)}", "the first shard was written")
    (tmp,) = temp_siblings(final)  # the temp dir, with the first shard complete in it
    first = tmp / final.name / shards[0].name
    assert first.stat().st_size == shards[0].stat().st_size
    kill(proc)
    assert_nothing_final(final)


def test_gguf_export_killed_mid_write_leaves_no_output(tmp_path, smollm2):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    final = out_dir / "model.gguf"
    proc = start("deploy.gguf", smollm2, "-o", final, "--outtype", "f16")
    wait_for_line(proc, "gguf: 50/", "50 tensors were written")
    (tmp,) = temp_siblings(final)
    part = tmp / final.name
    assert part.exists() and part.stat().st_size > 1_000_000
    kill(proc)
    assert_nothing_final(final)
    assert part.stat().st_size < sum(p.stat().st_size for p in smollm2.glob("*.safetensors")) // 2
    part.unlink()


# --- no overwrite without --force -------------------------------------------------------------------

FIXTURES = ROOT / "tests" / "fixtures" / "data_tools"
OLD = b"an earlier output, not to be touched\n"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tinyllama):
    """Valid inputs for every CLI below, so that only the existing output stops it."""
    d = tmp_path_factory.mktemp("inputs")
    adapter = make_adapter(tinyllama, d / "adapter", targets=("q_proj", "v_proj"))
    (d / "m.gguf").write_bytes(b"GGUF")
    state = d / "run" / "trainer_state.json"
    state.parent.mkdir()
    state.write_text(json.dumps({"global_step": 2, "log_history": [
        {"epoch": 0.5, "learning_rate": 1e-3, "loss": 2.0, "step": 1},
        {"epoch": 1.0, "learning_rate": 5e-4, "loss": 1.5, "step": 2}]}))
    prompts = d / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Say hi."}) + "\n")
    report = [{"id": 0, "prompt": [{"role": "user", "content": "Say hi."}], "output": "Hi.", "reference": None,
               "metrics": None, "settings": {"model": "m"}}]
    for name in ("a.jsonl", "b.jsonl"):
        (d / name).write_text("".join(json.dumps(r) + "\n" for r in report))
    (d / "key.private.json").write_text("{}")
    (d / "sheet.csv").write_text("id\n")
    return {"dir": d, "adapter": adapter, "gguf": d / "m.gguf", "run": state.parent, "prompts": prompts,
            "tinyllama": tinyllama}


HELD = ROOT / "recipes" / "tinyllama-qa" / "data" / "qa_heldout.jsonl"
# (module, argv with {out} for the existing output, kind of output: file, or dir/<name> for a file in a dir)
WRITERS = {
    "data_tools.alpaca": ([FIXTURES / "alpaca_valid.jsonl", "-o", "{out}"], "file"),
    "data_tools.sharegpt": ([FIXTURES / "sharegpt_valid.jsonl", "-o", "{out}"], "file"),
    "data_tools.qa": ([HELD, "-o", "{out}"], "file"),
    "data_tools.rpg": ([ROOT / "recipes/tinyllama-rpg/data/rpg_heldout.jsonl", "-o", "{out}"], "file"),
    "data_tools.discord": ([FIXTURES / "discord_small.json", "--persona", "vex", "-o", "{out}"], "file"),
    "data_tools.filter": ([FIXTURES / "filter_input.jsonl", "-o", "{out}"], "file"),
    "data_tools.stats --json": ([FIXTURES / "stats_lengths.jsonl", "--tokenizer", "{tinyllama}", "--sequence-len",
                                 "64", "--json", "{out}"], "file"),
    "data_tools.stats --png": ([FIXTURES / "stats_lengths.jsonl", "--tokenizer", "{tinyllama}", "--sequence-len",
                                "64", "--png", "{out}"], "file"),
    "deploy.merge": (["--base", "{tinyllama}", "--adapter", "{adapter}", "-o", "{out}"], "dir"),
    "deploy.gguf": (["{tinyllama}", "-o", "{out}"], "file"),
    "deploy.gguf --adapter": (["{tinyllama}", "--adapter", "{adapter}", "-o", "{out}"], "file"),
    "deploy.ollama": (["--gguf", "{gguf}", "--model", "{tinyllama}", "-o", "{out}"], "file"),
    "deploy.vllm serve-command": (["serve-command", "--base", "{tinyllama}", "--adapter", "mine={adapter}",
                                   "-o", "{out}"], "file"),
    "deploy.hub --stage-dir": (["upload", "{adapter}", "--repo-id", "someone/x", "--dry-run", "--stage-dir", "{out}"],
                               "dir"),
    "eval.batch": (["--prompts", "{prompts}", "--model", "{tinyllama}", "--out", "{out}"], "file"),
    "eval.perplexity": (["--data", HELD, "--model", "{tinyllama}", "--out", "{out}"], "dir/perplexity.json"),
    "eval.task": (["--task", "qa", "--model", "{tinyllama}", "--out", "{out}"], "dir/qa.json"),
    "eval.redteam": (["--model", "{tinyllama}", "--system", "You are Vex.", "--out", "{out}"], "dir/redteam.md"),
    "eval.curves": (["{run}", "--out", "{out}"], "dir/curves.json"),
    "eval.ab make-sheet": (["make-sheet", "--a", "{dir}/a.jsonl", "--b", "{dir}/b.jsonl", "--out", "{out}"],
                           "dir/key.private.json"),
    "eval.ab score": (["score", "--key", "{dir}/key.private.json", "{dir}/sheet.csv", "--out", "{out}"],
                      "dir/ab_scores.json"),
    "eval.ab judge": (["judge", "--sheet", "{dir}/sheet.csv", "--out", "{out}", "--model", "m",
                       "--base-url", "http://127.0.0.1:9/v1"], "file"),
    "scripts.cpu_run": (["recipes/quickstart/lora-135m.yml", "--output-dir", "{out}", "--max-steps", "1", "--dataset",
                         "recipes/tinyllama-qa/data/train.messages.jsonl", "--eval-dataset",
                         "recipes/tinyllama-qa/data/train.messages.jsonl"],
                        "dir/adapter_config.json"),
    "scripts.quickstart": (["--output-dir", "{out}", "--max-steps", "1"], "dir"),
    "scripts.results": (["--out", "{out}", "--only", "rpg"], "dir/results.json"),
    "scripts.gpu_check": (["recipes/tinyllama-qa/lora-1.1b.yml", "--cpu", "--out", "{out}"], "dir/gpu_check.json"),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_existing_output_is_refused_without_force(name, inputs, tmp_path, capsys):
    import importlib

    argv, kind = WRITERS[name]
    out = tmp_path / "existing"
    if kind == "file":
        out.write_bytes(OLD)
        kept = out
    else:
        out.mkdir()
        kept = out / (kind.partition("/")[2] or "keep.txt")
        kept.write_bytes(OLD)
    before = sorted(p.name for p in tmp_path.iterdir()), sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    values = {key: str(value) for key, value in inputs.items()} | {"out": str(out)}
    args = [str(a).format(**values) for a in argv]
    module = importlib.import_module(name.split()[0])
    with pytest.raises(SystemExit) as exit_info:
        module.main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and str(out) in err[-1] and "--force" in err[-1], err[-3:]
    assert kept.read_bytes() == OLD
    after = sorted(p.name for p in tmp_path.iterdir()), sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    assert after == before  # nothing new written, no .tmp-* left


# a model cache, not an output: models already built are kept (a no-op), --force rebuilds them
NOT_OUTPUTS = {"scripts.build_models"}


def test_every_cli_that_writes_is_covered():
    """Every CLI with a --force option (it writes outputs) has a no-overwrite case above."""
    covered = {name.split()[0] for name in WRITERS}
    writers = set()
    for package in ("data_tools", "deploy", "eval", "scripts"):
        for path in sorted((ROOT / package).glob("*.py")):
            text = path.read_text(encoding="utf-8")
            converter = "parser(\"data_tools." in text  # data_tools._chat.parser adds -o and --force
            if not path.name.startswith("_") and "def main" in text and ('"--force"' in text or converter):
                writers.add(f"{package}.{path.stem}")
    assert {"data_tools.alpaca", "deploy.merge", "eval.batch", "scripts.quickstart"} <= writers
    assert writers - NOT_OUTPUTS <= covered, f"not covered: {sorted(writers - NOT_OUTPUTS - covered)}"
