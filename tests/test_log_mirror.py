"""The TUI's copy of a log on another machine (logs/mirror.py), fed by the supervisor's own log_read reader
(supervisor/log_access.py) on real files: it follows appends, and starts over when the name means another
file (a relaunch rotated the logs) or the file shrank."""

from __future__ import annotations

from xllm_tui.logs.mirror import LogMirror, mirror_path
from xllm_tui.logs.tail import rotate_log
from xllm_tui.supervisor.log_access import read_log_file


def pull(mirror: LogMirror, path: str) -> bool:
    how = mirror.request()
    return mirror.apply(read_log_file(path, offset=how.get("offset"), lines=how.get("lines"), max_bytes=1 << 20))


def test_the_copy_follows_appends_and_starts_over_after_a_rotation(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    log = tmp_path / "node_3.log"
    log.write_text("first launch 1\nfirst launch 2\n")
    mirror = LogMirror(mirror_path(str(tmp_path / "run"), 3), 3)
    assert mirror.request() == {"rank": 3, "generation": 0, "lines": 2000}
    assert pull(mirror, str(log))
    with open(log, "a") as f:
        f.write("first launch 3\n")
    assert pull(mirror, str(log))
    assert open(mirror.path).read() == "first launch 1\nfirst launch 2\nfirst launch 3\n"

    rotate_log(str(log))  # the relaunch: node_3.log is a new file, longer than what was copied of the old one
    log.write_text("second launch 1\nsecond launch 2\nsecond launch 3\nsecond launch 4\n")
    assert pull(mirror, str(log))  # noticed by the inode: the copy starts over ...
    assert open(mirror.path).read() == ""
    pull(mirror, str(log))  # ... from the new file's last lines
    assert open(mirror.path).read() == log.read_text()

    log.write_text("truncated\n")
    assert pull(mirror, str(log)) and open(mirror.path).read() == ""
    pull(mirror, str(log))
    assert open(mirror.path).read() == "truncated\n"


def test_an_earlier_generation_has_a_copy_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    current, earlier = mirror_path("/run", 3), mirror_path("/run", 3, 1)
    assert current.endswith("/node_3.log") and earlier.endswith("/node_3.log.1")
    mirror = LogMirror(earlier, 3, 1)
    assert mirror.request()["generation"] == 1
    mirror.apply({"generations": 2, "missing": True})
    assert mirror.generations == 2
