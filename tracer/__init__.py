"""Live recording with bcc. Imported only by `mmreplay record` and `mmreplay doctor`."""

from pathlib import Path

# A source checkout (this tracer/ beside its bpf/, e.g. a worktree on PYTHONPATH) uses its own
# bpf/: under an editable install of another checkout, `tracer.bpf` would resolve to *that*
# checkout's files and silently load its programs instead of these.
_CHECKOUT_BPF = Path(__file__).resolve().parents[1] / "bpf"
if (_CHECKOUT_BPF / "mmr_common.h").is_file():
    BPF_DIR = _CHECKOUT_BPF
else:  # installed: bpf/ ships as the package data of tracer.bpf
    from tracer.bpf import BPF_DIR

__all__ = ["BPF_DIR"]
