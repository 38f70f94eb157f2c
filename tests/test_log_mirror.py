"""The TUI's copy of a log on another machine (logs/mirror.py), fed by the supervisor's own log_read reader
(supervisor/log_access.py) on real files: it follows appends, and starts over when the name means another
file (a relaunch rotated the logs) or the file shrank."""

from __future__ import annotations

import errno
import os

from xllm_tui.logs.mirror import LogMirror, mirror_path
from xllm_tui.logs.tail import rotate_log
from xllm_tui.supervisor.log_access import read_log_file


REMOTE_RANK = {"rank": 3, "remote": True, "machine": "m1", "log_path": "/logs/node_3.log", "state": "ready"}


def counting_pulls(monkeypatch) -> list[int]:
    """ticks[0] counts the remote pull timer's ticks (each call of RankLog._pull_remote)."""
    from xllm_tui.ui.widgets.rank_log import RankLog

    ticks = [0]
    pull = RankLog._pull_remote

    def counting_pull(self, **kwargs):
        ticks[0] += 1
        pull(self, **kwargs)

    monkeypatch.setattr(RankLog, "_pull_remote", counting_pull)
    return ticks


def one_pane_app(source):
    """An app of one RankLog, its log_read answered by `source`."""
    from textual.app import App

    from xllm_tui.ui.widgets.rank_log import RankLog

    class OnePane(App):
        def compose(self):
            yield RankLog(id="pane")

    app = OnePane()
    app.source = source
    return app


def pull(mirror: LogMirror, path: str) -> bool:
    how = mirror.request()  # as the supervisor's log_read does: 1 MiB unless asked for more (at most 4)
    return mirror.apply(read_log_file(path, offset=how.get("offset"), lines=how.get("lines"),
                                      max_bytes=min(how.get("max_bytes", 1 << 20), 4 << 20)))


def test_a_copy_far_behind_a_flooding_log_skips_to_its_last_lines_and_says_so(tmp_path, monkeypatch):
    """A rank on another machine writes faster than its copy follows (25 MB/s against a few MB/s through two
    supervisors and ssh): the copy used to fall minutes behind while the view looked live. Behind by more than
    SKIP_AFTER_BYTES it goes on from the file's last lines, and a line of its own says how much was skipped."""
    from xllm_tui.logs.mirror import CATCH_UP_BYTES, SKIP_AFTER_BYTES

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    log = tmp_path / "node_9.log"
    log.write_text("start-up line\n")
    mirror = LogMirror(mirror_path(str(tmp_path / "run"), 9), 9)
    assert pull(mirror, str(log)) and mirror.behind == 0
    line = "I1201 04:19:34.339349  7921 xllm_server.cpp:59] [verbose] request %08d step decode batch=32\n"
    with open(log, "a") as f:  # a flood: 20 MiB appended between two pulls
        f.write("".join(line % i for i in range(20 * 2**20 // len(line % 0))))
    assert pull(mirror, str(log))  # one 1 MiB step of copying: far behind now
    assert mirror.behind > SKIP_AFTER_BYTES
    assert mirror.request() == {"rank": 9, "generation": 0, "lines": 2000}
    assert pull(mirror, str(log))
    copy = open(mirror.path).read().splitlines()
    markers = [n for n, text in enumerate(copy) if text.startswith("[xllm-tui: ")]
    assert len(markers) == 1 and copy[-2000:] == log.read_text().splitlines()[-2000:]
    assert markers[0] == len(copy) - 2001
    skipped = log.stat().st_size - 2000 * len(line % 0) - (2**20 + len("start-up line\n"))
    assert f"{skipped / 2**20:.1f} MiB of this log skipped here" in copy[markers[0]]
    assert str(log) in copy[markers[0]] and "xllm-tui logs --rank 9" in copy[markers[0]]
    assert mirror.behind == 0 and mirror.skipped == skipped
    # Caught up: appends are copied on from where the skip left off, in bigger pulls while a little behind.
    with open(log, "a") as f:
        f.write("".join(line % i for i in range(2 * 2**20 // len(line % 0))) + "after the gap\n")
    assert mirror.request() == {"rank": 9, "generation": 0, "offset": log.stat().st_size - 2 * 2**20 // len(line % 0)
                                * len(line % 0) - len("after the gap\n")}
    assert pull(mirror, str(log)) and mirror.behind > 0
    assert mirror.request()["max_bytes"] == CATCH_UP_BYTES
    assert pull(mirror, str(log)) and mirror.behind == 0
    assert open(mirror.path).read().endswith(line % (2 * 2**20 // len(line % 0) - 1) + "after the gap\n")
    assert len([t for t in open(mirror.path).read().splitlines() if t.startswith("[xllm-tui: ")]) == 1


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


def test_a_reply_for_a_mirror_replaced_is_not_written_into_the_new_copy(tmp_path, monkeypatch):
    """`[` then `]` at once: the current log's copy is made anew while the old mirror's reply is on its way (its
    pull cancelled, its write in a thread). That write used to land in the new copy, doubling lines."""
    import threading

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    log = tmp_path / "node_3.log"
    log.write_text("line 1\nline 2\n")
    path = mirror_path(str(tmp_path / "run"), 3)
    old = LogMirror(path, 3)
    how = old.request()
    reply = read_log_file(str(log), offset=how.get("offset"), lines=how.get("lines"), max_bytes=1 << 20)
    old.retire()  # the viewer went to generation 1 and back: a new mirror of the same path
    new = LogMirror(path, 3)
    assert not old.apply(reply)
    assert open(path).read() == ""
    assert pull(new, str(log)) and open(path).read() == "line 1\nline 2\n"

    # A reply being written while the new mirror starts over: the new copy starts after that write, empty.
    writing, release = threading.Event(), threading.Event()
    real_apply = LogMirror._apply

    def slow_apply(self, part):
        writing.set()
        release.wait(10)
        return real_apply(self, part)

    monkeypatch.setattr(LogMirror, "_apply", slow_apply)
    third_reply = dict(reply, offset=new.next, data="line 3\n", next=new.next + 7)
    writer = threading.Thread(target=new.apply, args=(third_reply,))
    writer.start()
    assert writing.wait(10)
    new.retire()
    made: list[LogMirror] = []
    maker = threading.Thread(target=lambda: made.append(LogMirror(path, 3)))
    maker.start()
    release.set()
    writer.join(10)
    maker.join(10)
    assert made and open(path).read() == ""


async def test_a_slow_link_is_not_starved_by_the_pull_timer(tmp_path, monkeypatch):
    """A log_read reply slower than the pull timer: the pull waiting for it is left to finish, not cancelled and
    sent again at every tick (which never let a reply arrive on a slow link)."""
    import asyncio

    from conftest import until

    from xllm_tui.ui.widgets.rank_log import RankLog

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    class SlowLink:
        run_dir = str(tmp_path / "run")

        def __init__(self) -> None:
            self.requests = 0
            self.reply = asyncio.Event()

        async def action(self, op, **args):
            assert op == "log_read"
            self.requests += 1
            await self.reply.wait()
            return {"data": "a line from machine 1\n", "next": 22, "size": 22, "inode": 7}

    ticks = counting_pulls(monkeypatch)

    app = one_pane_app(SlowLink())
    async with app.run_test() as pilot:
        pane = app.query_one(RankLog)
        pane.show_rank(REMOTE_RANK)
        await until(pilot, lambda: ticks[0] >= 4, what="the pull timer ticking while the reply is awaited")
        assert app.source.requests == 1
        app.source.reply.set()
        await until(pilot, lambda: "a line from machine 1" in open(mirror_path(SlowLink.run_dir, 3)).read(),
                    what="the reply in the local copy")


async def test_a_hidden_view_pulls_nothing_until_it_shows_again(tmp_path, monkeypatch):
    """A rank on another machine whose log is hidden (another tab, a screen over it): its copy is not pulled,
    which under a flood cost both supervisors and the link 4 MiB every half second for nobody."""
    from conftest import until

    from xllm_tui.ui.widgets.rank_log import RankLog

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    class Link:
        run_dir = str(tmp_path / "run")
        requests = 0

        async def action(self, op, **args):
            Link.requests += 1
            line = b"a line from machine 1\n"
            offset = args.get("offset") or 0
            return {"data": line.decode(), "next": offset + len(line), "size": offset + len(line), "inode": 7}

    ticks = counting_pulls(monkeypatch)

    app = one_pane_app(Link())
    async with app.run_test() as pilot:
        pane = app.query_one(RankLog)
        pane.show_rank(REMOTE_RANK)
        await until(pilot, lambda: Link.requests >= 2, what="the copy pulled while shown")
        pane.log_widget.suspend()
        await until(pilot, lambda: pane._pull is None or pane._pull.is_finished, what="the pull under way done")
        asked, ticks[0] = Link.requests, 0
        await until(pilot, lambda: ticks[0] >= 4, what="the pull timer ticking while hidden")
        assert Link.requests == asked
        pane.log_widget.resume()
        await until(pilot, lambda: Link.requests > asked, what="pulled again once shown")


def test_the_last_lines_keep_an_unfinished_line_unfinished(tmp_path, monkeypatch):
    """The copy starts from the last lines while the rank is writing one: that line is continued by the next
    pull, not cut in two by a newline the file does not have."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    log = tmp_path / "node_3.log"
    log.write_bytes(b"one\ntwo\nthree\nhalf a li")
    part = read_log_file(str(log), offset=None, lines=2, max_bytes=1 << 20)
    assert part["data"] == "three\nhalf a li" and part["offset"] == len(b"one\ntwo\n") and part["next"] == log.stat().st_size
    assert read_log_file(str(log), offset=None, lines=9, max_bytes=1 << 20)["data"] == log.read_text()
    assert read_log_file(str(log), offset=None, lines=0, max_bytes=1 << 20)["data"] == ""
    mirror = LogMirror(mirror_path(str(tmp_path / "run"), 3), 3)
    assert pull(mirror, str(log))
    with open(log, "ab") as f:
        f.write(b"ne\nnext\n")
    assert pull(mirror, str(log))
    assert open(mirror.path).read().splitlines()[-2:] == ["half a line", "next"]


def test_a_copy_on_a_full_disk_stays_as_it_was_and_takes_the_reply_again_later(small_disk):
    from conftest import fill

    path = str(small_disk / "copies" / "node_3.log")
    mirror = LogMirror(path, 3)
    line = b"I20251129 15:21:00.000000 12345 a.cpp:1] from machine 1\n"
    mirror.apply({"data": line.decode(), "offset": 0, "next": len(line), "size": len(line), "inode": 7})
    filler = fill(small_disk)
    big = "x" * 100_000 + "\n"  # more than the last page's room
    reply = {"data": big, "offset": len(line), "next": len(line) + len(big), "size": len(line) + len(big), "inode": 7}
    try:
        mirror.apply(reply)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    else:
        raise AssertionError("the write should have failed")
    assert open(path, "rb").read() == line and mirror.next == len(line)  # not half of the reply
    assert mirror.request()["offset"] == len(line)  # asked again
    os.unlink(filler)
    assert mirror.apply(reply)
    assert open(path, "rb").read() == line + big.encode()


async def test_a_local_rank_shown_again_after_a_remote_one_shows_its_own_log(tmp_path, monkeypatch):
    """Local rank 1, then rank 3 on machine 1, then rank 1 again: the pane kept its choice of rank 1's file by
    (rank, pid, path) and gave back the path it showed last, rank 3's copy, under rank 1's title."""
    from conftest import until

    from xllm_tui.ui.widgets.rank_log import RankLog

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    local = tmp_path / "node_1.log"
    local.write_text("a line of rank 1\n")

    class Link:
        run_dir = str(tmp_path / "run")

        async def action(self, op, **args):
            line = b"a line from machine 1\n"
            offset = args.get("offset") or 0
            return {"data": line.decode(), "next": offset + len(line), "size": offset + len(line), "inode": 7}

    rank_1 = {"rank": 1, "log_path": str(local), "state": "ready", "pid": os.getpid()}
    app = one_pane_app(Link())
    async with app.run_test() as pilot:
        pane = app.query_one(RankLog)
        pane.show_rank(rank_1)
        await until(pilot, lambda: pane.log_widget.path == str(local), what="rank 1's log")
        pane.show_rank(REMOTE_RANK)
        await until(pilot, lambda: pane.log_widget.path != str(local), what="rank 3's copy")
        pane.show_rank(rank_1)
        await until(pilot, lambda: pane.rank == 1, what="rank 1 again")
        assert pane.path == pane.log_widget.path == str(local)


async def test_a_full_disk_under_a_remote_log_copy_is_said_once_and_the_tui_goes_on(small_disk, monkeypatch):
    """The pull that failed to write its copy raised out of its worker, which ended the TUI."""
    from conftest import fill, until

    from xllm_tui.ui.widgets.log_view import LogView
    from xllm_tui.ui.widgets.rank_log import RankLog

    monkeypatch.setenv("XDG_CACHE_HOME", str(small_disk / "cache"))
    text = "I20251129 15:21:00.000000 12345 a.cpp:1] " + "y" * 200 + "\n"

    class Link:
        run_dir = str(small_disk / "run")
        requests = 0

        async def action(self, op, **args):
            Link.requests += 1
            return {"data": text * 400, "offset": 0, "next": len(text) * 400, "size": len(text) * 400, "inode": 7}

    app = one_pane_app(Link())
    notes = []
    app.notify = lambda message, **kwargs: notes.append(message)
    (small_disk / "cache").mkdir()
    filler = fill(small_disk)
    async with app.run_test() as pilot:
        pane = app.query_one(RankLog)
        pane.show_rank(REMOTE_RANK)
        await until(pilot, lambda: Link.requests >= 3, what="pulls failing to write, again and again")
        assert app.is_running and len(notes) == 1 and "No space left on device" in notes[0]
        os.unlink(filler)
        view = pane.log_widget
        assert isinstance(view, LogView)
        await until(pilot, lambda: view.line_count == 400, what="the copy written once there is room")
