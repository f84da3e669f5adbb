"""`python -m retrofit.bench ...` = `retrofit bench ...` (see `retrofit.commands.bench`)."""

from __future__ import annotations

import sys

from retrofit.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
