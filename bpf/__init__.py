"""BPF C programs of the recorder; installed as tracer.bpf so their files ship with the package."""

from pathlib import Path

BPF_DIR = Path(__file__).resolve().parent
