"""Export: a training checkpoint -> a merged, verified model folder; and `retrofit inspect`.

The stage after training (docs/method.md §2.8 for the merge W' = W + s B A). Modules, in the
order an export runs them (`retrofit export CKPT --out DIR`, `pipeline.export_checkpoint`):

- `pipeline`: the export itself (manifest and base checks, plan, verify, write, rename).
- `sources`: read the trained tensors (LoRA factors + graft modules) of a checkpoint.
- `models`: names / shapes on the meta device, the unmerged peft reference, the fp32 merge.
- `merge`: plan the merge from safetensors headers and stream the merged tensors.
- `shards`: the streaming safetensors writer.
- `verify`: probe batch, output comparison and per-layer probes with their tolerances.
- `files`: the base's modeling code and stale temp folders of killed exports.
- `generation`: generation_config.json (special ids, sampler defaults, prompt template).
- `model_card`: the README.md model card.
- `inspect`: what a folder is (`retrofit inspect DIR`); torch-free.

The training-checkpoint format these read (`retrofit_checkpoint.json`) is written by the trainer
and defined in `retrofit.training.checkpoint`. This file imports nothing, so `retrofit inspect`
and `refuse_training_checkpoint` do not load torch through it.
"""
