"""A training run as one recipe says it: the YAML read once (with the line of every key), and the paths
and settings each stage derives from it.

  run = Run.load("recipes/tinyllama-qa/qlora-1.1b.yml")
  run.adapter_dir   # outputs/tinyllama-qa/qlora-1.1b/adapter  (the recipe's output_dir)
  run.merged_dir    # outputs/tinyllama-qa/qlora-1.1b/merged
  run.gguf_path("q8_0")  # outputs/tinyllama-qa/qlora-1.1b/model-q8_0.gguf

Relative paths in a recipe are relative to the repo root (Axolotl runs from there). Settings Axolotl's
schema has no key for (system prompt, sampling, stop strings) come from a deploy section beside the
YAML: <stem>.deploy.json, else deploy.json in the recipe's folder.
"""
from dataclasses import dataclass, field
from pathlib import Path

from common import ROOT
from common.errors import InputError
from common.io import read_json, read_jsonl, read_text


def key_lines(text):
    """Dotted key path -> 1-based line, for top-level keys and one level below (datasets[0].type)."""
    import yaml

    lines = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if not isinstance(root, yaml.MappingNode):
        return lines
    for key_node, value in root.value:
        key = key_node.value
        lines[key] = key_node.start_mark.line + 1
        if isinstance(value, yaml.MappingNode):
            for sub_key, _ in value.value:
                lines[f"{key}.{sub_key.value}"] = sub_key.start_mark.line + 1
        elif isinstance(value, yaml.SequenceNode):
            for i, item in enumerate(value.value):
                lines[f"{key}[{i}]"] = item.start_mark.line + 1
                if isinstance(item, yaml.MappingNode):
                    for sub_key, sub_value in item.value:
                        lines[f"{key}[{i}].{sub_key.value}"] = sub_key.start_mark.line + 1
                        if isinstance(sub_value, yaml.MappingNode):
                            for leaf, _ in sub_value.value:
                                lines[f"{key}[{i}].{sub_key.value}.{leaf.value}"] = leaf.start_mark.line + 1
    return lines


def line_of(lines, key):
    """Line of a key in key_lines' map, else of its closest parent (datasets[0].roles -> datasets[0])."""
    probe = key
    while probe:
        if probe in lines:
            return lines[probe]
        probe = probe.rpartition(".")[0] or (probe.rpartition("[")[0] if "[" in probe else "")
    return None


def parse_yaml(text, path):
    """yaml.safe_load of a file's text; invalid YAML raises InputError naming the file and line."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise InputError(f"invalid YAML: {getattr(err, 'problem', None) or err}", path,
                         mark.line + 1 if mark else None) from None


def repo_path(value):
    """A recipe path value as a path: relative ones are relative to the repo root."""
    path = Path(str(value))
    return path if path.is_absolute() else ROOT / path


@dataclass
class Run:
    path: Path                 # the recipe YAML
    text: str                  # its text
    cfg: object                # the parsed YAML (a dict for any usable recipe)
    lines: dict = field(default_factory=dict)  # key path -> line (key_lines)
    cpu: bool = False          # the CPU run of scripts.cpu_run (stand-in base, outputs/cpu_runs/...)

    # ---------------------------------------------------------------- reading

    @classmethod
    def read(cls, path, cpu=False):
        """The recipe file parsed, whatever its top level is (checkers report that themselves)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such recipe")
        text = read_text(path)
        return cls(path, text, parse_yaml(text, path), key_lines(text), cpu)

    @classmethod
    def load(cls, path, cpu=False, need_base_model=True):
        """A recipe that is a mapping (with a base_model); errors name the file (and line)."""
        run = cls.read(path, cpu)
        if not isinstance(run.cfg, dict):
            if run.cfg is None:
                raise InputError("the file is empty", run.path)
            raise InputError(f"expected a YAML mapping, got {type(run.cfg).__name__}", run.path)
        if need_base_model and "base_model" not in run.cfg:
            raise InputError("missing", run.path, field="base_model")
        return run

    def line(self, key):
        return line_of(self.lines, key)

    def error(self, key, message):
        """An InputError naming the recipe, the key's line and the key."""
        return InputError(message, self.path, self.line(key), key)

    # ---------------------------------------------------------------- names

    @property
    def name(self):
        """The use case: the recipe's folder name (tinyllama-qa); Ollama and vLLM serve it by this name."""
        return self.path.resolve().parent.name

    @property
    def base_model(self):
        """base_model as the recipe writes it: a hub id or a local directory."""
        value = self.cfg.get("base_model")
        if not isinstance(value, str):
            raise self.error("base_model", f"expected a model id or path, got {type(value).__name__}")
        return value

    def base_dir(self):
        """A local directory with the base model's weights: the recipe's own directory, the CPU stand-in
        (common.models), or the hub id's snapshot in the Hugging Face cache."""
        from common.models import stand_in_for

        for candidate in (ROOT / self.base_model, Path(self.base_model)):
            if candidate.is_dir():
                return candidate
        stand_in = stand_in_for(self.base_model)
        if self.cpu:
            if stand_in is None or not stand_in.is_dir():
                raise self.error("base_model", f"no local stand-in for {self.base_model!r} (see common/models.py)")
            return stand_in
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(self.base_model, local_files_only=True))
        except Exception:  # not downloaded, or not a hub id
            raise self.error("base_model", f"{self.base_model!r} is not a local directory nor in the Hugging Face "
                             "cache: download it (hf download ID) or pass --base DIR") from None

    # ---------------------------------------------------------------- paths

    @property
    def adapter_dir(self):
        """Where training writes the adapter: the recipe's output_dir (CPU: scripts.cpu_run's default)."""
        if self.cpu:
            return ROOT / "outputs" / "cpu_runs" / self.name / self.path.stem
        value = self.cfg.get("output_dir")
        if not isinstance(value, str):
            raise self.error("output_dir", "missing (the adapter's folder)" if value is None
                             else f"expected a path, got {type(value).__name__}")
        return repo_path(value)

    @property
    def run_dir(self):
        """The folder of the run's outputs: the adapter dir's parent when it is named adapter."""
        adapter = self.adapter_dir
        return adapter.parent if adapter.name == "adapter" else adapter

    @property
    def merged_dir(self):
        return self.run_dir / "merged"

    def gguf_path(self, outtype="f16"):
        return self.run_dir / f"model-{outtype}.gguf"

    @property
    def modelfile(self):
        return self.run_dir / "Modelfile"

    @property
    def eval_dir(self):
        return self.run_dir / "eval"

    def data_paths(self, key="datasets"):
        """(index, path value, resolved path) of each local file in datasets (or test_datasets)."""
        items = self.cfg.get(key) or []
        return [(i, ds["path"], repo_path(ds["path"])) for i, ds in enumerate(items if isinstance(items, list) else [])
                if isinstance(ds, dict) and isinstance(ds.get("path"), str) and repo_path(ds["path"]).is_file()]

    # ---------------------------------------------------------------- chat settings

    @property
    def chat_template(self):
        """{chat_template, chat_template_jinja} Axolotl uses: the first dataset's when it sets one, else the
        config's (as Axolotl's extract_chat_template_args)."""
        datasets = self.cfg.get("datasets") or [{}]
        first = datasets[0] if isinstance(datasets, list) and datasets and isinstance(datasets[0], dict) else {}
        source = first if first.get("chat_template") else self.cfg
        return {key: source.get(key) for key in ("chat_template", "chat_template_jinja")}

    def deploy_file(self):
        """The deploy section beside the YAML: <stem>.deploy.json, else deploy.json; None if neither."""
        for candidate in (self.path.with_name(f"{self.path.stem}.deploy.json"), self.path.with_name("deploy.json")):
            if candidate.is_file():
                return candidate
        return None

    def deploy(self):
        """The deploy section's settings ({} without one): system, stop, temperature, top_p, ..."""
        path = self.deploy_file()
        return read_json(path) if path else {}

    def system_prompt(self):
        """The system prompt to serve with: the deploy section's, else the first system message of the
        first training file (what the model was trained with), else None."""
        settings = self.deploy()
        if "system" in settings:
            if not isinstance(settings["system"], str):
                raise InputError("expected a string", self.deploy_file(), field="system")
            return settings["system"]
        for _, _, path in self.data_paths():
            if path.suffix != ".jsonl":
                continue
            for _, record in read_jsonl(path):
                messages = record.get("messages") or record.get("conversations")
                if isinstance(messages, list) and messages and isinstance(messages[0], dict):
                    first = messages[0]
                    if first.get("role", first.get("from")) == "system":
                        return first.get("content", first.get("value"))
                return None
        return None

    def stop_strings(self):
        stop = self.deploy().get("stop", [])
        return [stop] if isinstance(stop, str) else list(stop)
