"""Blind A/B comparison of two models' replies, rated by people (or an LLM judge).

  make-sheet  Pair two batch reports (eval.batch output for the same prompts), or generate them from
              two models and a prompt file, then write a shuffled, anonymised rater sheet:
              DIR/sheet.csv and DIR/sheet.html (raters fill one of them; the page downloads a filled
              CSV), and DIR/key.private.json, which maps each row to the model shown as A and as B
              (seeded shuffle). Give raters only the sheet.
  score       Read filled sheets back with the key and unblind them: per-model win rate (ties
              counted separately) and mean rubric scores. Writes DIR/ab_scores.json and .md.
  judge       Fill a sheet by asking a model behind any OpenAI-compatible endpoint (base URL, model
              name and the API key from an environment variable).

Rubric, 1-5 each for A and for B: character voice, stays in character, coherence, engagement,
length (5 = just right); then a preference A, B or tie.

  python -m eval.ab make-sheet --a tuned.jsonl --b base.jsonl --name-a tuned --name-b base --out ab/
  python -m eval.ab score --key ab/key.private.json rater1.csv rater2.csv --out ab/scores
  python -m eval.ab judge --sheet ab/sheet.csv --out ab/judge.csv --base-url http://localhost:8000/v1 --model m
"""
import argparse
import csv
import html
import io
import json
import os
import random
import re
import sys
from pathlib import Path

from common.errors import InputError, cli
from common.io import atomic_open, check_output, read_json, read_jsonl
from eval import _models, report
from eval.metrics import mean

RUBRIC = {
    "voice": "Character voice: sounds like the character (diction, tone, quirks)",
    "in_character": "Stays in character: never breaks role or talks as an AI",
    "coherence": "Coherence: makes sense and answers what was said",
    "engagement": "Engagement: interesting, invites the conversation to go on",
    "length": "Length: 5 = just right, 1 = far too short or too long",
}
PREFERENCES = ("A", "B", "tie")
SHEET_COLUMNS = (["row_id", "prompt", "response_A", "response_B"]
                 + [f"{c}_{side}" for c in RUBRIC for side in "AB"] + ["preference", "notes"])
KEY_VERSION = 1


# ---------------------------------------------------------------- make-sheet

def prompt_text(messages):
    """A conversation as plain text for raters."""
    return "\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages)


def read_report(path):
    """[(line, record)] of a batch report; each needs prompt (messages) and output."""
    lines = []
    for line, record in read_jsonl(path):
        if not isinstance(record.get("prompt"), list) or not isinstance(record.get("output"), str):
            raise InputError("expected a batch report line with 'prompt' (messages) and 'output'", path, line)
        lines.append((line, record))
    if not lines:
        raise InputError("empty report", path)
    return lines


def report_name(lines):
    settings = lines[0][1].get("settings") or {}
    name = settings.get("model") or "?"
    return f"{name} + {settings['adapter']}" if settings.get("adapter") else name


def pair_reports(a_lines, b_lines, a_path="A", b_path="B"):
    """[(prompt, output_a, output_b)]; the reports must hold the same prompts in the same order."""
    if len(a_lines) != len(b_lines):
        raise InputError(f"{a_path} has {len(a_lines)} lines but {b_path} has {len(b_lines)}; "
                         "run both models on the same prompt file")
    pairs = []
    for (la, ra), (lb, rb) in zip(a_lines, b_lines):
        if ra["prompt"] != rb["prompt"]:
            raise InputError(f"prompt differs from {b_path} line {lb}", a_path, la, "prompt")
        pairs.append((ra["prompt"], ra["output"], rb["output"]))
    return pairs


def build_sheet(pairs, name_a, name_b, seed=0):
    """(sheet rows, key): rows shuffled and each row's sides randomly swapped, both from `seed`."""
    if name_a == name_b:
        raise InputError(f"both models are named '{name_a}'; give --name-a and --name-b")
    rng = random.Random(seed)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    rows, key_rows = [], {}
    width = max(3, len(str(len(pairs))))
    for n, index in enumerate(order, 1):
        prompt, out_a, out_b = pairs[index]
        swap = rng.random() < 0.5
        row_id = f"r{n:0{width}d}"
        shown = [(name_b, out_b), (name_a, out_a)] if swap else [(name_a, out_a), (name_b, out_b)]
        row = dict.fromkeys(SHEET_COLUMNS, "")
        row.update(row_id=row_id, prompt=prompt_text(prompt), response_A=shown[0][1], response_B=shown[1][1])
        rows.append(row)
        key_rows[row_id] = {"A": shown[0][0], "B": shown[1][0], "source_index": index}
    key = {"version": KEY_VERSION, "seed": seed, "models": [name_a, name_b], "rubric": list(RUBRIC),
           "rows": key_rows}
    return rows, key


def sheet_csv(rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SHEET_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


_PAGE_SCRIPT = """
function csvCell(v) { v = String(v == null ? "" : v); return /[",\\n\\r]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }
function download() {
  var lines = [COLUMNS.map(csvCell).join(",")];
  document.querySelectorAll("section.row").forEach(function (sec) {
    var values = COLUMNS.map(function (c) {
      var el = sec.querySelector('[data-col="' + c + '"]');
      if (!el) return "";
      if (el.dataset.kind === "text") return el.textContent;
      if (el.dataset.kind === "radio") { var r = el.querySelector("input:checked"); return r ? r.value : ""; }
      return el.value;
    });
    lines.push(values.map(csvCell).join(","));
  });
  var blob = new Blob([lines.join("\\n") + "\\n"], {type: "text/csv"});
  var a = document.createElement("a");
  a.href = URL.createObjectURL(blob); a.download = "sheet-filled.csv"; a.click();
}
function rowRated(sec) {
  var blank = Array.prototype.some.call(sec.querySelectorAll("select"), function (s) { return !s.value; });
  return !blank && sec.querySelector("[data-kind=radio] input:checked") !== null;
}
function update() {
  var rows = document.querySelectorAll("section.row"), left = 0;
  rows.forEach(function (sec) { var done = rowRated(sec); sec.classList.toggle("unrated", !done); left += done ? 0 : 1; });
  document.getElementById("remaining").textContent = left
    ? left + " of " + rows.length + " rows still unrated" : "all " + rows.length + " rows rated";
}
document.addEventListener("change", update);
update();
"""


def sheet_html(rows, title="Blind A/B rating sheet"):
    """A static, offline page: every row with both replies, 1-5 selects per criterion, a preference, the
    count of rows still unrated, and a button that downloads the filled sheet as CSV (same columns as
    sheet.csv, for `score`). Usable with the keyboard only."""
    e = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>",
           "body{font-family:sans-serif;max-width:70em;margin:auto;padding:1em}"
           "section.row{border:1px solid #ccc;border-radius:6px;padding:1em;margin:1em 0}"
           ".prompt,.resp{white-space:pre-wrap;background:#f6f6f6;padding:.5em;border-radius:4px}"
           ".pair{display:grid;grid-template-columns:1fr 1fr;gap:1em}table{border-collapse:collapse}"
           "td,th{padding:2px 8px;text-align:left}section.row.unrated h2::after{content:' (unrated)';color:#a00}"
           "footer{position:sticky;bottom:0;background:#fff;border-top:1px solid #ccc;padding:.5em 0}"
           ":focus{outline:3px solid #06c;outline-offset:1px}",
           "</style></head><body>", f"<h1>{e(title)}</h1>",
           "<p>Rate each reply 1-5 on every criterion and say which one you prefer. The replies are shown "
           "in random order; A and B are not the same model on every row. When done, press "
           "<b>Download filled CSV</b> at the bottom and send that file back. Keyboard: Tab moves on, "
           "a digit picks a rating, arrow keys pick the preference, Enter on the button downloads.</p><ul>"]
    out += [f"<li>{e(desc)}</li>" for desc in RUBRIC.values()] + ["</ul>"]
    options = "<option value=''>–</option>" + "".join(f"<option>{v}</option>" for v in range(1, 6))
    for row in rows:
        rid = e(row["row_id"])
        out.append(f"<section class='row'><h2 data-col='row_id' data-kind='text'>{rid}</h2>")
        out.append(f"<div class='prompt' data-col='prompt' data-kind='text'>{e(row['prompt'])}</div><div class='pair'>")
        for side in "AB":
            out.append(f"<div><h3>Reply {side}</h3><div class='resp' data-col='response_{side}' data-kind='text'>"
                       f"{e(row['response_' + side])}</div></div>")
        out.append("</div><table><tr><th>criterion</th><th>A</th><th>B</th></tr>")
        for crit, desc in RUBRIC.items():
            cells = "".join(f"<td><select data-col='{crit}_{side}' aria-label='{rid} {e(desc.split(':')[0])} "
                            f"{side}'>{options}</select></td>" for side in "AB")
            out.append(f"<tr><td title='{e(desc)}'>{e(desc.split(':')[0])}</td>{cells}</tr>")
        radios = "".join(f"<label><input type='radio' name='pref-{rid}' value='{p}'> {p}</label> "
                         for p in PREFERENCES)
        out.append(f"</table><p>Preference: <span data-col='preference' data-kind='radio' role='radiogroup' aria-label='{rid} preference'>{radios}</span></p>")
        out.append(f"<p><label>Notes: <input data-col='notes' size='80' aria-label='{rid} notes'></label></p></section>")
    out.append("<footer><span id='remaining' role='status' aria-live='polite'></span> "
               "<button type='button' onclick='download()'>Download filled CSV</button></footer>")
    out.append(f"<script>var COLUMNS = {json.dumps(SHEET_COLUMNS)};{_PAGE_SCRIPT}</script></body></html>")
    return "\n".join(out) + "\n"


def generate_reports(args):
    """Run both models over the prompt file (eval.batch) and return their report lines."""
    from eval import batch

    items = batch.read_prompts(args.prompts, args.limit, args.system)
    reports = []
    for side in "ab":
        model = _models.resolve_model(getattr(args, f"model_{side}"), getattr(args, f"adapter_{side}"), args.base_url)
        adapter = getattr(args, f"adapter_{side}")
        gen = _models.open_generator(model, adapter, args.allow_pickle, args.device, args.batch_size,
                                     base_url=args.base_url)
        settings = {"model": str(model), "adapter": adapter, "backend": gen.kind, "temperature": args.temperature,
                    "top_p": args.top_p, "seed": args.seed, "max_new_tokens": args.max_new_tokens,
                    "system": args.system, "prompts": args.prompts}
        lines = batch.run(gen, items, settings, _models.stderr_progress(f"make-sheet {side.upper()}"))
        reports.append([(n + 1, line) for n, line in enumerate(lines)])
        del gen
    return reports


def make_sheet(args):
    names = ["sheet.csv", "sheet.html", "key.private.json"]
    report.check_outputs(args.out, names, args.force)
    if args.a or args.b:
        if not (args.a and args.b) or args.prompts:
            raise InputError("give --a and --b (two batch reports), or --prompts with --model-a and --model-b")
        a_lines, b_lines = read_report(args.a), read_report(args.b)
        a_src, b_src = args.a, args.b
    else:
        if not args.prompts or not (args.model_a or args.adapter_a) or not (args.model_b or args.adapter_b):
            raise InputError("give --a and --b (two batch reports), or --prompts with --model-a and --model-b")
        a_lines, b_lines = generate_reports(args)
        a_src = b_src = args.prompts
    name_a = args.name_a or report_name(a_lines)
    name_b = args.name_b or report_name(b_lines)
    rows, key = build_sheet(pair_reports(a_lines, b_lines, a_src, b_src), name_a, name_b, args.seed)
    key["sources"] = {name_a: str(a_src), name_b: str(b_src)}
    report.write_outputs(args.out, {"sheet.csv": sheet_csv(rows), "sheet.html": sheet_html(rows),
                                    "key.private.json": report.dumps(key)}, args.force)
    print(f"make-sheet: {len(rows)} rows -> {args.out}/sheet.csv and sheet.html; "
          f"the key ({args.out}/key.private.json) is not for raters")
    return key


# ---------------------------------------------------------------- score

def read_key(path):
    path = Path(path)
    key = read_json(path)
    if key.get("version") != KEY_VERSION or not isinstance(key.get("rows"), dict):
        raise InputError("not an A/B key file written by `make-sheet`", path)
    return key


def _preference(value, file, line):
    value = (value or "").strip()
    for p in PREFERENCES:
        if value.casefold() == p.casefold():
            return p
    if value:
        raise InputError(f"'{value}' is not one of A, B, tie", file, line, "preference")
    return None


def _rating(value, file, line, field):
    value = (value or "").strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is None or not 1 <= number <= 5:
        raise InputError(f"'{value}' is not a rating from 1 to 5", file, line, field)
    return number


def read_sheet(path, key):
    """[(line, row_id, preference, {criterion_side: rating})] from a filled sheet."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"row_id", "preference"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"missing column(s) {sorted(missing)}; is this a sheet from make-sheet?", path, 1)
        out = []
        for row in reader:
            line = reader.line_num
            row_id = (row.get("row_id") or "").strip()
            if row_id not in key["rows"]:
                raise InputError(f"row '{row_id}' is not in the key (a sheet from another make-sheet run?)",
                                 path, line, "row_id")
            ratings = {}
            for crit in RUBRIC:
                for side in "AB":
                    field = f"{crit}_{side}"
                    ratings[field] = _rating(row.get(field), path, line, field)
            out.append((line, row_id, _preference(row.get("preference"), path, line), ratings))
    return out


def unblind(key, sheets):
    """Per-model win/loss/tie counts, win rates and mean rubric scores from [(file, rows)]."""
    models = list(key["models"])
    stats = {m: {"wins": 0, "losses": 0, "ties": 0, "ratings": {c: [] for c in RUBRIC}} for m in models}
    rated = unrated = 0
    for _, rows in sheets:
        for _, row_id, pref, ratings in rows:
            sides = key["rows"][row_id]
            for side in "AB":
                for crit in RUBRIC:
                    value = ratings[f"{crit}_{side}"]
                    if value is not None:
                        stats[sides[side]]["ratings"][crit].append(value)
            if pref is None:
                unrated += 1
                continue
            rated += 1
            if pref == "tie":
                for side in "AB":
                    stats[sides[side]]["ties"] += 1
            else:
                loser = "B" if pref == "A" else "A"
                stats[sides[pref]]["wins"] += 1
                stats[sides[loser]]["losses"] += 1
    per_model = {}
    for m, s in stats.items():
        n = s["wins"] + s["losses"] + s["ties"]
        decided = s["wins"] + s["losses"]
        per_model[m] = {"comparisons": n, "wins": s["wins"], "losses": s["losses"], "ties": s["ties"],
                        "win_rate": s["wins"] / n if n else None,
                        "tie_rate": s["ties"] / n if n else None,
                        "win_rate_excluding_ties": s["wins"] / decided if decided else None,
                        "rubric_means": {c: mean(v) for c, v in s["ratings"].items()},
                        "rubric_counts": {c: len(v) for c, v in s["ratings"].items()}}
    return {"models": per_model, "rated": rated, "unrated": unrated}


def scores_markdown(result):
    rep = report.Report("Blind A/B comparison")
    rep.kv({"sheets": ", ".join(result["sheets"]), "rated comparisons": result["rated"],
            "rows without a preference": result["unrated"]})
    models = result["models"]
    rep.heading("Preference")
    rep.table(["model", "win rate", "tie rate", "win rate (excl. ties)", "wins", "losses", "ties"],
              [[m, s["win_rate"], s["tie_rate"], s["win_rate_excluding_ties"], s["wins"], s["losses"], s["ties"]]
               for m, s in models.items()])
    rep.heading("Rubric (mean, 1-5)")
    rep.table(["criterion"] + list(models), [[RUBRIC[c].split(":")[0]] + [s["rubric_means"][c] for s in models.values()]
                                            for c in RUBRIC])
    return rep.render()


def score(args):
    names = ["ab_scores.json", "ab_scores.md"]
    report.check_outputs(args.out, names, args.force)
    key = read_key(args.key)
    sheets = [(str(path), read_sheet(path, key)) for path in args.sheets]
    result = {"key": args.key, "sheets": [s for s, _ in sheets], **unblind(key, sheets)}
    md = scores_markdown(result)
    report.write_outputs(args.out, {names[0]: report.dumps(result), names[1]: md}, args.force)
    print(md, end="")
    return result


# ---------------------------------------------------------------- judge

JUDGE_SYSTEM = (
    "You are a strict, fair judge of role-play replies. You get a conversation and two candidate "
    "replies, A and B, written in character. Rate each reply from 1 (bad) to 5 (excellent) on:\n"
    + "\n".join(f"- {c}: {d}" for c, d in RUBRIC.items())
    + "\nThen say which reply you prefer: \"A\", \"B\" or \"tie\". Ignore the order of the replies. "
    "Answer with one JSON object only, like "
    '{"A": {"voice": 4, "in_character": 5, "coherence": 4, "engagement": 3, "length": 4}, '
    '"B": {"voice": 2, "in_character": 1, "coherence": 3, "engagement": 2, "length": 4}, '
    '"preference": "A", "reason": "one short sentence"}')


def judge_messages(row):
    user = (f"Conversation so far:\n{row['prompt']}\n\n--- Reply A ---\n{row['response_A']}\n\n"
            f"--- Reply B ---\n{row['response_B']}\n\nRate both replies as JSON.")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(text):
    """The judge's JSON verdict as sheet fields, or None when it cannot be read."""
    start = (text or "").find("{")
    if start < 0:
        return None
    try:
        data, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError:
        match = re.search(r"\{.*\}", text, re.S)
        try:
            data = json.loads(match.group(0)) if match else None
        except json.JSONDecodeError:
            return None
    if not isinstance(data, dict):
        return None
    pref = str(data.get("preference", "")).strip()
    pref = next((p for p in PREFERENCES if p.casefold() == pref.casefold()), None)
    if pref is None:
        return None
    fields = {"preference": pref, "notes": str(data.get("reason", ""))[:500]}
    for side in "AB":
        scores = data.get(side) if isinstance(data.get(side), dict) else {}
        for crit in RUBRIC:
            value = scores.get(crit)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and 1 <= value <= 5:
                fields[f"{crit}_{side}"] = str(int(round(value)))
    return fields


def judge(args):
    check_output(args.out, args.force)
    base_url = args.base_url or os.environ.get("OPENAI_BASE_URL")
    api_key = os.environ.get(args.api_key_env)
    if not api_key:
        print(f"judge: ${args.api_key_env} is not set; sending a placeholder key (fine for local servers)",
              file=sys.stderr)
        api_key = "not-needed"
    sheet = Path(args.sheet)
    if not sheet.exists():
        raise FileNotFoundError(f"{sheet}: no such file")
    with open(sheet, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "response_A" not in rows[0]:
        raise InputError("not a sheet written by make-sheet", sheet)
    from openai import OpenAI, OpenAIError

    client = OpenAI(base_url=base_url, api_key=api_key, timeout=args.timeout, max_retries=1)
    failed = 0
    for n, row in enumerate(rows[:args.limit] if args.limit else rows, 1):
        try:
            reply = client.chat.completions.create(model=args.model, messages=judge_messages(row),
                                                   temperature=args.temperature, max_tokens=args.max_tokens)
        except OpenAIError as err:
            raise InputError(f"judge endpoint {base_url or 'api.openai.com'}: {err}") from None
        verdict = parse_verdict(reply.choices[0].message.content or "")
        if verdict is None:
            failed += 1
            print(f"judge: row {row['row_id']}: no readable verdict; left blank", file=sys.stderr)
        else:
            row.update(verdict)
        print(f"judge: {n}/{len(rows)}", file=sys.stderr, flush=True)
    with atomic_open(args.out, args.force) as fh:
        writer = csv.DictWriter(fh, fieldnames=SHEET_COLUMNS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(f"judge: filled {len(rows) - failed} of {len(rows)} rows -> {args.out}")
    return {"rows": len(rows), "failed": failed}


# ---------------------------------------------------------------- CLI

@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m eval.ab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    mk = sub.add_parser("make-sheet", help="write a blind rater sheet and its private key")
    mk.add_argument("--a", help="batch report of model A (eval.batch)")
    mk.add_argument("--b", help="batch report of model B, same prompts")
    mk.add_argument("--prompts", help="or: a prompt file to run both models on")
    for side in "ab":
        mk.add_argument(f"--model-{side}", help=f"model {side.upper()}: HF directory or .gguf (with --base-url: "
                                               "a served model name)")
        mk.add_argument(f"--adapter-{side}", help=f"PEFT adapter of model {side.upper()}")
    mk.add_argument("--base-url", metavar="URL", help="generate through this OpenAI-compatible endpoint (vLLM, "
                    "llama.cpp's server): --model-a/--model-b are served names, e.g. two adapters")
    mk.add_argument("--name-a", help="name of model A in the key and scores (default: model + adapter)")
    mk.add_argument("--name-b", help="name of model B")
    mk.add_argument("--system", help="system prompt for every prompt (with --prompts)")
    mk.add_argument("--max-new-tokens", type=int, default=128)
    mk.add_argument("--temperature", type=float, default=0.0)
    mk.add_argument("--top-p", type=float, default=1.0)
    mk.add_argument("--limit", type=int)
    mk.add_argument("--batch-size", type=int, default=8)
    mk.add_argument("--device", default="auto")
    mk.add_argument("--allow-pickle", action="store_true", help="allow pickle weights (*.bin)")
    mk.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    mk.add_argument("--out", required=True, help="output directory")
    mk.add_argument("--force", action="store_true")

    sc = sub.add_parser("score", help="unblind filled sheets into win rates and rubric means")
    sc.add_argument("--key", required=True, help="key.private.json from make-sheet")
    sc.add_argument("sheets", nargs="+", help="filled sheet CSVs (one per rater)")
    sc.add_argument("--out", required=True, help="output directory for ab_scores.json and ab_scores.md")
    sc.add_argument("--force", action="store_true")

    jd = sub.add_parser("judge", help="fill a sheet with an LLM judge behind an OpenAI-compatible API")
    jd.add_argument("--sheet", required=True, help="sheet.csv from make-sheet")
    jd.add_argument("--out", required=True, help="filled sheet CSV to write")
    jd.add_argument("--model", required=True, help="judge model name at the endpoint")
    jd.add_argument("--base-url", help="endpoint, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL "
                                       "or OpenAI's)")
    jd.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    jd.add_argument("--temperature", type=float, default=0.0)
    jd.add_argument("--max-tokens", type=int, default=300)
    jd.add_argument("--timeout", type=float, default=120.0)
    jd.add_argument("--limit", type=int, help="judge only the first N rows")
    jd.add_argument("--force", action="store_true")

    args = parser.parse_args(argv)
    return {"make-sheet": make_sheet, "score": score, "judge": judge}[args.command](args)


if __name__ == "__main__":
    main()
