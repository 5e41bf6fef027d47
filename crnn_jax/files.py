"""The one atomic writer: a file appears whole under its name or not at all (a kill, a full disk or an error
half-way leaves the previous file, or none, and no temporary behind)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import IO, Any


@contextlib.contextmanager
def atomic(path: str, mode: str = "w", **open_kw: Any) -> Iterator[IO]:
    """`with atomic(path) as f: f.write(...)`: writes a temporary beside `path` and renames it over `path`
    when the block ends without an error; on an error the temporary is removed and `path` is untouched."""
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, mode, **open_kw) as f:
            yield f
            f.flush()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def unwritable(path: str) -> str | None:
    """Why the file `path` cannot be created (its folder is missing or read-only), or None when it can."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"no such folder {folder}"
    return None if os.access(folder, os.W_OK) else f"the folder {folder} is not writable"


def write_json(path: str, doc: Any, indent: int | None = 1) -> None:
    """`doc` as JSON at `path`, atomically."""
    with atomic(path) as f:
        json.dump(doc, f, indent=indent)


def read_json(path: str) -> Any:
    """The JSON document at `path`; None when it is missing or not valid JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
