"""The data loaders' messages: one line each on stderr, prefixed "data: ", never garbling a progress bar."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def say(msg: str) -> None:
    """Print "data: <msg>" on stderr. Through tqdm.write: while a bar is drawn (ingest's), the line is
    printed above it instead of through it; without a bar it is a plain write."""
    tqdm.write(f"data: {msg}", file=sys.stderr)
    sys.stderr.flush()  # logs of long runs show each line as it happens
