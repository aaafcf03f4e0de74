"""Input formats of the converters: JSONL, a JSON array (streamed), Parquet and CSV, told from the content."""
import csv
import json
import subprocess
import sys
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import common.io
from common import ROOT
from common.errors import InputError
from data_tools import _formats, alpaca, filter as quality, qa, rpg, sharegpt, stats
from data_tools._chat import convert_records

ALPACA = [{"instruction": f"Say {w}.", "input": "" if i % 2 else f"politely {i}", "output": f"{w} 😀 ?"}
          for i, w in enumerate(("hello", "ça marche", "wait ... what", "bye", "yes"))]
SHAREGPT = [{"conversations": [{"from": "human", "value": f"hi {i}"}, {"from": "gpt", "value": f"hello {i} !"}]}
            for i in range(4)]


def write(path, records, fmt):
    """records as JSONL, a pretty-printed JSON array, Parquet or CSV (flat records only)."""
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    elif fmt == "array":
        path.write_text(json.dumps(records, indent=4, ensure_ascii=False), encoding="utf-8")
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    return path


def lines(path):
    return path.read_text(encoding="utf-8").splitlines()


CONVERTERS = {  # name: (records, convert, formats)
    "alpaca": (ALPACA, lambda r, f, n: alpaca.to_messages(r, None, f, n), ("array", "parquet", "csv")),
    "sharegpt": (SHAREGPT, lambda r, f, n: sharegpt.to_messages(r, None, f, n), ("array", "parquet")),
    "qa": ([{"question": f"q{i}?", "answer": f"a {i}"} for i in range(3)],
           lambda r, f, n: qa.to_messages(r, qa.SYSTEM_PROMPT, f, n), ("array", "parquet", "csv")),
    "rpg": ([{"task": f"t{i}", "output": str(i)} for i in range(3)], rpg.to_messages, ("array", "parquet", "csv")),
}


@pytest.mark.parametrize("name", CONVERTERS)
def test_every_format_converts_to_the_same_output(name, tmp_path):
    records, convert, formats = CONVERTERS[name]
    convert_records(write(tmp_path / "in.jsonl", records, "jsonl"), tmp_path / "want.jsonl", convert)
    for fmt in formats:
        # the extension says nothing: the content decides
        src = write(tmp_path / f"in-{fmt}.data", records, fmt)
        assert _formats.detect(src) == fmt
        tally = convert_records(src, tmp_path / f"{fmt}.jsonl", convert)
        assert (tally.kept, dict(tally.dropped)) == (len(records), {})
        assert lines(tmp_path / f"{fmt}.jsonl") == lines(tmp_path / "want.jsonl"), fmt


def test_alpaca_json_array_as_stanford_ships_it(tmp_path, capsys):
    """The issue's case: a 5-record array was 'invalid JSON' at line 1, or 26 lines dropped with --skip-invalid."""
    src = write(tmp_path / "alpaca_data.json", ALPACA, "array")
    alpaca.main([str(src), "-o", str(tmp_path / "o.jsonl")])
    assert "kept 5 of 5" in capsys.readouterr().err
    first = json.loads(lines(tmp_path / "o.jsonl")[0])["messages"]
    assert first == [{"role": "user", "content": "Say hello.\n\npolitely 0"},
                     {"role": "assistant", "content": "hello 😀 ?"}]


def test_array_errors_name_the_record_and_skip_counts_records(tmp_path, capsys):
    bad = [*ALPACA[:2], {"instruction": "x", "output": "   "}, *ALPACA[3:], 7]
    src = write(tmp_path / "a.json", bad, "array")
    with pytest.raises(SystemExit):
        alpaca.main([str(src), "-o", str(tmp_path / "o.jsonl")])
    assert capsys.readouterr().err.strip() == f"error: {src}:record 3: field 'output': is empty"
    alpaca.main([str(src), "-o", str(tmp_path / "o.jsonl"), "--skip-invalid"])
    err = capsys.readouterr().err
    assert "kept 4 of 6" in err and "dropped 1: empty output" in err and "dropped 1: not a JSON object" in err


@pytest.mark.parametrize("data, message", [
    (b'[{"instruction": "a", "output": "b"},\n {"instruction": "c", "out', "record 2: invalid JSON: parse error: "
                                                                           "premature EOF (the array is cut off)"),
    (b'[{"instruction": "a", "output": "b"}]\n{"instruction": "c", "output": "d"}\n',
     "invalid JSON: parse error: trailing garbage after the top-level value (after record 1)"),
    (b'[{"instruction": "a", "output": "\xff"}]', "record 1: invalid UTF-8 in a string"),
    (b'[{"instruction": "a", "output": "\\ud83d!"}]', "lone surrogate escape \\ud83d at byte 33"),
    (b"[]", "no records: the JSON array is empty"),
    (b'{\n  "instruction": "a",\n  "output": "b"\n}\n', "1: invalid JSON: Expecting property name enclosed in double "
                                                        "quotes (column 3); the file looks like one JSON document"),
    (b"just some text\n", "1: not a known format: expected JSONL (first character '{'), a JSON array ('['), "
                          "Parquet or CSV with a header row"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "1: not a known format"),
    (b"PAR1garbage", "invalid Parquet: "),
    (b"instruction,output\n", "no records: the CSV has a header row but no rows"),
    (b'instruction,output\n"a,b\n', "2: invalid CSV: a quoted field is never closed"),
])
def test_broken_files_give_one_clear_error(tmp_path, capsys, data, message):
    src = tmp_path / "in.data"
    src.write_bytes(data)
    for extra in ([], ["--skip-invalid"]):
        with pytest.raises(SystemExit):
            alpaca.main([str(src), "-o", str(tmp_path / "o.jsonl"), *extra])
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {src}") and message in err and "\n" not in err, err
        assert not (tmp_path / "o.jsonl").exists()


def test_mixed_formats_jsonl_then_array(tmp_path, capsys):
    src = tmp_path / "mixed.jsonl"
    src.write_text('{"instruction": "a", "output": "b"}\n[{"instruction": "c", "output": "d"}]\n')
    with pytest.raises(SystemExit):
        alpaca.main([str(src), "-o", str(tmp_path / "o.jsonl")])
    assert capsys.readouterr().err.strip() == f"error: {src}:2: expected a JSON object, got list"
    alpaca.main([str(src), "-o", str(tmp_path / "o.jsonl"), "--skip-invalid"])
    assert "kept 1 of 2" in capsys.readouterr().err


def test_read_jsonl_is_the_converters_reader(tmp_path):
    """common.io.read_jsonl (recipes, eval) reads as the converters do: a BOM accepted, errors name file:line."""
    src = tmp_path / "bom.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + json.dumps(ALPACA[0]).encode() + b"\n\n" + json.dumps(ALPACA[1]).encode() + b"\n")
    assert list(common.io.read_jsonl(src)) == [(1, ALPACA[0]), (3, ALPACA[1])]
    assert list(common.io.read_jsonl(src)) == list(_formats.read_records(src))
    for n, (line, message) in enumerate(((b'{"a": 1,}', "invalid JSON: Expecting property name enclosed in double "
                                          "quotes (column 9)"), (b"[1]", "expected a JSON object, got list"),
                                         (b'{"a": "\xff"}', "invalid UTF-8 at byte 7"))):
        bad = tmp_path / f"bad{n}.jsonl"
        bad.write_bytes(b'{"a": 1}\n' + line + b"\n")
        with pytest.raises(InputError) as info:
            list(common.io.read_jsonl(bad))
        assert str(info.value) == f"{bad}:2: {message}"


def test_csv_row_of_the_wrong_width_is_an_error_or_counted(tmp_path, capsys):
    src = tmp_path / "a.csv"
    src.write_text("instruction,output\nhi,hello\nx,y,z\nbye,ciao\n")
    with pytest.raises(InputError, match="invalid CSV: 3 fields, the header has 2") as info:
        list(_formats.read_records(src))
    assert info.value.line == 3
    alpaca.main([str(src), "-o", str(tmp_path / "o.jsonl"), "--skip-invalid"])
    assert "kept 2 of 3" in capsys.readouterr().err


def test_filter_and_stats_read_arrays_and_parquet(tmp_path):
    records = [{"messages": [{"role": "user", "content": f"question {i} " * 5},
                             {"role": "assistant", "content": f"answer {i} " * 5}]} for i in range(5)]
    for fmt in ("array", "parquet"):
        src = write(tmp_path / f"m.{fmt}", records, fmt)
        tally = quality.filter_file(src, tmp_path / f"{fmt}.jsonl", quality.Filters(near_dup_threshold=0))
        assert tally.kept == 5 and [json.loads(x) for x in lines(tmp_path / f"{fmt}.jsonl")] == records
        summary, lengths = stats.measure(src, lambda messages: sum(len(m["content"]) for m in messages), 64)
        assert summary["count"] == 5 and summary["over_sequence_len_lines"][0] == "record 1"


def test_a_big_array_is_converted_in_constant_memory(tmp_path, monkeypatch):
    """10k and 40k records (about 1 and 4.5 MiB): the peak Python memory of the conversion is the same at both
    sizes and far below the file. Reads of 64 KiB (1 MiB by default) and output batches of 100 records keep
    the plateau low enough to see at these sizes; scripts.bench.data_tools shows it at 1M records."""
    monkeypatch.setattr(common.io, "WRITE_BATCH", 100)
    monkeypatch.setattr(_formats, "READ_BYTES", 1 << 16)
    peaks = []
    for n in (10_000, 40_000):
        src = write(tmp_path / f"{n}.json", [dict(ALPACA[i % 5], instruction=f"task {i}") for i in range(n)],
                    "array")
        tracemalloc.start()
        try:
            tally = convert_records(src, tmp_path / f"{n}.jsonl", lambda r, f, w: alpaca.to_messages(r, None, f, w))
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert tally.kept == n
    size = src.stat().st_size
    assert peaks[1] < 1.15 * peaks[0] and peaks[1] < size / 5, (peaks, size)


def test_help_names_the_formats():
    for module in ("alpaca", "sharegpt", "qa", "rpg", "filter"):
        out = subprocess.run([sys.executable, "-m", f"data_tools.{module}", "--help"], cwd=ROOT,
                             capture_output=True, text=True).stdout
        assert "JSON array" in out and "Parquet" in out, module
