import os

import pytest

from trc.io import atomic_write, write_guard


def test_atomic_write_replaces_whole_file_with_plain_mode(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    atomic_write(path, lambda tmp: open(tmp, "w").write("new"))
    assert path.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")

    def fail(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_write_guard_refuses_writes_inside_its_block_only(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    calls = []

    def refuse():
        calls.append(1)
        raise RuntimeError("not ours any more")

    with write_guard(refuse):
        with pytest.raises(RuntimeError, match="not ours"):
            atomic_write(path, lambda tmp: open(tmp, "w").write("new"))
    assert calls == [1] and path.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]
    atomic_write(path, lambda tmp: open(tmp, "w").write("new"))   # outside the block: written
    assert path.read_text() == "new" and calls == [1]
