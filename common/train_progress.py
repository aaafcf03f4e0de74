"""Progress lines for Axolotl training: `step 12/73  epoch 0.65  loss 1.234  eta 0:41` per logging step
(and at step 1), the val loss after each evaluation, checkpoints and a final line. An Axolotl plugin:
scripts.cpu_run lists it under `plugins:` in the CPU config."""
import time

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback


def clock(seconds):
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def say(text):
    print(text, flush=True)


class StepLines(TrainerCallback):
    """One line per logging step; the eta leaves out the time spent evaluating."""

    def __init__(self, resume_from=None):
        self.resume_from = resume_from
        self.start = self.first_step = self.eval_start = None
        self.eval_time = 0.0

    def _where(self, state):
        return f"step {state.global_step}/{state.max_steps}"

    def _eta(self, state):
        done = state.global_step - self.first_step
        if done <= 0:
            return "?"
        per_step = (time.time() - self.start - self.eval_time) / done
        return clock(per_step * (state.max_steps - state.global_step))

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.first_step = time.time(), state.global_step
        if not state.is_world_process_zero:
            return
        if state.global_step:  # resumed (auto_resume_from_checkpoints picks the checkpoint after plugins load)
            where = self.resume_from or f"{args.output_dir}/checkpoint-{state.global_step}"
            say(f"{self._where(state)}  resume from checkpoint at {where}")
        say(f"training: {state.max_steps} steps ({args.num_train_epochs:g} epochs at most), "
            f"a line every {args.logging_steps:g} steps")

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and state.global_step == self.first_step + 1 and not control.should_log:
            say(f"{self._where(state)}  eta {self._eta(state)}")

    def on_prediction_step(self, args, state, control, **kwargs):
        if self.eval_start is None:
            self.eval_start = time.time()

    def on_evaluate(self, args, state, control, **kwargs):
        if self.eval_start is not None:
            self.eval_time += time.time() - self.eval_start
            self.eval_start = None

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            say(f"{self._where(state)}  checkpoint saved: {args.output_dir}/checkpoint-{state.global_step}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if not state.is_world_process_zero:
            return
        if "train_loss" in logs:
            say(f"trained {state.global_step} steps in {clock(float(logs.get('train_runtime', 0)))}, "
                f"train loss {float(logs['train_loss']):.4f}")
        elif "eval_loss" in logs:
            say(f"{self._where(state)}  val loss {float(logs['eval_loss']):.4f}")
        elif "loss" in logs:
            say(f"{self._where(state)}  epoch {state.epoch or 0:.2f}  loss {float(logs['loss']):.4f}  "
                f"eta {self._eta(state)}")


class Progress(BasePlugin):
    """Axolotl plugin: a line when data and model load, and StepLines on the trainer."""

    def load_datasets(self, cfg, preprocess=False):
        say("preparing the data (tokenizing with the recipe's chat template)")
        return None  # Axolotl loads them as usual

    def pre_model_load(self, cfg):
        say(f"loading {cfg.base_model}")

    def add_callbacks_post_trainer(self, cfg, trainer):
        return [StepLines(cfg.resume_from_checkpoint)]
