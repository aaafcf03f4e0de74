"""python -m tests.packing_check CONFIG OUT: one batch of Axolotl's own train dataloader for CONFIG (its datasets,
model and trainer, in this process: Axolotl patches transformers globally, so tests run this apart), and for
each packed sample the largest logit difference from the sample alone, packed as Axolotl feeds it and
with a plain attention mask instead, under sdpa (the config's) and eager attention. Writes OUT (JSON)."""
import json
import sys
from pathlib import Path


def main(config, out):
    import torch
    from axolotl.cli.config import load_cfg
    from axolotl.common.datasets import load_datasets
    from axolotl.train import setup_model_and_trainer

    cfg = load_cfg(config)
    trainer, model, *_ = setup_model_and_trainer(cfg, load_datasets(cfg=cfg))
    batch = next(iter(trainer.get_train_dataloader()))
    positions = batch["position_ids"][0].tolist()
    starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
    samples = [(a, b) for a, b in zip(starts, starts[1:]) if (batch["labels"][0, a:b] != -100).any()]
    model.eval()
    diffs = {}
    for attn in ("sdpa", "eager"):  # the config's sdpa, then the same model with eager attention
        model.set_attn_implementation(attn)
        diffs[attn] = []
        with torch.no_grad():
            packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
            plain = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                          attention_mask=torch.ones_like(batch["input_ids"])).logits[0]
            for a, b in samples:
                alone = model(input_ids=batch["input_ids"][:, a:b]).logits[0]
                diffs[attn].append({"span": [a, b], "packed": (packed[a:b] - alone).abs().max().item(),
                                    "plain_mask": (plain[a:b] - alone).abs().max().item()})
    result = {"decontaminates": bool(cfg.attn_decontaminates_packing), "keys": sorted(batch), "samples": diffs}
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
