"""Live recording with bcc. Imported only by `mmreplay record` and `mmreplay doctor`."""

from pathlib import Path

# An install ships bpf/ and workloads/ as tracer.bpf and tracer.workloads
# (pyproject's package-dir). In a source checkout they sit beside tracer/, so
# the checkout root is searched for them too. Without this a checkout on
# PYTHONPATH would get another checkout's files through an editable install,
# and silently load its BPF programs instead of these.
_CHECKOUT = Path(__file__).resolve().parents[1]
if (_CHECKOUT / "bpf" / "mmr_common.h").is_file() and (_CHECKOUT / "workloads" / "__init__.py").is_file():
    __path__.append(str(_CHECKOUT))

from tracer.bpf import BPF_DIR  # noqa: E402

__all__ = ["BPF_DIR"]
