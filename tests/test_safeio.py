"""Root-safe output: what a hostile local user can plant where root writes, and what mmreplay refuses.

The tests run as root (CI does) and play sudo with SUDO_UID/SUDO_GID, so that "the invoking user" is
someone other than root; without root they are skipped (chown needs it).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from replay.cli.main import main
from replay.errors import TraceError
from replay.trace import Trace, TraceWriter, write_trace
from replay.trace.safeio import check_file, invoking_user, write_file

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant files of other users")

USER, GROUP = 4711, 4712  # the sudo user
OTHER = 4242  # the attacker


@pytest.fixture(autouse=True)
def sudo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUDO_UID", str(USER))
    monkeypatch.setenv("SUDO_GID", str(GROUP))


def _faults(n: int) -> dict[str, np.ndarray]:
    from tests.test_trace_format import _faults as faults

    return faults(n)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A root-only 0600 file that an attacker wants root to overwrite and hand over."""
    v = tmp_path / "shadow"
    v.write_text("secret\n")
    v.chmod(0o600)
    return v


def _untouched(victim: Path) -> None:
    st = victim.lstat()
    assert victim.read_text() == "secret\n"
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)


def _mkdir(path: Path, uid: int, mode: int = 0o755) -> Path:
    path.mkdir()
    os.chown(path, uid, uid)
    path.chmod(mode)
    return path


def test_the_invoking_user_is_the_sudo_user() -> None:
    assert invoking_user() == (USER, GROUP)


def test_a_new_trace_and_its_new_parents_belong_to_the_invoking_user(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "trace"
    write_trace(out, {"page_faults": _faults(10)})
    for p in (tmp_path / "a", tmp_path / "a" / "b", out, *out.iterdir()):
        st = p.lstat()
        assert (st.st_uid, st.st_gid) == (USER, GROUP), p
    assert tmp_path.stat().st_uid == 0  # what existed before is left as it was
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "page_faults.arrow"]
    assert Trace.open(out).rows("page_faults") == 10


def test_a_planted_manifest_tmp_link_in_a_foreign_directory_is_refused(tmp_path: Path, victim: Path) -> None:
    # The attack of issue 14: an empty-looking directory of another user with a link where the writer
    # puts its temporary manifest.
    out = _mkdir(tmp_path / "out", OTHER, 0o777)
    (out / "manifest.json.tmp").symlink_to(victim)
    with pytest.raises(TraceError, match="uid 4242"):
        write_trace(out, {"page_faults": _faults(10)})
    _untouched(victim)


def test_an_empty_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    out = _mkdir(tmp_path / "out", OTHER)
    with pytest.raises(TraceError, match="belongs to uid 4242, not to the invoking user"):
        TraceWriter(out)
    assert list(out.iterdir()) == []


def test_a_directory_everyone_can_write_is_refused(tmp_path: Path) -> None:
    out = _mkdir(tmp_path / "out", USER, 0o777)
    with pytest.raises(TraceError, match="writable by every user"):
        TraceWriter(out)


def test_an_empty_directory_of_the_invoking_user_is_used(tmp_path: Path) -> None:
    out = _mkdir(tmp_path / "out", USER)
    write_trace(out, {"page_faults": _faults(3)})
    assert all(p.stat().st_uid == USER for p in out.iterdir())


def test_an_output_path_that_is_a_link_is_refused(tmp_path: Path, victim: Path) -> None:
    target = _mkdir(tmp_path / "target", USER)
    (tmp_path / "out").symlink_to(target)
    with pytest.raises(TraceError, match="symbolic link"):
        TraceWriter(tmp_path / "out")
    assert list(target.iterdir()) == []


def test_a_link_planted_in_a_trace_is_not_deleted_through_or_followed_with_force(tmp_path: Path,
                                                                                   victim: Path) -> None:
    out = tmp_path / "t"
    write_trace(out, {"page_faults": _faults(3)})
    (out / "page_faults.arrow").unlink()
    (out / "page_faults.arrow").symlink_to(victim)
    with pytest.raises(TraceError, match="not a regular file"):
        write_trace(out, {"page_faults": _faults(3)}, force=True)
    _untouched(victim)


def test_a_link_planted_while_writing_is_not_followed(tmp_path: Path, victim: Path) -> None:
    out = tmp_path / "t"
    w = TraceWriter(out)
    (out / "page_faults.arrow").symlink_to(victim)  # planted after the directory was made
    with pytest.raises(TraceError, match="cannot create"):
        w.write("page_faults", _faults(3))
    _untouched(victim)


def test_force_replaces_only_a_trace_with_nothing_else_in_it(tmp_path: Path) -> None:
    out = tmp_path / "t"
    write_trace(out, {"page_faults": _faults(3)})
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TraceError, match="'notes.txt', which mmreplay did not write"):
        write_trace(out, {"page_faults": _faults(5)}, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    write_trace(out, {"page_faults": _faults(5)}, force=True)
    assert Trace.open(out).rows("page_faults") == 5


def test_force_never_replaces_the_input_of_the_same_command(tmp_path: Path) -> None:
    t = tmp_path / "t"
    write_trace(t, {"page_faults": _faults(3)})
    Trace.open(t)  # this process now reads it
    with pytest.raises(TraceError, match="is an input of this command"):
        write_trace(t, {"page_faults": _faults(5)}, force=True)
    assert Trace.open(t).rows("page_faults") == 3


def test_synth_fit_onto_its_own_input_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = tmp_path / "t"
    assert main(["synth", "mmap1_threads", "-o", str(t), "--tasks", "2", "--seconds", "0.01"]) == 0
    before = sorted((p.name, p.stat().st_mtime_ns) for p in t.iterdir())
    assert main(["synth", "mmap1_threads", "-o", str(t), "--fit", str(t), "--force", "--seconds", "0.01"]) == 2
    assert "is an input of this command" in capsys.readouterr().err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in t.iterdir()) == before


def test_report_files_are_never_written_through_links_or_over_files_mmreplay_did_not_write(
        tmp_path: Path, victim: Path) -> None:
    os.chown(tmp_path, USER, GROUP)
    page = tmp_path / "r.html"
    page.symlink_to(victim)
    with pytest.raises(TraceError, match="symbolic link"):
        write_file(page, b"<!DOCTYPE html>", force=True)
    _untouched(victim)
    page.unlink()
    page.write_text("my notes")
    os.chown(page, USER, GROUP)
    with pytest.raises(TraceError, match="exists; use --force"):
        check_file(page)
    with pytest.raises(TraceError, match="not written by mmreplay"):
        check_file(page, force=True, ours=lambda head: head.startswith(b"<!DOCTYPE html>"))
    page.write_text("<!DOCTYPE html>old")
    write_file(page, b"<!DOCTYPE html>new", force=True, ours=lambda head: head.startswith(b"<!DOCTYPE html>"))
    assert page.read_text() == "<!DOCTYPE html>new"
    assert (page.stat().st_uid, page.stat().st_gid) == (USER, GROUP)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "shadow"]  # no temporary file left


def test_the_cli_names_the_refusal_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _mkdir(tmp_path / "out", OTHER)
    assert main(["synth", "mmap1_threads", "-o", str(out), "--tasks", "2", "--seconds", "0.01"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "belongs to uid 4242" in err


def test_replay_onto_its_own_input_is_refused_before_replaying(tmp_path: Path, capsys) -> None:
    t = tmp_path / "t"
    assert main(["synth", "mmap1_threads", "-o", str(t), "--tasks", "2", "--seconds", "0.01"]) == 0
    before = sorted((p.name, p.stat().st_mtime_ns) for p in t.iterdir())
    capsys.readouterr()
    assert main(["replay", str(t), "-o", str(t), "--force", "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is an input of this command; refusing to replace it" in err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in t.iterdir()) == before
