"""Quiet by default: library messages that say nothing to a user of these recipes on CPU are filtered
where they are emitted (exact messages, by logger or warning category). RECIPES_VERBOSE=1 (the
--verbose flag of the CLIs sets it) shows everything."""
import logging
import os
import re
import warnings

VERBOSE_ENV = "RECIPES_VERBOSE"

# (logger, message pattern): dropped where the logger emits them
NOISE_LOGS = (
    ("torchao", r"Failed to load .*_C_(mxfp8|cutlass_90a)"),  # its CUDA-only kernels
    ("torch.utils._pytree", r"is an Enum subclass and is now natively supported by torch.compile"),
    ("bitsandbytes.backends.cpu.ops", r"Failed to load CPU gemm_4bit_forward from kernels-community"),
    ("axolotl.utils.data.sft", r"Processing datasets during training can lead to VRAM instability"),
)
# (message pattern, category): Python warnings ignored
NOISE_WARNINGS = (
    (r"Skipping publisher trust check for 'kernels-community/", UserWarning),  # bitsandbytes, offline
    (r"'pin_memory' argument is set as true but no accelerator is found", UserWarning),
)


def verbose():
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def set_verbose(on):
    """--verbose: this process and every child it starts show everything."""
    if on:
        os.environ[VERBOSE_ENV] = "1"


class DropMessages(logging.Filter):
    def __init__(self, *patterns):
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record):
        return not self.pattern.search(record.getMessage())


def quiet():
    """Install the noise filters in this process (before the libraries are imported); no-op if verbose."""
    if verbose():
        return
    for name in sorted({name for name, _ in NOISE_LOGS}):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(*(p for n, p in NOISE_LOGS if n == name)))
    for pattern, category in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
