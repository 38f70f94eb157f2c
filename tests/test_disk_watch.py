"""The room left where the logs are (supervisor/disk_watch.py): levels, the filling rate, time to full, and how
status and the TUI's status line show them."""

from __future__ import annotations

import os

from xllm_tui.commands.lifecycle import format_disks
from xllm_tui.supervisor.disk_watch import CLEAR_FRACTION, FULL_BYTES, DiskGauge, read_room
from xllm_tui.ui.widgets.status_bar import status_line

GIB = 1 << 30


def test_a_disk_filling_fast_is_low_before_it_is_nearly_full_and_says_when_it_will_be():
    gauge = DiskGauge(["/data/logs"])
    assert not gauge.add(50 * GIB, 100 * GIB, 0.0) and gauge.level == "ok"
    # 25 MB/s of logs (a rank on verbose): 50 GiB lasts about 35 min, under the 30 min mark soon after.
    t, free = 0.0, 50 * GIB
    while gauge.level == "ok":
        t += 10
        free -= 250 << 20
        gauge.add(free, 100 * GIB, t)
    assert gauge.level == "low" and free > 40 * GIB  # long before 5 % free
    assert 25 * 60 < gauge.full_in_s < 30 * 60 and round(gauge.rate) == 250 * (1 << 20) // 10
    assert "full in about" in gauge.describe() and "/s" in gauge.describe()
    assert gauge.to_dict()["level"] == "low" and gauge.to_dict()["full_in_s"] == round(gauge.full_in_s)


def test_levels_full_then_back_to_ok_only_with_room_to_spare():
    gauge = DiskGauge(["/data/logs"])
    gauge.add(10 * GIB, 100 * GIB, 0.0)
    assert gauge.add(FULL_BYTES - 1, 100 * GIB, 10.0) and gauge.level == "full"
    assert gauge.add(6 * GIB, 100 * GIB, 20.0) and gauge.level == "low"  # room, but not enough to be at ease
    assert not gauge.add(int((CLEAR_FRACTION - 0.01) * 100 * GIB), 100 * GIB, 200.0) and gauge.level == "low"
    assert gauge.add(30 * GIB, 100 * GIB, 400.0) and gauge.level == "ok"


def test_a_quiet_disk_with_little_room_is_low_and_a_disk_that_frees_has_no_rate():
    gauge = DiskGauge(["/data/logs"])
    gauge.add(3 * GIB, 100 * GIB, 0.0)
    assert gauge.level == "low" and gauge.full_in_s is None  # 3 %: low, however slowly it fills
    gauge.add(4 * GIB, 100 * GIB, 10.0)
    assert gauge.rate is None


def test_directories_on_one_filesystem_are_one_disk(tmp_path):
    (tmp_path / "logs").mkdir()
    room = read_room({str(tmp_path), str(tmp_path / "logs"), str(tmp_path / "missing")})
    assert len(room) == 1
    (paths, free, total), = room.values()
    assert paths == [str(tmp_path), str(tmp_path / "logs")] and 0 < free <= total


def test_status_and_the_status_line_show_a_disk_only_when_it_is_low_or_full():
    ok = {"paths": ["/a"], "level": "ok", "free": 50 * GIB, "total": 100 * GIB, "rate": None, "full_in_s": None}
    low = {"paths": ["/data/logs"], "level": "low", "free": 2 * GIB, "total": 100 * GIB, "rate": 1e6,
           "full_in_s": 2147}
    full = {"paths": ["/data/logs", "/run"], "level": "full", "free": 4096, "total": 100 * GIB, "rate": None,
            "full_in_s": None}
    assert format_disks([ok]) == []
    assert format_disks([low]) == ["disk low: /data/logs: 2.0G left (2.0% free), full in about 35m47s"]
    assert format_disks([full]) == ["disk full: /data/logs, /run: 4K left (0.0% free)"]
    snapshot = {"profile": {"name": "p"}, "group": {"state": "ready", "reason": ""}, "ranks": [],
                "supervisor": {"disks": [ok]}}
    assert "disk" not in status_line(snapshot, 0.0, {}).plain
    snapshot["supervisor"]["disks"] = [low]
    assert "disk low: 2.0G left, full in 35m" in status_line(snapshot, 0.0, {}).plain
    snapshot["supervisor"]["disks"] = [full]
    assert "disk full: 4K left" in status_line(snapshot, 0.0, {}).plain


def test_a_one_off_copy_is_not_a_filling_rate():
    gauge = DiskGauge(["/data/logs"])
    gauge.add(60 * GIB, 100 * GIB, 0.0)
    gauge.add(20 * GIB, 100 * GIB, 10.0)  # 40 GiB copied at once
    assert gauge.level == "low" and gauge.full_in_s is not None
    gauge.add(20 * GIB, 100 * GIB, 20.0)  # and nothing since
    assert gauge.rate is None and gauge.level == "ok"


def test_a_disk_filling_on_another_machine_is_shown_with_its_name():
    low = {"paths": ["/data/logs"], "level": "low", "free": 2 * GIB, "total": 100 * GIB, "rate": None,
           "full_in_s": None}
    machines = [{"name": "", "host": "", "state": "local", "disks": []},
                {"name": "node1", "host": "11.87.49.111", "state": "connected", "disks": [low]}]
    snapshot = {"profile": {"name": "p"}, "group": {"state": "ready", "reason": ""}, "ranks": [],
                "supervisor": {"disks": []}, "machines": machines}
    assert "disk low on node1: 2.0G left" in status_line(snapshot, 0.0, {}).plain
    assert format_disks([low], machine="node1") == ["disk low on machine node1: /data/logs: 2.0G left (2.0% free)"]


def test_deleted_logs_still_written_are_found_with_their_ranks(tmp_path):
    """logs/ cleared to make room frees nothing while the ranks write on into the deleted files: say how much
    is held and by which ranks."""
    import subprocess
    import sys

    from conftest import wait_until
    from xllm_tui.supervisor.disk_watch import deleted_logs_held

    logs = [tmp_path / f"node_{r}.log" for r in range(2)]
    writers = []
    for log in logs:
        with open(log, "wb") as out:
            writers.append(subprocess.Popen([sys.executable, "-c", "import sys; sys.stdout.write('x' * 100000); "
                                             "sys.stdout.flush(); sys.stdin.read()"], stdin=subprocess.PIPE,
                                            stdout=out))
    try:
        wait_until(lambda: all(log.stat().st_size == 100000 for log in logs), 10, what="the logs written")
        pids = {r: w.pid for r, w in enumerate(writers)}
        assert deleted_logs_held(pids) == {}
        logs[1].unlink()
        held = deleted_logs_held(pids)
        dev = os.stat(tmp_path).st_dev
        assert list(held) == [dev] and held[dev][1] == [1] and held[dev][0] >= 100000
    finally:
        for w in writers:
            w.stdin.close()
            w.wait(10)


def test_the_held_bytes_are_said_in_status_the_status_line_and_the_event_text():
    full = {"paths": ["/data/logs"], "level": "full", "free": 4096, "total": 100 * GIB, "rate": None,
            "full_in_s": None, "held_bytes": 3 * GIB, "held_by": [0, 3]}
    assert format_disks([full]) == ["disk full: /data/logs: 4K left (0.0% free); 3.0G in deleted logs that "
                                    "rank(s) 0, 3 still write (freed when they exit, or by `: > /proc/PID/fd/1`)"]
    snapshot = {"profile": {"name": "p"}, "group": {"state": "ready", "reason": ""}, "ranks": [],
                "supervisor": {"disks": [full]}}
    assert "disk full: 4K left, 3.0G in deleted logs" in status_line(snapshot, 0.0, {}).plain
    gauge = DiskGauge(["/data/logs"], held_bytes=3 * GIB, held_by=[0, 3])
    gauge.add(4096, 100 * GIB, 0.0)
    assert "3.0G of it in deleted logs that rank(s) 0, 3 still write" in gauge.describe()
