"""Live recording with bcc. Imported only by `mmreplay record` and `mmreplay doctor`."""

from pathlib import Path

try:  # installed: bpf/ ships as the package data of tracer.bpf
    from tracer.bpf import BPF_DIR
except ImportError:  # a source checkout on PYTHONPATH, not installed
    BPF_DIR = Path(__file__).resolve().parents[1] / "bpf"

__all__ = ["BPF_DIR"]
