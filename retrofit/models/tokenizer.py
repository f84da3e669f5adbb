"""Tiny LLaDA-style tokenizers: byte-level BPE with LLaDA's special tokens (docs/method.md §8.4).

`build_tokenizer()` needs no data: 256 byte tokens (id = byte value) plus the six LLaDA special
tokens appended after them, like LLaDA, whose special tokens sit after its regular vocabulary.
`build_tokenizer(train_on=[...], vocab_size=4096)` first fits byte-level BPE merges on the given
text files (tokenizers' `BpeTrainer`, seconds for GSM8K + the Python stdlib); merged tokens get
ids 256, 257, ... in merge order and the special tokens follow.

The result is a `transformers.PreTrainedTokenizerFast` with bos `<|startoftext|>`, eos = pad
`<|endoftext|>`, and a Llama-3-style chat template like LLaDA-Instruct's. As in the official
tokenizer, `<|mdm_mask|>` is NOT registered as `mask_token`: take the mask id from
`config.mask_token_id` (see `retrofit.models.loading.resolve_mask_id`).

BOS: by default `tokenizer(text)` does not prepend BOS (`add_bos_token=False`); the chat template
writes BOS itself, so chat prompts are tokenized with `add_special_tokens=False` as in LLaDA's
generate.py. With `add_bos_token=True`, `tokenizer(text)` prepends BOS and
`tokenizer(text, add_special_tokens=False)` does not.

Usage:
    >>> tok = build_tokenizer(train_on=["../shared/data/gsm8k/train.jsonl"], vocab_size=1024)
    >>> tok.save_pretrained("out/tokenizer")
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from retrofit.data.skip_dirs import STDLIB_EXCLUDE

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"  # also the pad token
MASK_TOKEN = "<|mdm_mask|>"
START_HEADER_TOKEN = "<|start_header_id|>"
END_HEADER_TOKEN = "<|end_header_id|>"
EOT_TOKEN = "<|eot_id|>"
SPECIAL_TOKENS: tuple[str, ...] = (
    BOS_TOKEN,
    EOS_TOKEN,
    MASK_TOKEN,
    START_HEADER_TOKEN,
    END_HEADER_TOKEN,
    EOT_TOKEN,
)

# Llama-3 chat format as used by LLaDA-Instruct (docs/method.md §8.4): BOS once, then per message
# `<|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>`; the generation prompt opens
# an assistant header.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] | trim }}{{ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

TEXT_SUFFIXES = (".py", ".txt", ".md", ".jsonl", ".jsonl.gz")


def byte_alphabet() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE, indexed by byte value (GPT-2 convention).

    Printable Latin-1 bytes map to themselves; the other bytes map, in order, to chr(256 + k).

    Returns:
        list of 256 one-character strings; entry b stands for byte b.
    """
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out, extra = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def iter_texts(paths: Sequence[str | Path]) -> Iterator[str]:
    """Yield training texts from files and directories (searched recursively, sorted).

    `.py` / `.txt` / `.md` files yield their whole text; `.jsonl` (and `.jsonl.gz`) files yield
    every string field of every row (e.g. GSM8K's question and answer).

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: a file has an unsupported suffix (the message lists the supported ones).
    """
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"--train-on: {path} does not exist")
        if path.is_dir():  # installed packages, caches and test suites are not the corpus
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.name.endswith(TEXT_SUFFIXES)
                and not STDLIB_EXCLUDE & set(p.relative_to(path).parts[:-1])
            )
        elif path.name.endswith(TEXT_SUFFIXES):
            files = [path]
        else:
            raise ValueError(f"--train-on: {path} is not one of {', '.join(TEXT_SUFFIXES)}")
        for file in files:
            yield from _file_texts(file)


def _file_texts(file: Path) -> Iterator[str]:
    if file.name.endswith((".jsonl", ".jsonl.gz")):
        opener = gzip.open if file.suffix == ".gz" else open
        with opener(file, "rt", encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    row = json.loads(line)
                    yield from (v for v in row.values() if isinstance(v, str))
    else:
        yield file.read_text(encoding="utf-8", errors="replace")


def _fit_merges(train_on: Sequence[str | Path], vocab_size: int) -> list[tuple[str, str]]:
    """Fit byte-level BPE merges on the texts; returns merges in creation order."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(iter_texts(train_on), trainer=trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in merges]


def build_tokenizer(
    train_on: Sequence[str | Path] | None = None,
    vocab_size: int | None = None,
    add_bos_token: bool = False,
) -> PreTrainedTokenizerFast:
    """Build a byte-level BPE tokenizer with LLaDA's special tokens (docs/method.md §8.4).

    Args:
        train_on: text files / directories to fit BPE merges on (see `iter_texts`). None gives
            the data-free tokenizer: 256 byte tokens + 6 special tokens = 262 ids.
        vocab_size: target size including the special tokens when `train_on` is given
            (default 4096; the trainer may stop short on small data). Must be >= 262.
        add_bos_token: whether `tokenizer(text)` prepends BOS (see the module docstring).

    Returns:
        PreTrainedTokenizerFast: ids 0..255 are bytes, then merges, then the special tokens in
        `SPECIAL_TOKENS` order; bos/eos/pad set, pad = eos, no mask_token, `chat_template` set.

    Raises:
        ValueError: vocab_size too small, or given without train_on.
    """
    n_base = 256 + len(SPECIAL_TOKENS)
    if vocab_size is not None and vocab_size < n_base:
        raise ValueError(f"tokenizer vocab_size={vocab_size} must be >= {n_base} (256 bytes + specials)")
    if vocab_size is not None and not train_on:
        raise ValueError("tokenizer vocab_size needs train_on files to fit BPE merges on")
    merges = _fit_merges(train_on, vocab_size or 4096) if train_on else []
    vocab = {c: i for i, c in enumerate(byte_alphabet())}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    if add_bos_token:
        bos_id = tok.token_to_id(BOS_TOKEN)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B", special_tokens=[(BOS_TOKEN, bos_id)]
        )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def build_word_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: one token per whitespace-separated word, LLaDA's special tokens after.

    For synthetic tasks whose symbols are words (`retrofit.repro`: brackets, maze cells), so a
    text of n words is exactly n tokens. Word i gets id i; the special tokens follow, as in
    `build_tokenizer`; ``decode`` joins tokens with spaces. Unknown words raise at encoding time
    in the caller's checks (they map to no id: the tokenizer has no unknown token).

    Args:
        words: the vocabulary, unique, without whitespace and distinct from the special tokens.

    Returns:
        PreTrainedTokenizerFast with bos / eos = pad set, no mask_token, the chat template set.

    Raises:
        ValueError: an empty, duplicated, whitespace-containing or special word.
    """
    bad = [w for w in words if not w or w.split() != [w] or w in SPECIAL_TOKENS]
    if bad or len(set(words)) != len(words) or not words:
        raise ValueError(
            f"build_word_tokenizer: words must be unique, non-empty, without whitespace and not special "
            f"tokens (first offenders: {bad[:3] or 'duplicates'})"
        )
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> None:
    """Save `tokenizer` in the official LLaDA file layout.

    tokenizer_config.json names `PreTrainedTokenizerFast` (as LLaDA's does) instead of
    transformers 5's `TokenizersBackend` and holds the chat template (not a separate
    chat_template.jinja), so transformers 4.x can load the folder too.
    """
    out_dir = Path(out_dir)
    tokenizer.save_pretrained(out_dir)
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg.pop("backend", None)
    cfg["add_bos_token"] = tokenizer.bos_token_id in tokenizer("")["input_ids"]
    if tokenizer.chat_template:
        cfg["chat_template"] = tokenizer.chat_template
        (out_dir / "chat_template.jinja").unlink(missing_ok=True)
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
