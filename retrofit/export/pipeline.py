"""`retrofit export`: training checkpoint -> merged, verified, atomically written model folder.

Pipeline (each step fails with a message naming the file at fault, before anything is written):

1. Read the checkpoint manifest (`retrofit_checkpoint.json`), check the base model folder
   against its fingerprint, build the model on the meta device for names and shapes.
2. Read the trained tensors (`retrofit.export.sources`): safetensors adapters once their sha256
   matches the manifest; pickled formats (ZeRO shards, `.bin` adapters) only with
   `trust_checkpoint=True` (`--trust-checkpoint`). training_args.bin, optimizer, scheduler and
   rng files are never read.
3. Plan the merge from safetensors headers only (`retrofit.export.merge.plan_merge`).
4. Verify before writing. "full" mode (when ~6 bytes/param fit in available RAM): run the
   unmerged peft model and the fp32 merged model on a fixed probe batch; logits and expected
   gaps must agree within 1e-4 (relative-ish, `retrofit.export.verify`). "layers" mode: only the
   per-layer probes (merged W x vs W x + s B A x), which run in every mode.
5. Stream base shard -> merge -> output shard into `<out parent>/.tmp-<name>-*`; re-read the
   merged tensors from disk (layer probes) and, in full mode, reload the folder with
   `AutoModel.from_pretrained` and compare with the peft model again (dtype tolerance: fp32 1e-4,
   bf16 3e-2, fp16 1e-2). Then write config.json, generation_config.json (special ids, sampler
   defaults and `prompt_template`: "chat" / "plain" / null, the prompt template of the
   training data, `prompt_template_of`), tokenizer files, README.md and
   `retrofit_manifest.json` (sha256 of every file), and rename into place.

A LLaDA export (`--to-llada`, or a LLaDA checkpoint) keeps the base's config.json `auto_map`
only together with the modeling files it names (copied from the base folder, or from the LLaDA
folder a FlexMDM base was grafted from; `retrofit.export.files`), so
`AutoModel.from_pretrained(out, trust_remote_code=True)` works offline; without them the
export drops `auto_map` and the model card says to load it with `import retrofit.models`.
Temp folders of earlier killed exports to the same destination are removed before writing
(`retrofit.export.files.remove_stale_temp_folders`; a running export's folder is kept).

Memory (streaming; measured by tests/export/test_export.py::test_streaming_merge_peak_memory): base
tensors are memory-mapped and each output tensor is written to its shard as soon as it exists
(`retrofit.export.shards`), so the anonymous (non-file-backed) peak is one merge:
    anon peak ~ R0 + 8 N_max
with R0 the process baseline (~0.6 GB: torch + transformers) and N_max the element count of the
largest LoRA-merged tensor (its fp32 merged copy + the fp32 B @ A; the base tensor itself stays
memory-mapped, whatever its dtype). ru_maxrss additionally counts the
touched pages of the memory-mapped input shard and adapter (clean page cache, reclaimable):
    maxrss ~ anon peak + S_in + 4 T
with S_in the largest base shard and T the trained parameters (LoRA + graft, fp32). Measured on a
390M-parameter LLaDA-shaped FlexMDM (fp32 base, 500 MB shards, N_max = 32000 x 1024, bf16 out):
anon +276 MB, maxrss +583 MB, independent of --max-shard-size (100 MB or 1 GB), versus 780 MB
for the bf16 model and 1.56 GB in fp32. LLaDA-8B FlexMDM (bf16 base, LM head 126464 x 4096 =
518M, T = 403M, ~5 GB shards): anon ~ 0.6 + 8 x 0.518 = 4.7 GB, maxrss ~ 4.7 + 5 + 1.6 = 11.3 GB,
versus 16 GB for the bf16 model (32 GB fp32). "full" verification additionally holds one fp32
copy of the model at a time (~32 GB + activations), hence the automatic fallback to "layers".

Usage:
    retrofit export runs/ift/checkpoint-1000 --out exports/flexmdm-gsm8k --dtype bf16
    >>> report = export_checkpoint("runs/ift/checkpoint-1000", "exports/flexmdm-gsm8k")
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from retrofit.dtypes import canonical_dtype, torch_dtype
from retrofit.export.files import (
    OWNER_FILE,
    copy_modeling_code,
    find_modeling_code,
    remove_stale_temp_folders,
    write_owner_file,
)
from retrofit.export.generation import generation_defaults, prompt_template_of, train_specs
from retrofit.export.merge import iter_merged, parse_size, plan_merge
from retrofit.export.model_card import render_model_card, training_metrics
from retrofit.export.models import (
    ExportError,
    ModelSpec,
    merged_model,
    model_classes,
    model_spec,
    probe_outputs,
    reference_model,
)
from retrofit.export.shards import ShardWriter
from retrofit.export.sources import TrainedWeights, load_trained_weights
from retrofit.export.verify import TOLERANCE, LayerProbe, compare_outputs, model_outputs, probe_batch
from retrofit.io_utils import atomic_directory, file_digests, sha256_file, write_json_atomic
from retrofit.training.checkpoint import MANIFEST_NAME, CheckpointError, check_base, read_manifest

__all__ = [
    "EXPORT_MANIFEST",
    "ExportReport",
    "export_checkpoint",
    "verify_mode",
]

EXPORT_MANIFEST = "retrofit_manifest.json"
EXPORT_FORMAT = "retrofit-export"
IGNORED_BASE_TENSORS = (r"rotary_emb\.inv_freq",)
BYTES_PER_PARAM_FULL = 6  # fp32 model (4) + peft copies / activations / allocator slack


@dataclass
class ExportReport:
    """Result of `export_checkpoint`.

    Attributes:
        out: the written folder.
        kind: kind of the written model ("flexmdm" or "llada").
        dtype: dtype name of the written weights.
        n_params: parameters written.
        shards: safetensors file names.
        mode: verification mode used ("full" or "layers").
        errors: {check: relative-ish error} (see `retrofit.export.verify`).
        tolerance: {check: tolerance applied}.
        modeling_code: modeling .py files copied from `modeling_code_from` (LLaDA exports).
        modeling_code_from: the folder they came from (None: not copied).
        auto_map_dropped: config.json `auto_map` was removed (no modeling files to ship).
        removed_temp: stale temp folders of earlier killed exports that were deleted.
        kept_temp: notes on matching temp folders that were kept, and why.
    """

    out: Path
    kind: str
    dtype: str
    n_params: int
    shards: list[str]
    mode: str
    errors: dict[str, float] = field(default_factory=dict)
    tolerance: dict[str, float] = field(default_factory=dict)
    modeling_code: list[str] = field(default_factory=list)
    modeling_code_from: str | None = None
    auto_map_dropped: bool = False
    removed_temp: list[str] = field(default_factory=list)
    kept_temp: list[str] = field(default_factory=list)


def _resolve_checkpoint(checkpoint: Path, base: Path | None) -> tuple[dict, Path]:
    """Read + sanity-check the manifest; return it and the (fingerprint-checked) base folder."""
    if not checkpoint.is_dir():
        raise CheckpointError(
            f"{checkpoint}: not a folder; pass a training checkpoint folder (checkpoint-<step>)"
        )
    manifest = read_manifest(checkpoint)
    if manifest.get("complete") is not True:
        raise CheckpointError(
            f"{checkpoint / MANIFEST_NAME}: 'complete' is not true (the save did not finish)"
        )
    base_dir = Path(base) if base is not None else Path(manifest.get("base_model", {}).get("path", ""))
    problems = check_base(manifest, base_dir)
    if problems:
        raise CheckpointError(
            "base model check failed (pass --base with the folder the checkpoint was trained from):\n  "
            + "\n  ".join(problems)
        )
    return manifest, base_dir


def verify_mode(requested: str, n_params: int) -> str:
    """The verification mode: `requested`, or for "auto" "full" when ~6 bytes/param + 1 GiB fit in
    the available RAM, else "layers".

    Raises:
        ValueError: `requested` is not auto, full or layers.
    """
    if requested in ("full", "layers"):
        return requested
    if requested != "auto":
        raise ValueError(f"verify={requested!r}; expected auto, full or layers")
    need = BYTES_PER_PARAM_FULL * n_params + (1 << 30)
    return "full" if need < available_memory() else "layers"


def available_memory() -> int:
    """Bytes of RAM available to this process (MemAvailable; sysconf as a fallback)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _check(
    errors: dict[str, float], tolerances: dict[str, float], stage: str, found: dict, tol: float
) -> None:
    """Record `found` under `stage` and raise ExportError if a relative error exceeds `tol`."""
    for name, value in found.items():
        errors[f"{stage}.{name}"] = value
        if not name.endswith("_max_abs"):
            tolerances[f"{stage}.{name}"] = tol
            if not value <= tol:
                raise ExportError(
                    f"export verification failed at {stage}: {name} differs by {value:.3g} (> {tol:g}); "
                    "nothing was written"
                )


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    dtype: str = "bf16",
    max_shard_size: str | int = "5GB",
    base: str | os.PathLike | None = None,
    to_llada: bool = False,
    overwrite: bool = False,
    trust_checkpoint: bool = False,
    source: str = "auto",
    verify: str = "auto",
) -> ExportReport:
    """Merge a training checkpoint's LoRA into its base and write a verified model folder.

    Args:
        checkpoint: training checkpoint folder with `retrofit_checkpoint.json`.
        out: output folder (created atomically; see module docstring).
        dtype: "bf16", "fp32" or "fp16" for the written weights (the merge is always fp32).
        max_shard_size: output shard size, e.g. "5GB" (10^9 bytes) or "2GiB".
        base: base model folder; default the path recorded in the manifest (fingerprint-checked).
        to_llada: write only the backbone as a plain LLaDA folder (official tensor names).
        overwrite: replace an existing `out` (new folder written fully first, then swapped).
        trust_checkpoint: allow pickle-based inputs (ZeRO shards, .bin adapters).
        source: "auto", "adapter" (adapter_model.*) or "zero" (consolidate ZeRO shards).
        verify: "auto", "full" (whole-model probe batches) or "layers" (per-layer probes only).

    Returns:
        ExportReport with the verification errors and tolerances.

    Raises:
        FileExistsError: `out` exists and `overwrite` is False (checked first).
        CheckpointError: missing / corrupt / untrusted / mismatched inputs (names the file).
        ExportError: the merged model disagrees with the trained one beyond tolerance.
        ValueError: bad `dtype`, `max_shard_size` or `verify`.
    """
    weights_dtype = torch_dtype(canonical_dtype(dtype, "--dtype", ("float32", "bfloat16", "float16")))
    ckpt, out, max_bytes = Path(checkpoint), Path(out), parse_size(max_shard_size)
    if out.exists() and not overwrite:
        raise FileExistsError(f"--out {out} already exists; choose a new folder or pass --overwrite")
    manifest, base_dir = _resolve_checkpoint(ckpt, None if base is None else Path(base))
    spec = model_spec(manifest, base_dir, to_llada)
    trained = load_trained_weights(ckpt, manifest, source=source, trust=trust_checkpoint)
    plan = plan_merge(base_dir, trained, spec.expected, base_prefix=spec.base_prefix(),
                      out_name=spec.out_name, ignore_unexpected=IGNORED_BASE_TENSORS)  # fmt: skip
    mode = verify_mode(verify, sum(_numel(s) for s in spec.expected.values()))
    report = ExportReport(out, spec.out_kind, dtype, sum(_numel(i.shape) for i in plan), [], mode)
    batch = probe_batch(_vocab_size(spec.out_config))
    ref = None
    if mode == "full":
        ref = probe_outputs(reference_model(spec, base_dir, trained), spec, batch, reference=True)
        gc.collect()  # peft wrappers hold reference cycles: free the fp32 reference before the next copy
        got = probe_outputs(merged_model(spec, plan), spec, batch, reference=False)
        _check(
            report.errors,
            report.tolerance,
            "prewrite_fp32",
            compare_outputs(got, ref),
            TOLERANCE[torch.float32],
        )
    removed, report.kept_temp = remove_stale_temp_folders(out)
    report.removed_temp = [str(p) for p in removed]
    with atomic_directory(out, overwrite=overwrite) as tmp:
        write_owner_file(tmp)  # lets a later export tell a killed write from a running one
        report.shards = _write_weights(tmp, plan, weights_dtype, max_bytes, report)
        _write_config(tmp, spec, report, base_dir, prompt_template_of(train_specs(manifest)))
        if ref is not None:
            found = compare_outputs(_reload_outputs(tmp, spec, batch), ref)
            _check(report.errors, report.tolerance, "reloaded", found, TOLERANCE[weights_dtype])
        _write_card_and_manifest(tmp, ckpt, manifest, base_dir, report, trained)
        (tmp / OWNER_FILE).unlink()
    return report


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


def _vocab_size(config: Any) -> int:
    llada = config.backbone_config if hasattr(config, "backbone_config") else config
    return int(llada.vocab_size)


def _write_weights(
    tmp: Path, plan: list, dtype: torch.dtype, max_bytes: int, report: ExportReport
) -> list[str]:
    """Stream-merge into shards, with layer probes on the fp32, cast and re-read weights."""
    from safetensors import safe_open

    probe = LayerProbe()
    with ShardWriter(tmp, [(item.out_key, item.shape) for item in plan], dtype, max_bytes) as writer:
        for item, tensor in iter_merged(plan, probe):
            cast = writer.add(item.out_key, tensor)
            if item.out_key in probe.refs:
                probe.check("cast", item.out_key, cast)
            del tensor, cast
        weight_map = writer.finish()
    for key in probe.refs:  # re-read what is on disk
        with safe_open(tmp / weight_map[key], framework="pt") as handle:
            probe.check("disk", key, handle.get_tensor(key))
    for stage, tol in (
        ("merged_fp32", TOLERANCE[torch.float32]),
        ("cast", TOLERANCE[dtype]),
        ("disk", TOLERANCE[dtype]),
    ):
        _check(report.errors, report.tolerance, "layers", {stage: probe.errors.get(stage, 0.0)}, tol)
    return sorted(set(weight_map.values()))


def _reload_outputs(tmp: Path, spec: ModelSpec, batch: dict) -> dict[str, torch.Tensor]:
    """Reload the written folder with AutoModel (strict: no missing / unexpected keys), in fp32."""
    from transformers import AutoModel

    model_classes(spec.out_kind)  # registers the Auto classes
    model, info = AutoModel.from_pretrained(str(tmp), dtype=torch.float32, output_loading_info=True)
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        raise ExportError(f"{tmp}: reloading the export is not strict: {bad}")
    return model_outputs(model, spec.out_kind, batch)


def _write_config(
    tmp: Path, spec: ModelSpec, report: ExportReport, base: Path, prompt_template: str | None
) -> None:
    """config.json (dtype, architectures; `auto_map` only with its modeling files, which are
    copied), and generation_config.json."""
    config = spec.out_config
    config.dtype = torch_dtype(report.dtype)
    config.architectures = [model_classes(spec.out_kind)[1].__name__]
    if spec.out_kind == "llada" and getattr(config, "auto_map", None):
        code = find_modeling_code(config.auto_map, _modeling_code_folders(spec, base))
        if code is not None:
            report.modeling_code = copy_modeling_code(code, tmp)
            report.modeling_code_from = str(code.source)
        else:
            del config.auto_map
            report.auto_map_dropped = True
    config.save_pretrained(tmp)
    defaults = generation_defaults(config, spec.out_kind, prompt_template=prompt_template)
    write_json_atomic(tmp / "generation_config.json", defaults)


def _modeling_code_folders(spec: ModelSpec, base: Path) -> list[Path]:
    """Where a LLaDA export's modeling files may be: the base, then the LLaDA folder it was grafted from."""
    folders = [base]
    if spec.base_type == "flexmdm":
        try:
            grafted_from = json.loads((base / "config.json").read_text(encoding="utf-8")).get("base_model")
        except (OSError, ValueError):
            grafted_from = None
        if isinstance(grafted_from, str) and grafted_from:
            folders.append(Path(grafted_from))
    return folders


def _write_card_and_manifest(tmp: Path, ckpt: Path, manifest: dict, base: Path, report: ExportReport,
                             trained: TrainedWeights) -> None:  # fmt: skip
    """Tokenizer files, README.md, then `retrofit_manifest.json` with every file's sha256 (last)."""
    from retrofit.graft import copy_tokenizer_files

    tokenizer = copy_tokenizer_files(base, tmp)
    source = {"checkpoint": str(ckpt.absolute()), "step": manifest.get("step"), "weights_from": trained.source,
              "checkpoint_manifest_sha256": sha256_file(ckpt / MANIFEST_NAME)}  # fmt: skip
    card = render_model_card(manifest=manifest, report=report, source=source, metrics=training_metrics(ckpt),
                             tokenizer=tokenizer)  # fmt: skip
    (tmp / "README.md").write_text(card, encoding="utf-8")
    export_manifest = {
        "format": EXPORT_FORMAT,
        "format_version": 1,
        "kind": report.kind,
        "trained_kind": manifest.get("kind"),
        "dtype": report.dtype,
        "n_params": report.n_params,
        "shards": report.shards,
        "source": source,
        "base_model": manifest.get("base_model"),
        "verification": {"mode": report.mode, "errors": report.errors, "tolerance": report.tolerance},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "files": file_digests(tmp, exclude=(EXPORT_MANIFEST,)),
        "complete": True,
    }
    write_json_atomic(tmp / EXPORT_MANIFEST, export_manifest)
