"""Per-step measurements of an Axolotl run, for scripts.gpu_check: an Axolotl plugin whose callback
writes one JSON line per optimizer step to <output_dir>/step_metrics.jsonl (rank 0):

  seconds      wall time of the step (CUDA synchronized at both ends)
  tokens       real tokens the model was fed in the step, over all micro batches: attention_mask != 0, or
               under sample packing (Axolotl drops the mask, position_ids restart at each sample) the
               positions outside the collator's padding, a segment of pad tokens with its own positions
  slots        token positions fed (input_ids.numel()): tokens / slots is the packing efficiency
  rows         sequences (rows of input_ids) fed
  peak_allocated_gib / peak_reserved_gib   torch.cuda's peaks since training began (GPU only)
  device_used_gib   total - free memory of the device at the step's end, what nvidia-smi shows
  rss_gib      peak resident memory of the process (CPU runs)
  trainer_tokens_seen   the Trainer's own count of token positions so far (include_tokens_per_second)
"""
import json
import resource
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

try:
    from axolotl.integrations.base import BasePlugin
except ImportError:  # scripts.gpu_check --engine peft, on a machine without Axolotl, uses Recorder alone
    BasePlugin = object

GIB = 1024 ** 3
FILE = "step_metrics.jsonl"


class Recorder:
    """Counts what the model is fed (a forward pre-hook) and writes a row per optimizer step."""

    def __init__(self, path, pad_token_id=None):
        self.path = Path(path)
        self.pad_token_id = pad_token_id
        self.tokens = self.slots = self.rows = 0
        self.start = None
        self.cuda = torch.cuda.is_available()

    def count(self, module, args, kwargs):
        if not module.training:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.shape == ids.shape:
            self.tokens += int((mask != 0).sum())
        else:
            self.tokens += real_tokens(ids, kwargs.get("position_ids"), self.pad_token_id)
        self.slots += ids.numel()
        self.rows += ids.shape[0] if ids.dim() > 1 else 1

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def begin_training(self, model, write=True):
        model.register_forward_pre_hook(self.count, with_kwargs=True)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("", encoding="utf-8")

    def begin_step(self):
        self._sync()
        self.tokens = self.slots = self.rows = 0
        self.start = time.perf_counter()

    def end_step(self, step, tokens_seen=0, write=True):
        self._sync()
        if self.start is None or not write:
            return
        row = {"step": step, "seconds": round(time.perf_counter() - self.start, 6),
               "tokens": self.tokens, "slots": self.slots, "rows": self.rows,
               "rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 3),
               "trainer_tokens_seen": int(tokens_seen or 0)}
        if self.cuda:
            free, total = torch.cuda.mem_get_info()
            row.update(peak_allocated_gib=round(torch.cuda.max_memory_allocated() / GIB, 3),
                       peak_reserved_gib=round(torch.cuda.max_memory_reserved() / GIB, 3),
                       device_used_gib=round((total - free) / GIB, 3))
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


def real_tokens(ids, positions, pad_token_id):
    """Tokens of a packed batch without attention mask: Axolotl's collator pads each row with pad tokens whose
    position_ids count from 0 again, so a segment (positions restarting at 0) made only of pad tokens is padding."""
    if positions is None or pad_token_id is None:
        return ids.numel()
    ids = ids.reshape(-1, ids.shape[-1])
    segment = (positions.expand_as(ids) == 0).cumsum(dim=-1)      # 1, 2, ... a sample each (0: before any)
    not_pad = (ids != pad_token_id).long()
    real = torch.zeros(ids.shape[0], ids.shape[1] + 1, dtype=torch.long, device=ids.device)
    real.scatter_add_(1, segment, not_pad)                           # non-pad tokens per segment
    return int((real.gather(1, segment) > 0).sum())


class StepMetrics(TrainerCallback):
    """Recorder on a transformers Trainer (rank 0 writes)."""

    def __init__(self, path):
        self.recorder = Recorder(path)

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        pad = getattr(processing_class, "pad_token_id", None)
        self.recorder.pad_token_id = pad if pad is not None else getattr(model.config, "pad_token_id", None)
        self.recorder.begin_training(model, write=state.is_world_process_zero)

    def on_step_begin(self, args, state, control, **kwargs):
        self.recorder.begin_step()

    def on_step_end(self, args, state, control, **kwargs):
        self.recorder.end_step(state.global_step, getattr(state, "num_input_tokens_seen", 0),
                               write=state.is_world_process_zero)


class Metrics(BasePlugin):
    """Axolotl plugin: StepMetrics on the trainer, writing to the run's output_dir."""

    def add_callbacks_post_trainer(self, cfg, trainer):
        return [StepMetrics(Path(cfg.output_dir) / FILE)]
