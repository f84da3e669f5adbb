"""Logic of `retrofit verify-llada DIR`: does a LLaDA folder load natively, and what is its tokenizer?

Checks, in order:
1. the folder loads with `load_llada` (all the checks of retrofit.models.loading);
2. a seeded probe batch gives finite logits of shape [B, L, embedding_size];
3. if the folder ships its own modeling code (config.json `auto_map` names a model class whose
   module file, e.g. modeling_llada.py, is in the folder), that code is imported from the folder
   with transformers' dynamic-module loader (`get_class_from_dynamic_module`: the `AutoConfig`
   and `AutoModel` entries of `auto_map`), run on the same batch, and its logits are compared
   with ours. A mismatch is a problem (exit 1). When the folder's code cannot be imported or
   run (the official LLaDA code breaks on transformers 5.x), the comparison is reported as
   "skipped: ..." with the reason and the transformers version, plus a WARNING; a comparison
   that did not run is never reported as "matched";
4. tokenizer facts (docs/method.md §8.4): bos / eos / pad / mask ids, chat template, how the
   "<infill-boundary>" string tokenizes (docs/method.md §1.7), whether `tokenizer(text)` prepends BOS.

Why not `AutoModel.from_pretrained(DIR, trust_remote_code=True)`: `import retrofit.models`
(imported by this module and by every retrofit verb that loads a model) registers retrofit's
native `LLaDAConfig` / `LLaDAModelLM` for model_type "llada". On transformers 5.x a registered
class that does not come from transformers itself takes precedence over `auto_map`, so after
that import `AutoModel.from_pretrained(DIR, trust_remote_code=True)` returns
`retrofit.models.llada.LLaDAModelLM`, not the folder's modeling_llada.py (measured on 5.25;
which class wins has changed between releases, so this module does not rely on it). A comparison
through the Auto classes would compare retrofit with itself.

Usage:
    $ retrofit verify-llada path/to/LLaDA-8B-Base [--no-remote-code] [--dtype bfloat16 --device cuda]
    >>> report = verify_llada("tiny"); print(report.format()); report.ok
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers

from retrofit.models.loading import load_llada, resolve_mask_id

INFILL_BOUNDARY = "<infill-boundary>"
# Largest accepted max|Δ logits| / max(1, max|logits|) between native and remote code, per dtype.
REMOTE_TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-9}
REMOTE_TOLERANCE_LOW_PRECISION = 2e-2


@dataclass
class VerifyReport:
    """Outcome of `verify_llada`.

    Attributes:
        path: the checked folder.
        facts: ordered name -> value lines to print (ids, dtypes, tokenizations).
        problems: findings that make the folder unusable; `ok` is False when non-empty.
        warnings: suspicious but usable findings.
        remote: one line on the remote-code comparison ("matched ...", "skipped: ...").
    """

    path: str
    facts: dict[str, object] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    remote: str = "not run"

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def format(self) -> str:
        """Human-readable multi-line report."""
        lines = [f"verify-llada {self.path}"]
        lines += [f"  {k}: {v}" for k, v in self.facts.items()]
        lines.append(f"  remote code: {self.remote}")
        lines += [f"  WARNING: {w}" for w in self.warnings]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        lines.append("OK" if self.ok else f"FAILED ({len(self.problems)} problem(s))")
        return "\n".join(lines)


def probe_batch(vocab_size: int, length: int = 16, seed: int = 0) -> torch.Tensor:
    """Seeded random ids [2, length] int64 in [0, vocab_size) used to compare implementations."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (2, length), generator=gen)


MODEL_AUTO_KEYS = ("AutoModel", "AutoModelForMaskedLM", "AutoModelForCausalLM")


def remote_code_entries(path: Path) -> tuple[str, str] | None:
    """The folder's own (config, model) class references from config.json `auto_map`.

    Returns:
        ("configuration_llada.LLaDAConfig", "modeling_llada.LLaDAModelLM")-style references
        (the first of `MODEL_AUTO_KEYS` present), or None when config.json has no usable
        `auto_map` (no AutoConfig or no model entry).
    """
    try:
        auto_map = json.loads((path / "config.json").read_text(encoding="utf-8")).get("auto_map") or {}
    except (OSError, ValueError, AttributeError):
        return None
    model_ref = next((auto_map[k] for k in MODEL_AUTO_KEYS if isinstance(auto_map.get(k), str)), None)
    config_ref = auto_map.get("AutoConfig")
    if model_ref is None or not isinstance(config_ref, str):
        return None
    return config_ref, model_ref


def _module_file(reference: str) -> str:
    """'modeling_llada.LLaDAModelLM' -> 'modeling_llada.py' ('repo--' prefixes dropped)."""
    return reference.split("--")[-1].rsplit(".", 1)[0] + ".py"


def load_remote_model(path: str | Path, dtype: torch.dtype, device: str | None):
    """Load the folder's own modeling code, bypassing the Auto classes. Runs code from `path`.

    The classes named by config.json `auto_map` are imported from the folder by
    `transformers.dynamic_module_utils.get_class_from_dynamic_module` (copied into the
    transformers modules cache, keyed by a hash of the source files), so the result is the
    folder's code even though `import retrofit.models` registered native classes.

    Returns:
        The model in eval mode, in `dtype`, on `device` (None: CPU).

    Raises:
        ValueError: config.json has no usable `auto_map`, or a class resolves to retrofit's own
            code instead of the folder's.
        Exception: whatever importing or building the folder's code raises.
    """
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    path = Path(path)
    entries = remote_code_entries(path)
    if entries is None:
        raise ValueError(f"{path / 'config.json'} has no auto_map with AutoConfig and AutoModel entries")
    config_cls, model_cls = (
        get_class_from_dynamic_module(ref, str(path), local_files_only=True) for ref in entries
    )
    for cls in (config_cls, model_cls):
        if cls.__module__.split(".")[0] == "retrofit":
            raise ValueError(
                f"{cls.__name__} resolved to retrofit's own {cls.__module__}, not the folder's code"
            )
    kwargs: dict = {"dtype": dtype, "config": config_cls.from_pretrained(str(path))}
    if device is not None:
        kwargs["device_map"] = {"": device}
    return model_cls.from_pretrained(str(path), **kwargs).eval()


def _remote_code_skip_reason(path: Path) -> str | None:
    """Why the folder's code cannot be compared (None: it ships code named by `auto_map`)."""
    if not path.is_dir():
        return f"{path} is not a local folder"
    entries = remote_code_entries(path)
    if entries is None:
        return "the folder's config.json names no modeling code (no auto_map AutoConfig / AutoModel)"
    missing = [_module_file(ref) for ref in entries if not (path / _module_file(ref)).is_file()]
    if missing:
        return f"config.json auto_map names {', '.join(missing)}, which the folder does not ship"
    return None


def compare_remote(
    report: VerifyReport, path: Path, ids: torch.Tensor, native: torch.Tensor, device: str | None
) -> None:
    """Run the folder's modeling code on `ids` and compare its logits with `native` [B, L, V].

    Sets `report.remote` to "matched ..." only when the folder's own classes ran and agreed;
    "MISMATCH ..." adds a problem; a comparison that could not run is "skipped: <why>
    (transformers X.Y.Z)" plus a warning (or a problem on transformers 4.x, where the official
    code is expected to run).
    """
    version = transformers.__version__
    reason = _remote_code_skip_reason(path)
    if reason is not None:
        report.remote = f"skipped: {reason}"
        if "does not ship" in reason:
            report.warnings.append(
                f"{reason}: AutoModel.from_pretrained(..., trust_remote_code=True) fails on it "
                "unless retrofit.models is imported"
            )
        return
    try:
        model = load_remote_model(path, native.dtype, device)
        with torch.no_grad():
            remote = model(input_ids=ids.to(model.device)).logits.to(native.device)
        name = f"{type(model).__module__.rsplit('.', 1)[-1]}.{type(model).__name__}"
    except Exception as e:  # the official code breaks on transformers 5.x in several ways
        first = (str(e).splitlines() or [""])[0][:200]
        why = f"the folder's modeling code failed on transformers {version} ({type(e).__name__}: {first})"
        report.remote = f"skipped: {why}; native and folder logits were NOT compared"
        if int(version.split(".")[0]) >= 5:
            report.warnings.append(
                f"remote-code comparison skipped: {why}; run verify-llada under transformers 4.x "
                "to compare, or pass --no-remote-code"
            )
        else:
            report.problems.append(f"the folder's modeling code failed to run: {first}")
        return
    if remote.shape != native.shape:
        report.remote = f"MISMATCH: folder's {name} logits shape {list(remote.shape)}"
        report.problems.append(f"remote logits shape {list(remote.shape)} != native {list(native.shape)}")
        return
    diff = (remote.float() - native.float()).abs().max().item()
    rel = diff / max(1.0, native.float().abs().max().item())
    tol = REMOTE_TOLERANCE.get(native.dtype, REMOTE_TOLERANCE_LOW_PRECISION)
    report.remote = (
        f"{'matched' if rel <= tol else 'MISMATCH'} (folder's {name}, transformers {version}): "
        f"max|Δlogits| = {diff:.3g} (relative {rel:.3g}, tolerance {tol:g})"
    )
    if rel > tol:
        report.problems.append(
            f"the folder's own modeling code ({name}) and retrofit's native LLaDA give different logits: "
            f"relative {rel:.3g} > {tol:g}"
        )


def tokenizer_facts(report: VerifyReport, path: Path, config) -> None:
    """Add tokenizer facts / problems to `report` (docs/method.md §8.4, §1.7)."""
    from transformers import AutoTokenizer

    if not ((path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()):
        report.problems.append(f"{path} has no tokenizer.json / tokenizer_config.json")
        return
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:
        report.problems.append(f"tokenizer in {path} failed to load: {type(e).__name__}: {e}")
        return
    boundary = tok.encode(INFILL_BOUNDARY, add_special_tokens=False)
    probe = tok("a")["input_ids"]
    f = report.facts
    f["tokenizer"] = f"{type(tok).__name__}, {len(tok)} tokens"
    f["bos / eos / pad ids"] = f"{tok.bos_token_id} / {tok.eos_token_id} / {tok.pad_token_id}"
    f["tokenizer(text) adds BOS"] = (
        bool(probe) and tok.bos_token_id is not None and probe[0] == tok.bos_token_id
    )
    f["chat template"] = "present" if tok.chat_template else "absent"
    f[f"{INFILL_BOUNDARY!r} tokenizes to"] = f"{len(boundary)} token(s) {boundary}"
    try:
        mask_id = resolve_mask_id(config, tok)
        f["mask id"] = mask_id
        if mask_id == tok.pad_token_id:
            report.problems.append(f"pad id == mask id ({mask_id}); FlexMDM needs them distinct")
    except ValueError as e:
        report.problems.append(str(e))
    if tok.pad_token_id is None:
        report.problems.append("the tokenizer has no pad token (LLaDA uses <|endoftext|>)")
    if len(tok) > config.embedding_size:
        report.problems.append(f"tokenizer has {len(tok)} ids but embedding_size is {config.embedding_size}")
    for key in ("eos_token_id", "pad_token_id"):
        if getattr(config, key, None) not in (None, getattr(tok, key)):
            report.warnings.append(
                f"config.json {key}={getattr(config, key)} != tokenizer's {getattr(tok, key)}"
            )


def verify_llada(
    path: str | Path,
    *,
    remote_code: bool = True,
    dtype: torch.dtype | None = None,
    device: str | None = None,
    probe_length: int = 16,
    trust_bin: bool = False,
) -> VerifyReport:
    """Check a LLaDA folder end to end (see the module docstring).

    Args:
        path: checkpoint folder.
        remote_code: run the folder's own modeling code (config.json auto_map) for the
            logits comparison.
        dtype: load dtype (None: as stored); device: e.g. "cuda:0" (None: CPU).
        probe_length: length L of the [2, L] probe batch.
        trust_bin: accept `.bin` weights (read with weights_only=True).

    Returns:
        VerifyReport; `report.ok` is False when any problem was found. Never raises for a bad
        folder: load errors become problems.
    """
    path = Path(path)
    report = VerifyReport(path=str(path))
    try:
        model = load_llada(path, dtype=dtype, device=device, trust_bin=trust_bin)
    except (OSError, ValueError) as e:
        report.problems.append(f"native load failed: {e}")
        return report
    config = model.config
    n_params = sum(p.numel() for p in model.parameters())
    report.facts["native model"] = f"{n_params:,} parameters, {model.dtype}, {config.n_layers} layers"
    ids = probe_batch(config.vocab_size, probe_length)
    with torch.no_grad():
        logits = model(ids.to(model.device)).logits.cpu()
    want = [2, probe_length, config.embedding_size]
    if list(logits.shape) != want or not torch.isfinite(logits).all():
        report.problems.append(
            f"probe logits have shape {list(logits.shape)} (want {want}) or are not finite"
        )
    del model
    gc.collect()
    if remote_code:
        compare_remote(report, path, ids, logits, device)
    else:
        report.remote = "skipped: --no-remote-code"
    tokenizer_facts(report, path, config)
    return report
