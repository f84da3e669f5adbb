"""Folder names that are never part of a code/text corpus (light module: no `datasets` import)."""

SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", ".git", ".venv"})
"""Folder names never searched for corpus files (installed packages, caches, VCS)."""

STDLIB_EXCLUDE = SKIP_DIRS | {"test", "tests"}
"""`SKIP_DIRS` plus the standard library's own test suite (the `stdlib` source, tokenizer corpora)."""
