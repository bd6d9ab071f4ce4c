import os

import pytest

from numpyro_fsdiff._io import append_text, atomic_path, write_text


def test_atomic_write_replaces_whole_file_with_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "report.md"
    write_text(target, "first\n")
    write_text(target, "second\n")
    assert target.read_text() == "second\n"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["report.md"]


def test_interrupted_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "weights.eqx"
    write_text(target, "good")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.eqx"]


def test_append_keeps_what_was_there_and_creates_missing_files(tmp_path):
    target = tmp_path / "new" / "results.md"
    append_text(target, "run 1\n")
    append_text(target, "run 2\n")
    assert target.read_text() == "run 1\nrun 2\n"
    assert [p.name for p in target.parent.iterdir()] == ["results.md"]
