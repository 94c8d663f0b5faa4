"""Run directories and run.json."""

from __future__ import annotations

import json
import re
import socket
from datetime import datetime, timedelta, timezone

import numpy
import pytest

import harness
from harness.rundir import RUN_INFO, RunDirError, new_run_dir, read_run_info, write_run_info

RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")


def test_new_run_dir_is_unique_and_named_by_utc_time(tmp_path):
    base = tmp_path / "runs"
    dirs = [new_run_dir(base) for _ in range(50)]
    assert len(set(dirs)) == 50
    for d in dirs:
        assert d.is_dir() and d.parent == base and RUN_ID.match(d.name), d.name
    stamp = datetime.strptime(dirs[0].name[:15], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
    assert abs(datetime.now(timezone.utc) - stamp) < timedelta(minutes=1)


def test_named_run_dir_refuses_non_empty_unless_told(tmp_path):
    d = new_run_dir(tmp_path, "nightly")
    assert d == tmp_path / "nightly" and d.is_dir()
    assert new_run_dir(tmp_path, "nightly") == d  # empty: reusable
    (d / "capture.db").write_bytes(b"x")
    with pytest.raises(RunDirError, match="nightly"):
        new_run_dir(tmp_path, "nightly")
    assert new_run_dir(tmp_path, "nightly", overwrite=True) == d
    assert (d / "capture.db").read_bytes() == b"x"  # reuse never deletes files itself


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "../escape"])
def test_bad_run_ids_are_refused(tmp_path, bad):
    with pytest.raises(RunDirError, match="bad run id"):
        new_run_dir(tmp_path, bad)


def test_write_and_read_run_info(tmp_path):
    d = new_run_dir(tmp_path)
    info = write_run_info(d, command=["shadowline", "run", "s.yaml"], seed=42,
                          extra={"scenario": "s.yaml"})
    on_disk = json.loads((d / RUN_INFO).read_text())
    assert on_disk == info == read_run_info(d)
    assert info["run_id"] == d.name
    assert info["argv"] == ["shadowline", "run", "s.yaml"]
    assert info["seed"] == 42
    assert info["hostname"] == socket.gethostname()
    started = datetime.fromisoformat(info["started_at"])
    assert started.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - started) < timedelta(minutes=1)
    v = info["versions"]
    assert v["shadowline"] == harness.__version__
    assert v["numpy"] == numpy.__version__
    assert v["python"].count(".") == 2 and v["platform"]
    assert {"httptools", "uvloop"} <= set(v)
    assert info["extra"] == {"scenario": "s.yaml"}
    assert not list(d.glob("*.tmp"))


def test_seed_none_and_no_extra(tmp_path):
    info = write_run_info(tmp_path, command=[], seed=None)
    assert info["seed"] is None and info["extra"] == {}
    assert read_run_info(tmp_path)["seed"] is None


def test_read_run_info_errors_name_the_file(tmp_path):
    with pytest.raises(RunDirError, match=r"run\.json: not found"):
        read_run_info(tmp_path)
    (tmp_path / RUN_INFO).write_text("{not json")
    with pytest.raises(RunDirError, match=re.escape(str(tmp_path / RUN_INFO))):
        read_run_info(tmp_path)
    (tmp_path / RUN_INFO).write_text("[1, 2]")
    with pytest.raises(RunDirError, match="not a Shadowline run.json"):
        read_run_info(tmp_path)
    assert issubclass(RunDirError, ValueError)


def test_a_second_writer_keeps_the_first_record_and_adds_its_command(tmp_path):
    first = write_run_info(tmp_path, command=["shadowline", "demo"], seed=3, extra={"demo": {"protocol": "grpc"}})
    second = write_run_info(tmp_path, command=["shadowline", "proxy", "grpc"], seed=3, extra={"proxy": "grpc", "demo": "x"})
    stored = read_run_info(tmp_path)
    assert stored == second
    assert stored["argv"] == first["argv"] == ["shadowline", "demo"] and stored["pid"] == first["pid"]
    assert stored["extra"] == {"demo": {"protocol": "grpc"}, "proxy": "grpc", "commands": [["shadowline", "proxy", "grpc"]]}
