"""The compiled simulator is built at install time and loaded only when it is the right one.

setup.py compiles engine.c and flatten.c into extensions of replay.sim (wheels
carry them); nothing is compiled at run time and no code is loaded from a
cache. replay/sim/cbuild.py finds a part next to the package or in the
installed distribution, and refuses one built from another source or writable
by another user. Without the compiled parts ``engine="auto"`` runs the Python
reference and says so once; ``engine="c"`` is a one-line error.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from replay.policies import resolve
from replay.sim import SimConfig, cbuild, cengine, cflatten, simulate
from replay.sim.ops import Critical, LockRef, Thread, Workload

ROOT = Path(__file__).resolve().parents[1]


def _one_lock_workload() -> Workload:
    lock = LockRef("i_mmap_rwsem", 1)
    return Workload([Thread(tid=i, pid=1, ops=[Critical(lock, "write", 100)] * 50) for i in (1, 2)], cpus=2)


@pytest.fixture
def fresh(monkeypatch):
    """Forget the parts loaded so far, and the fallback warnings said."""
    monkeypatch.setattr(cengine, "_lib", None)
    monkeypatch.setattr(cflatten, "_module", None)
    monkeypatch.setattr(cbuild, "_warned", set())
    return monkeypatch


def _installed_library() -> Path:
    try:
        return cengine.library_path()
    except cengine.EngineUnavailable:
        pytest.skip("the compiled engine is not installed (pip install .)")


def _offer(monkeypatch, paths: list[Path]) -> None:
    """Make ``paths`` the only places cbuild looks."""
    monkeypatch.setattr(cbuild, "candidates", lambda stem: paths)


def test_an_installed_mmreplay_carries_both_compiled_parts_and_they_load():
    """After ``pip install .`` (the test command) the C tests must run, not be skipped."""
    if os.environ.get("MMREPLAY_PURE_PYTHON") == "1":
        pytest.skip("installed without the compiled parts on purpose")
    dists = list(importlib.metadata.distributions(name="mmreplay"))
    in_place = list((ROOT / "replay" / "sim").glob("_engine*.so"))
    if not dists and not in_place:
        pytest.skip("mmreplay is not installed and not built in place")
    assert cengine.available()
    assert cflatten.load().walk
    assert cengine.library_path().name == f"_engine{cbuild.ext_suffix()}"


def test_without_the_compiled_parts_auto_runs_python_saying_so_once_and_c_is_a_one_line_error(fresh, tmp_path,
                                                                                              capsys):
    _offer(fresh, [tmp_path / "absent.so"])
    w = _one_lock_workload()
    cfg = SimConfig(cpus=2, policy=resolve("current"), probe=False)
    reference = simulate(w, replace(cfg, engine="python"))
    for _ in range(2):
        assert simulate(w, cfg).metrics == reference.metrics
    err = capsys.readouterr().err
    assert err.count("using the Python engine") == 1 and err.count("flattening in Python") == 1
    assert len(err.splitlines()) == 2 and err.count("not installed") == 2 and err.count("pip install .") == 2
    with pytest.raises(cengine.EngineUnavailable, match=r"^the compiled engine is not installed .*pip install \."):
        simulate(w, replace(cfg, engine="c"))


@pytest.mark.parametrize("module, cache", [(cengine, "_lib"), (cflatten, "_module")])
def test_a_library_built_from_another_source_is_refused_with_the_command_that_rebuilds_it(fresh, tmp_path, module,
                                                                                         cache):
    try:
        module.load()
    except cengine.EngineUnavailable:
        pytest.skip("the compiled parts are not installed (pip install .)")
    fresh.setattr(module, cache, None)
    edited = tmp_path / module.SOURCE.name
    edited.write_text(module.SOURCE.read_text() + "\n/* edited after the install */\n")
    fresh.setattr(module, "SOURCE", edited)
    with pytest.raises(cengine.EngineUnavailable, match=f"built from another {edited.name}.*rebuild: pip install"):
        module.load()


def test_a_library_another_user_can_write_is_not_loaded(fresh, tmp_path):
    lib = _installed_library()
    shared = tmp_path / "shared"
    shared.mkdir()
    copy = shared / lib.name
    shutil.copy2(lib, copy)
    _offer(fresh, [copy])
    assert cengine.library_path() == copy  # the copy itself is fine
    shared.chmod(0o777)
    with pytest.raises(cengine.EngineUnavailable, match="writable by every user"):
        cengine.load()
    shared.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(copy, 4242, 4242)
        with pytest.raises(cengine.EngineUnavailable, match="belongs to uid 4242"):
            cengine.load()


def test_a_damaged_library_is_a_one_line_error_naming_it(fresh, tmp_path):
    lib = _installed_library()
    cut = tmp_path / lib.name
    cut.write_bytes(lib.read_bytes()[:100])  # a copy cut short
    _offer(fresh, [cut])
    with pytest.raises(cengine.EngineUnavailable, match=f"{cut}: records no source"):
        cengine.load()


def test_doctor_says_where_the_compiled_parts_are_and_what_to_install_if_they_are_not(fresh, tmp_path):
    from replay.cli.doctor import simulator_checks

    if cengine.available():
        first = simulator_checks()[0]
        assert (first.name, first.ok) == ("compiled engine", True) and str(cengine.library_path()) in first.reason
    fresh.setattr(cengine, "_lib", None)
    fresh.setattr(cflatten, "_module", None)
    _offer(fresh, [tmp_path / "absent.so"])
    checks = simulator_checks()
    assert [(c.name, c.ok) for c in checks] == [("compiled engine", False), ("compiled flattening", False)]
    assert all("Python code instead" in c.reason and "python3-dev" in c.fix for c in checks)


# -- setup.py ------------------------------------------------------------------------------------


def _setup_module(monkeypatch):
    monkeypatch.chdir(ROOT)  # the extensions name their sources relative to the project
    spec = importlib.util.spec_from_file_location("mmreplay_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines, does not run setup()
    return module


def _build(module, tmp_path: Path, extensions) -> None:
    from setuptools import Distribution

    dist = Distribution({"name": "mmreplay", "ext_modules": extensions, "cmdclass": {"build_ext": module.BuildExt}})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = str(tmp_path / "lib")
    cmd.build_temp = str(tmp_path / "tmp")
    cmd.ensure_finalized()
    cmd.run()


def test_install_without_a_compiler_stops_with_what_to_install_and_the_pure_python_way_out(monkeypatch, tmp_path):
    module = _setup_module(monkeypatch)
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(SystemExit) as e:
        _build(module, tmp_path, module.extensions())
    msg = str(e.value)
    assert msg.startswith("mmreplay: cannot build the compiled simulator: no C compiler")
    assert "/nonexistent/cc" in msg and "MMREPLAY_PURE_PYTHON=1" in msg
    monkeypatch.setenv("MMREPLAY_PURE_PYTHON", "1")
    assert module.extensions() == []


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler here")
def test_setup_builds_an_engine_that_records_its_source_and_loads(monkeypatch, tmp_path, fresh):
    module = _setup_module(monkeypatch)
    monkeypatch.delenv("CC", raising=False)
    engine = [x for x in module.extensions() if x.name == "replay.sim._engine"]
    _build(module, tmp_path, engine)
    built = tmp_path / "lib" / "replay" / "sim" / f"_engine{cbuild.ext_suffix()}"
    assert cbuild.built_sha256(built) == cbuild.source_sha256(cengine.SOURCE)
    _offer(fresh, [built])
    w = _one_lock_workload()
    cfg = SimConfig(cpus=2, policy=resolve("2.6.39"), seed=3)
    assert simulate(w, replace(cfg, engine="c")).metrics == simulate(w, replace(cfg, engine="python")).metrics
