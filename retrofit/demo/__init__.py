"""`retrofit demo` / `make demo`: the whole pipeline on a tiny LLaDA-format model, on CPU (issue #8).

Stages (each a public command, see `retrofit.demo.plan`): a tiny LLaDA checkpoint with a BPE fit
on GSM8K + Python stdlib code -> brief MDM pre-training (cached by recipe hash) -> `retrofit
graft` -> FlexMDM and fixed-length MDM fine-tunes (`accelerate launch`, 2 CPU processes) ->
`retrofit export` both -> `retrofit eval gsm8k / humaneval-infill / length` for the three models
-> `demo-out/results.md`.
"""
