"""Where mmreplay keeps what it builds on first use (the compiled simulator, the workload programs)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from replay.errors import MmreplayError


def cache_dir(name: str, env: str) -> Path:
    """The first writable (created if needed) of $``env``, $XDG_CACHE_HOME (or ~/.cache)/mmreplay/``name``
    and <tmp>/mmreplay-``name``-<uid>; with $``env`` set, only that. MmreplayError if none is."""
    explicit = os.environ.get(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    fallback = Path(tempfile.gettempdir()) / f"mmreplay-{name}-{os.getuid()}"
    candidates = (Path(explicit),) if explicit else (Path(base) / "mmreplay" / name, fallback)
    for candidate in candidates:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            if os.access(candidate, os.W_OK):
                return candidate
        except OSError:
            continue
    raise MmreplayError(f"no writable directory for mmreplay's {name} cache ({candidates[0]}; set {env})")
