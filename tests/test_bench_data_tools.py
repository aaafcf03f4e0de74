"""scripts.bench.data_tools at a tiny size: it runs, and its JSON has every field (no timing assertions)."""
import json
import subprocess
import sys

from common import ROOT

ROW_FIELDS = {"tool", "input", "records", "seconds", "cpu_seconds", "records_per_s", "peak_rss_mb",
              "peak_rss_mb_n10", "records_n10", "seconds_n10", "rss_ratio", "input_mb", "output_mb", "target_met",
              "same_output_as_streaming"}


def test_bench_runs_at_a_tiny_size(tmp_path):
    out = tmp_path / "bench.json"
    argv = [sys.executable, "-m", "scripts.bench.data_tools", "--n", "2000", "--dir", str(tmp_path / "data"),
            "--json", str(out)]
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert (result["n"], result["n_small"], result["target_records_per_s"]) == (2000, 200, 50_000)
    assert {"cpus", "mem_gib", "python"} <= set(result["machine"])
    rows = {row["tool"]: row for row in result["rows"]}
    assert set(rows) == {"data_tools.discord", "naive discord (json.load)", "data_tools.alpaca",
                         "data_tools.alpaca (JSON array)", "naive alpaca (readlines)"}
    for row in rows.values():
        assert set(row) == ROW_FIELDS
        assert row["records"] == 2000 and row["records_n10"] == 200
        assert row["seconds"] > 0 and row["peak_rss_mb"] > 0 and row["peak_rss_mb_n10"] > 0
        assert isinstance(row["target_met"], bool)
    # the naive converters write exactly what the streaming ones write
    assert rows["naive discord (json.load)"]["same_output_as_streaming"] is True
    assert rows["naive alpaca (readlines)"]["same_output_as_streaming"] is True
    # the JSON array gives exactly what the JSONL gives, and both rates are printed side by side
    assert rows["data_tools.alpaca (JSON array)"]["same_output_as_streaming"] is True
    assert rows["data_tools.alpaca (JSON array)"]["input"] == "alpaca-array"
    assert "alpaca records/s: JSONL " in run.stdout and " vs JSON array " in run.stdout
    for tool in rows:
        assert tool in run.stdout
    assert "RSS ratio N vs N/10" in run.stdout and "target met" in run.stdout
    # inputs are generated once and reused; a second run needs --force to overwrite its JSON
    assert len(list((tmp_path / "data").iterdir())) == 6
    again = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--force" in again.stderr
