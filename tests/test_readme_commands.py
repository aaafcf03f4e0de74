"""Every command in the ```bash blocks of README.md and recipes/*/README.md, checked as a user pastes it.

`recipe ...` lines go through the CLI as they are (common.cli.main: its own parser, the Run the recipe
gives, the argv it hands the stage's module), and that argv is parsed by the module's own argparse
parser. The modules build their parser inside main() (no parser function to call), so main() runs with
ArgumentParser.parse_args wrapped: the real parse happens (a wrong flag, value or choice exits 2) and
then stops the module (Parsed) before it does any work. The CLI's own parser uses parse_known_args and
is not stopped.
  - run for real, here: cp (into tmp_path), convert (output into tmp_path, compared byte for byte with
    the shipped file the README names), memory;
  - parsed only: check (its recipes must exist; running it costs an Axolotl import and 1-5 s a recipe
    here, about a minute for the READMEs' 12, and tests/test_check_recipes.py already checks every
    shipped recipe, tests/test_cli.py the README's `recipe cp` copy), and what needs a GPU, a trained
    adapter, a server or the hub: train (GPU: the `accelerate launch -m axolotl.cli.train RECIPE`
    command is built, not run; --cpu: scripts.cpu_run's parser), merge, gguf, ollama, vllm, eval, hub.
    A hub base model that is not in the Hugging Face cache here resolves to a placeholder dir. A
    `# -> PATH` comment must be a path the command writes (or, for train, the adapter dir).
`python -m MODULE ...` lines (stages the CLI does not cover) are parsed by the module's parser the same
way; one of a stage the CLI covers fails (issue 14: every old command is replaced). `accelerate
launch` lines parse with accelerate's own launch parser, must need an accelerate option (else `recipe
train` is the command) and name existing files; `make` targets exist in the Makefile; `pip -r` files
exist (also a venv's `bin/pip`); `hf` lines parse with the Hub CLI's own parser; `python -m venv`
parses with the standard library's parser.
Shell variables set in a block (`X=...`) are expanded, globs are expanded from the repo root, `$(...)`
is refused (not checkable). A block runs in order, so `recipe cp ... my-qa` then `recipe check
my-qa/...` works on the copy.
"""
import argparse
import contextlib
import glob
import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from common import ROOT
from common import cli
from common.errors import InputError
from common.run import Run

READMES = [ROOT / "README.md"] + sorted((ROOT / "recipes").glob("*/README.md"))
FENCE = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
RUN_HERE = {"cp", "convert", "memory"}      # cheap and safe: run for real
# python -m modules of the stages `recipe` covers: their README commands must be `recipe ...`
COVERED = {"scripts.check_recipes", "scripts.memory", "scripts.cpu_run", "deploy.merge", "deploy.gguf",
           "deploy.ollama", "deploy.hub"} | {f"data_tools.{k}" for k in cli.CONVERTERS} \
    | {f"eval.{k}" for k in cli.EVALS}
COVERED_VLLM = {"check", "serve", "serve-command"}   # deploy.vllm chat/load/unload have no recipe
REPO_DIRS = ("recipes/", "scripts/", "deploy/", "eval/", "data_tools/", "common/", "tests/")


@dataclass
class Command:
    readme: Path
    line: int
    text: str             # the line as the README types it (continuations joined)
    words: list           # after variables and globs
    comment: str = ""
    env: dict = field(default_factory=dict)
    error: str = ""       # the line could not be read (an unset variable, `$(...)`, a glob matching nothing)

    def where(self):
        return f"{self.readme.relative_to(ROOT)}:{self.line}: {self.text}"


def split_line(line, variables):
    """(words, quoted flags, comment) of one command line as bash splits it: quotes removed, $NAME and
    ${NAME} expanded outside single quotes, a word starting with # starts the comment."""
    words, flags, cur, quoted, in_word, i = [], [], "", False, False, 0

    def dollar(i):
        match = re.compile(r"\$\{(\w+)\}|\$(\w+)").match(line, i)
        if line.startswith("$(", i) or not match:
            raise AssertionError("command substitution cannot be checked" if line.startswith("$(", i)
                                 else f"unsupported $ at column {i}")
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise AssertionError(f"${name} is not set in the block")
        return variables[name], match.end() - 1

    while i < len(line):
        c = line[i]
        if c in " \t":
            if in_word:
                words.append(cur), flags.append(quoted)
                cur, quoted, in_word = "", False, False
        elif c == "#" and not in_word:
            return words, flags, line[i + 1:].strip()
        elif c == "'":
            j = line.index("'", i + 1)
            cur, quoted, in_word, i = cur + line[i + 1:j], True, True, j
        elif c == '"':
            i, quoted, in_word = i + 1, True, True
            while line[i] != '"':
                if line[i] == "\\" and line[i + 1] in '"\\$`':
                    i += 1
                    cur += line[i]
                elif line[i] == "$":
                    value, i = dollar(i)
                    cur += value
                elif line[i] == "`":
                    raise AssertionError("command substitution cannot be checked")
                else:
                    cur += line[i]
                i += 1
        elif c == "\\":
            cur, quoted, in_word, i = cur + line[i + 1], True, True, i + 1
        elif c == "$":
            value, i = dollar(i)
            cur, in_word = cur + value, True
        elif c == "`":
            raise AssertionError("command substitution cannot be checked")
        else:
            cur, in_word = cur + c, True
        i += 1
    if in_word:
        words.append(cur), flags.append(quoted)
    return words, flags, ""


def _glob(word, quoted):
    if quoted or not any(c in word for c in "*?["):
        return [word]
    matches = sorted(Path(p).relative_to(ROOT).as_posix() for p in glob.glob(str(ROOT / word)))
    assert matches, f"{word} matches no file"
    return matches


def blocks(readme, text=None):
    """[(first line, [Command])] for each ```bash block of a README (or of `text`, named after it). A line
    that cannot be read becomes a Command whose error the test reports."""
    text = readme.read_text(encoding="utf-8") if text is None else text
    out = []
    for match in FENCE.finditer(text):
        first = text[:match.start()].count("\n") + 2
        variables, commands, pending, start = {"PWD": str(ROOT)}, [], "", None  # run from the repo root
        for i, raw in enumerate(match.group(1).splitlines()):
            if start is None:
                start = first + i
            if raw.endswith("\\"):
                pending += raw[:-1] + " "
                continue
            line, pending, lineno, start = pending + raw, "", start, None
            cmd = Command(readme, lineno, " ".join(line.split()), [])
            try:
                words, flags, cmd.comment = split_line(line, variables)
                while words and not flags[0] and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
                    key, value = words.pop(0).split("=", 1)
                    flags.pop(0)
                    cmd.env[key] = value
                if not words:
                    variables.update(cmd.env)
                    continue
                for word, quoted in zip(words, flags):
                    cmd.words += _glob(word, quoted)
            except AssertionError as err:
                cmd.error = str(err)
            commands.append(cmd)
        out.append((first, commands))
    return out


BLOCKS = [(readme, first, commands) for readme in READMES for first, commands in blocks(readme)]


def test_the_readmes_have_commands_to_check():
    recipe_lines = [c for _, _, cs in BLOCKS for c in cs if c.words[:1] == ["recipe"]]
    assert len(READMES) == 7 and len(recipe_lines) >= 60
    assert {c.words[1] for c in recipe_lines} >= {"cp", "check", "memory", "convert", "train", "merge", "gguf",
                                                   "ollama", "vllm", "eval", "hub"}


# ---------------------------------------------------------------- running the module's parser only

class Parsed(BaseException):
    """Raised in place of a module's work once its parser has accepted the arguments."""

    def __init__(self, prog, argv, namespace=None):
        super().__init__(prog)
        self.prog, self.argv, self.namespace = prog, [str(a) for a in argv], namespace


_REAL_PARSE_ARGS = argparse.ArgumentParser.parse_args


def _parse_then_stop(self, args=None, namespace=None):
    parsed = _REAL_PARSE_ARGS(self, args, namespace)
    raise Parsed(self.prog, args if args is not None else sys.argv[1:], parsed)


def _accelerate_stub(command, **_):
    raise Parsed("accelerate", command)


_REAL_BASE_DIR = Run.base_dir


def _base_dir_or_placeholder(self):
    """The base model's dir; a hub model not downloaded here (the GPU bases) gives a placeholder."""
    try:
        return _REAL_BASE_DIR(self)
    except InputError:
        if re.fullmatch(r"[\w-]+/[\w.-]+", self.base_model):
            return Path("/hub-cache-placeholder") / self.base_model
        raise


def _parse_only(call, monkeypatch):
    """call() (a CLI's main) as far as the module's parser only; returns Parsed (prog, argv, namespace)."""
    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", _parse_then_stop)
        m.setattr(Run, "base_dir", _base_dir_or_placeholder)
        m.setattr(cli, "subprocess", SimpleNamespace(run=_accelerate_stub))
        try:
            result = run_main(call)
        except Parsed as parsed:
            return parsed
    raise AssertionError(f"the module did not parse its arguments (returned {result!r})")


def run_main(call, out=None):
    """call(), its stdout (into `out` when given) and stderr captured; a SystemExit becomes an
    AssertionError that shows them."""
    out, err = out or io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return call()
    except SystemExit as exit_:
        if exit_.code in (0, None):
            return 0
        raise AssertionError(f"exit {exit_.code}\n{out.getvalue()}{err.getvalue()}") from None
    except Parsed:
        raise
    except Exception as exc:
        raise AssertionError(f"{type(exc).__name__}: {exc}\n{out.getvalue()}{err.getvalue()}") from exc


# ---------------------------------------------------------------- each kind of line

def _module_of(argv):
    """The module `recipe ARGV` hands its arguments to (the prog its parser must have)."""
    sub = argv[0]
    kind = next((a for a in argv[1:] if not a.startswith("-")), None)
    if sub == "convert":
        return f"data_tools.{kind}"
    if sub == "eval":
        return f"eval.{kind}"
    if sub == "train":
        return "scripts.cpu_run" if "--cpu" in argv else "accelerate"
    return cli.STAGES[sub][0]


def _check_recipe_line(cmd, copies, tmp_path, monkeypatch):
    argv = list(cmd.words[1:])
    sub = argv[0] if argv else None
    assert sub in cli._parser()._subparsers._group_actions[0].choices, f"no subcommand {sub!r}"
    # a recipe copied earlier in the block lives in tmp_path
    argv = [str(copies[a.split("/", 1)[0]] / a.split("/", 1)[1]) if "/" in a and a.split("/", 1)[0] in copies
            else a for a in argv]
    if sub == "cp":
        dest = argv[2]
        copies[dest] = tmp_path / dest
        argv[2] = str(copies[dest])
    shipped = None
    if sub == "convert":
        flag = next(f for f in ("-o", "--output") if f in argv)
        i = argv.index(flag) + 1
        shipped = ROOT / argv[i] if (ROOT / argv[i]).is_file() else None
        argv[i] = str(tmp_path / f"convert-{cmd.line}.jsonl")
    if sub in RUN_HERE:
        printed = io.StringIO()
        status = run_main(lambda: cli.main(argv), printed)
        assert status in (0, None), f"exit status {status}"
        assert "cannot run it" not in printed.getvalue(), f"sized for a card it cannot run on:\n{printed.getvalue()}"
        if shipped:
            assert Path(argv[i]).read_bytes() == shipped.read_bytes(), f"{shipped} differs from what this makes"
        return
    parsed = _parse_only(lambda: cli.main(argv), monkeypatch)
    module = _module_of(argv)
    assert parsed.prog == ("accelerate" if module == "accelerate" else f"python -m {module}"), parsed.prog
    _check_paths(argv)
    if sub == "check":
        assert parsed.namespace.recipes, "no recipe to check"
        for recipe in parsed.namespace.recipes:
            assert Path(recipe).is_file() and recipe.endswith(".yml"), f"{recipe}: no such recipe"
        return
    run = Run.load(next(a for a in argv[1:] if a.endswith((".yml", ".yaml"))), cpu="--cpu" in argv)
    written = {str(Path(a).resolve()) for a in parsed.argv if "/" in a}
    if module == "accelerate":
        exe, launch, m, module_name, recipe, *extra = parsed.argv
        assert Path(exe).is_file() and [launch, m, module_name] == ["launch", "-m", "axolotl.cli.train"]
        assert Path(recipe) == run.path.resolve()
        assert all(re.fullmatch(r"--\w+=\S+", a) for a in extra), f"not Axolotl overrides: {extra}"
        written = {str(run.adapter_dir)}
    if module == "scripts.cpu_run" and not parsed.namespace.output_dir:
        written.add(str(run.adapter_dir))
    arrow = re.search(r"-> (outputs/\S+)", cmd.comment)
    if arrow:
        assert str(ROOT / arrow.group(1)) in written, f"the comment says {arrow.group(1)}; the command writes " \
            f"none of {sorted(written)}"


def _check_python_line(cmd, monkeypatch):
    import importlib

    assert cmd.words[1] == "-m", "only `python -m MODULE` lines"
    module = cmd.words[2]
    verb = cmd.words[3] if len(cmd.words) > 3 else None
    assert module not in COVERED and not (module == "deploy.vllm" and verb in COVERED_VLLM), \
        f"`recipe` covers {module}: write the recipe command"
    main = importlib.import_module(module).main
    parsed = _parse_only(lambda: main(cmd.words[3:]), monkeypatch)
    if module == "venv":       # the standard library's: a new environment outside the repo's folders
        assert not any(d.startswith(REPO_DIRS) for d in parsed.namespace.dirs), parsed.namespace.dirs
        return
    assert parsed.prog == f"python -m {module}", parsed.prog
    _check_paths(cmd.words[3:])


def _check_paths(words):
    """The repo files (and files with a data or config suffix) a command names exist; outputs aside."""
    for i, word in enumerate(words):
        if i and words[i - 1] in ("-o", "--output", "--out"):
            continue
        value = word.split("=", 1)[1] if word.startswith("-") and "=" in word else word
        if value.startswith(REPO_DIRS) or re.search(r"\.(ya?ml|txt|json|jsonl|sh)$", value):
            assert (ROOT / value).exists(), f"{value}: no such file"


def _check_accelerate_line(cmd):
    from accelerate.commands.launch import launch_command_parser

    assert cmd.words[1] == "launch", "accelerate launch only"
    args = run_main(lambda: launch_command_parser().parse_args(cmd.words[2:]))
    assert args.module and args.training_script == "axolotl.cli.train", "accelerate launch -m axolotl.cli.train"
    options = cmd.words[2:cmd.words.index("-m")]
    assert options, "no accelerate option: the command is `recipe train RECIPE`"
    _check_paths(cmd.words[2:])


def _check_make_line(cmd):
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M))
    for word in cmd.words[1:]:
        if "=" not in word:
            assert word in targets, f"make {word}: no such target in the Makefile"


def _check_pip_line(cmd):
    assert cmd.words[1] == "install"
    for i, word in enumerate(cmd.words):
        if word in ("-r", "-e"):
            assert (ROOT / cmd.words[i + 1]).exists(), f"{cmd.words[i + 1]}: no such file"


def _check_hf_line(cmd):
    """The Hub CLI's own (click) parser takes the line: a wrong subcommand or option fails; nothing runs."""
    import click
    import typer.main
    from huggingface_hub.cli.hf import app

    group = typer.main.get_command(app)
    try:
        ctx = group.make_context("hf", cmd.words[1:])
        command = group
        while isinstance(command, click.Group):
            protected = getattr(ctx, "_protected_args", None) or ctx.protected_args   # click >= 8.2 / older
            name, command, rest = command.resolve_command(ctx, protected + ctx.args)
            ctx = command.make_context(name, rest, parent=ctx)
    except click.exceptions.ClickException as err:
        raise AssertionError(f"hf: {err.format_message().splitlines()[0]}") from None


OTHER = {"python": None, "make": _check_make_line, "accelerate": _check_accelerate_line, "pip": _check_pip_line,
         "hf": _check_hf_line}   # (huggingface-cli no longer works in huggingface_hub 1.x: unknown here)


@pytest.mark.parametrize("readme,first,commands", BLOCKS,
                         ids=[f"{r.relative_to(ROOT)}:{first}" for r, first, _ in BLOCKS])
def test_readme_block(readme, first, commands, tmp_path, monkeypatch):
    copies = {}
    for cmd in commands:
        problem = None
        try:
            assert not cmd.error, cmd.error
            program = cmd.words[0]
            if program == "recipe":
                _check_recipe_line(cmd, copies, tmp_path, monkeypatch)
            elif program == "python":
                _check_python_line(cmd, monkeypatch)
            else:
                known = "pip" if program.endswith("/bin/pip") else program     # a venv's own pip
                assert known in OTHER, f"{program}: a command this test does not know how to check"
                OTHER[known](cmd)
        except AssertionError as err:
            problem = str(err).split("\nassert ")[0]
        if problem:
            pytest.fail(f"{cmd.where()}\n  {problem}", pytrace=False)


BROKEN = [  # (a README line, what the failure must say)
    ("recipe memory recipes/tinyllama-qa/qlora-1.1b.yml --gpu-typo t4", "unrecognized arguments: --gpu-typo"),
    ("recipe merge recipes/tinyllama-qa/qlora-1.1bb.yml", "qlora-1.1bb.yml: no such recipe"),
    ("recipe check recipes/tinyllama-qa/qlora-1.1c.yml", "qlora-1.1c.yml: no such"),
    ("recipe gguf recipes/tinyllama-qa/qlora-1.1b.yml --outtype q9_9", "invalid choice: 'q9_9'"),
    ("recipe eval task recipes/tinyllama-qa/qlora-1.1b.yml --task qa --date x.jsonl", "unrecognized arguments: --date"),
    ("recipe vllm serv recipes/tinyllama-qa/qlora-1.1b.yml", "invalid choice: 'serv'"),
    ("recipe eval task recipes/tinyllama-qa/qlora-1.1b.yml --task qa --data recipes/tinyllama-qa/data/qa_heldout.json",
     "qa_heldout.json: no such file"),
    ("recipe train recipes/tinyllama-qa/qlora-1.1b.yml   # -> outputs/tinyllama-qa/lora-1.1b/adapter",
     "the comment says outputs/tinyllama-qa/lora-1.1b/adapter"),
    ("recipe convert qa recipes/tinyllama-qa/data/qa_val.jsonl -o recipes/tinyllama-qa/data/train.messages.jsonl",
     "train.messages.jsonl differs"),
    ("recipe eval chat $RUN/lora.yml", "$RUN is not set"),
    ("recipe train recipes/no-such-folder/*.yml", "matches no file"),
    ("python -m deploy.merge --base B --adapter A -o M", "`recipe` covers deploy.merge"),
    ("python -m deploy.vllm serve-command --base B", "`recipe` covers deploy.vllm"),
    ("python -m scripts.results --onlyy rpg", "unrecognized arguments: --onlyy"),
    ("accelerate launch -m axolotl.cli.train recipes/tinyllama-qa/qlora-1.1b.yml", "the command is `recipe train"),
    ("accelerate launch --num_processes 4 -m axolotl.cli.train recipes/tinyllama-qa/qlora-9b.yml",
     "qlora-9b.yml: no such file"),
    ("accelerate launch --num_processe 4 -m axolotl.cli.train recipes/tinyllama-qa/qlora-1.1b.yml",
     "unrecognized arguments: --num_processe"),
    ("make quickstrat", "no such target"),
    ("pip install -r requirements-cpu.txt", "requirements-cpu.txt: no such file"),
    ("vllm serve x", "vllm: a command this test does not know"),
    (".venv-vllm/bin/pip install -r requirements-vllm-cuda.txt", "requirements-vllm-cuda.txt: no such file"),
    ("python -m venv --clearr .venv-vllm", "unrecognized arguments: --clearr"),
    ("huggingface-cli login", "huggingface-cli: a command this test does not know"),
    ("hf dowload TinyLlama/TinyLlama-1.1B-Chat-v1.0", "hf: No such command 'dowload'"),
    ("hf download TinyLlama/TinyLlama-1.1B-Chat-v1.0 --local-dri x", "hf: No such option"),
]


@pytest.mark.parametrize("line,message", BROKEN, ids=[line.split(" #")[0] for line, _ in BROKEN])
def test_a_broken_command_fails(line, message, tmp_path, monkeypatch):
    """A typo'd flag or value, a wrong recipe path or subcommand, a wrong `# ->` path, an old command of
    a stage `recipe` covers, an accelerate line `recipe train` replaces: each fails, saying why."""
    (_, commands), = blocks(ROOT / "README.md", f"```bash\n{line}\n```\n")
    with pytest.raises(pytest.fail.Exception) as failed:
        test_readme_block(ROOT / "README.md", 1, commands, tmp_path, monkeypatch)
    assert message in str(failed.value)
