"""Axolotl 0.19's recipe schema, checked without loading a model or data: unknown keys (with the
closest known one) and values of the wrong type, each reported with the recipe's file, line and key."""
import copy
import difflib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from common import offline_defaults
from common.errors import InputError
from common.run import Run, line_of


@dataclass
class Report:
    recipe: Path
    errors: list = field(default_factory=list)     # InputError
    warnings: list = field(default_factory=list)   # InputError (printed as warnings)
    notes: list = field(default_factory=list)      # str: Axolotl's own warnings, informational
    steps: dict = None                             # scripts.check_recipes.optimizer_steps()
    steps_at_size: dict = None                     # the same for --records N records like the data

    @property
    def ok(self):
        return not self.errors


class Checker:
    """Collects errors/warnings for one recipe, naming its file, the key and the key's line."""

    def __init__(self, recipe, report, lines):
        self.recipe, self.report, self.lines = recipe, report, lines

    def _line(self, key):
        return line_of(self.lines, key)

    def error(self, key, message):
        self.report.errors.append(InputError(message, self.recipe, self._line(key), key))

    def warn(self, key, message):
        self.report.warnings.append(InputError(message, self.recipe, self._line(key), key))


def _field_names(model_cls):
    names = set()
    for name, info in model_cls.model_fields.items():
        names.add(name)
        if info.alias:
            names.add(info.alias)
        alias = info.validation_alias
        for choice in getattr(alias, "choices", None) or ([alias] if isinstance(alias, str) else []):
            if isinstance(choice, str):
                names.add(choice)
    return names


@lru_cache(maxsize=None)
def _schemas():
    offline_defaults()
    from axolotl.utils.schemas.config import AxolotlInputConfig
    from axolotl.utils.schemas.datasets import SFTDataset
    from axolotl.utils.schemas.fsdp import FSDPConfig
    from axolotl.utils.schemas.model import SpecialTokensConfig

    return {"": _field_names(AxolotlInputConfig), "datasets": _field_names(SFTDataset),
            "fsdp_config": _field_names(FSDPConfig), "special_tokens": _field_names(SpecialTokensConfig),
            "deprecated": {n: f.deprecated for n, f in AxolotlInputConfig.model_fields.items() if f.deprecated}}


@lru_cache(maxsize=None)
def _type_adapter(key):
    """A pydantic TypeAdapter for one top-level key of Axolotl's config schema (None if unknown)."""
    offline_defaults()
    from typing import Annotated

    from axolotl.utils.schemas.config import AxolotlInputConfig
    from pydantic import TypeAdapter

    for name, info in AxolotlInputConfig.model_fields.items():
        if key in (name, info.alias):
            annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
            try:
                return TypeAdapter(annotation)
            except Exception:  # an annotation pydantic cannot check on its own: leave it to Axolotl
                return None
    return None


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_types(check, cfg):
    """Each value has the type Axolotl's schema declares for its key, checked key by key (no model-level
    validators, no model or data loaded); datasets entries against Axolotl's SFTDataset."""
    for key, value in cfg.items():
        if key == "datasets" or value is None:
            continue
        adapter = _type_adapter(key)
        if adapter is None:
            continue
        try:
            adapter.validate_python(copy.deepcopy(value))  # Axolotl's validators edit dicts in place
        except Exception as err:
            message = validation_message(err)[0][1]
            check.error(key, f"wrong type: {message} (got {_short(value)})")
    datasets = cfg.get("datasets")
    if datasets is None:
        return
    if not isinstance(datasets, list):
        check.error("datasets", "expected a list of datasets (- path: ..., type: ...), "
                    f"got {type(datasets).__name__}")
        return
    from axolotl.utils.schemas.datasets import SFTDataset

    for i, ds in enumerate(datasets):
        if not isinstance(ds, dict):
            continue  # check_keys reports it
        try:
            SFTDataset(**ds)
        except Exception as err:
            for key, message in validation_message(err):
                check.error(f"datasets[{i}]" + (f".{key}" if key else ""), f"wrong type: {message}")


def key_and_type_errors(run):
    """Unknown keys (with the closest known one) and values of the wrong type, as InputErrors naming the
    file, line and key; loads no model and no data (scripts.cpu_run runs this before training).
    run: a common.run.Run (or a recipe path)."""
    run = run if isinstance(run, Run) else Run.read(run)
    report = Report(run.path)
    check = Checker(run.path, report, run.lines)
    check_keys(check, run.cfg)
    check_types(check, run.cfg)
    return report.errors


def _unknown(key, known, prefix_ok=None):
    return not (key in known or (prefix_ok and key.startswith(prefix_ok) and key[len(prefix_ok):] in known))


def check_keys(check, cfg):
    schemas = _schemas()
    if cfg.get("plugins"):
        check.warn("plugins", "plugins add their own keys: unknown-key check skipped")
        return
    for key in cfg:
        if _unknown(key, schemas[""]):
            hint = difflib.get_close_matches(key, schemas[""], n=1)
            check.error(key, "unknown Axolotl key" + (f"; did you mean '{hint[0]}'?" if hint else ""))
        elif key in schemas["deprecated"]:
            check.warn(key, f"deprecated in Axolotl 0.19: {schemas['deprecated'][key]}")
    datasets = cfg.get("datasets")
    for i, ds in enumerate(datasets if isinstance(datasets, list) else []):
        if not isinstance(ds, dict):
            check.error(f"datasets[{i}]", "expected a mapping (path, type, ...)")
            continue
        for key in ds:
            if _unknown(key, schemas["datasets"]):
                hint = difflib.get_close_matches(key, schemas["datasets"], n=1)
                check.error(f"datasets[{i}].{key}", "unknown dataset key"
                            + (f"; did you mean '{hint[0]}'?" if hint else ""))
    for section in ("fsdp_config", "special_tokens"):
        value = cfg.get(section)
        if isinstance(value, dict):
            for key in value:
                if _unknown(key, schemas[section], "fsdp_" if section == "fsdp_config" else None):
                    hint = difflib.get_close_matches(key, schemas[section], n=1)
                    check.error(f"{section}.{key}", f"unknown {section} key"
                                + (f"; did you mean '{hint[0]}'?" if hint else ""))


def validation_message(err):
    """Short text for a pydantic ValidationError (field, message) pairs, else str(err)."""
    try:
        items = err.errors()
    except AttributeError:
        return [(None, str(err).strip().splitlines()[-1] if str(err).strip() else repr(err))]
    out = []
    for item in items:
        loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in item.get("loc", ()))
        out.append((loc.replace(".[", "[") or None, item.get("msg", "invalid")))
    return out
