"""Small shared module: paths, offline defaults, errors, atomic I/O."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("RECIPES_CACHE", ROOT / ".cache"))
MODELS = CACHE / "models"

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "AXOLOTL_DO_NOT_TRACK": "1",
    "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
}


def offline_defaults() -> None:
    """Offline, no telemetry, W&B off; a value the user already set wins."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
