"""FileWatch: one file's writes, truncation and rotation are seen; other files in its directory are not."""

from __future__ import annotations

import os
import select

from xllm_tui.logs.inotify import FileWatch


def readable(watch: FileWatch, timeout: float = 5.0) -> bool:
    return bool(select.select([watch.fd], [], [], timeout)[0])


def settled(watch: FileWatch) -> bool:
    """Whatever is queued concerns the file or not; nothing more arrives within a short bounded wait."""
    return not readable(watch, 0.05) or not watch.changed()


def test_appends_truncation_and_rotation_are_seen(tmp_path):
    path = tmp_path / "node_0.log"
    path.write_text("first\n")
    watch = FileWatch(str(path))
    try:
        assert not readable(watch, 0)
        with open(path, "a") as f:
            f.write("second\n")
        assert readable(watch) and watch.changed()
        os.truncate(path, 0)
        assert readable(watch) and watch.changed()
        os.rename(path, str(path) + ".1")
        assert readable(watch) and watch.changed()
        path.write_text("new file\n")
        assert readable(watch) and watch.changed()
        assert settled(watch)
        with open(path, "a") as f:  # the new inode is watched too
            f.write("more\n")
        assert readable(watch) and watch.changed()
    finally:
        watch.close()


def test_other_files_of_the_directory_do_not_count(tmp_path):
    path = tmp_path / "node_0.log"
    other = tmp_path / "node_1.log"
    other.write_text("x\n")
    watch = FileWatch(str(path))  # not there yet
    try:
        with open(other, "a") as f:
            f.write("y\n")
        assert settled(watch)  # the other file's write, if queued at all, is not the watched file's
        path.write_text("appeared\n")
        assert readable(watch) and watch.changed()
    finally:
        watch.close()


def test_a_watch_moved_to_another_file_sees_that_file_only(tmp_path):
    first, second = tmp_path / "node_0.log", tmp_path / "node_1.log"
    elsewhere = tmp_path / "other" / "node_2.log"
    elsewhere.parent.mkdir()
    for path in (first, second, elsewhere):
        path.write_text("x\n")
    watch = FileWatch(str(first))
    fd = watch.fd
    try:
        with open(first, "a") as f:
            f.write("queued before the move\n")
        watch.watch(str(second))
        assert watch.fd == fd  # the same descriptor: nothing closed
        assert settled(watch)  # the first file's queued write is not the second's
        with open(first, "a") as f:
            f.write("y\n")
        assert settled(watch)
        with open(second, "a") as f:
            f.write("y\n")
        assert readable(watch) and watch.changed()
        watch.watch(str(elsewhere))  # another directory
        with open(second, "a") as f:
            f.write("z\n")
        assert settled(watch)
        os.rename(elsewhere, str(elsewhere) + ".1")  # its rotation is seen through its own directory
        assert readable(watch) and watch.changed()
    finally:
        watch.close()


def test_after_lost_events_a_replaced_file_is_watched(tmp_path):
    """A queue overflow may have eaten the IN_CREATE of a rotation: the file's new inode is watched all the same."""
    from xllm_tui.logs.inotify import IN_Q_OVERFLOW, InotifyEvent

    path = tmp_path / "node_0.log"
    path.write_text("x\n")
    watch = FileWatch(str(path))
    try:
        os.rename(path, str(path) + ".1")
        path.write_text("new file\n")
        assert readable(watch)
        watch._inotify.drain()  # what the overflow lost
        real = watch._inotify.read_events
        watch._inotify.read_events = lambda: [InotifyEvent(-1, IN_Q_OVERFLOW, "")]
        assert watch.changed()
        watch._inotify.read_events = real
        with open(path, "a") as f:
            f.write("more\n")
        assert readable(watch) and watch.changed()
    finally:
        watch.close()


def test_listen_calls_back_on_the_event_loop_until_unlisten(tmp_path):
    import asyncio

    path = tmp_path / "node_0.log"
    path.write_text("x\n")
    other = tmp_path / "node_1.log"

    async def scenario() -> list[str]:
        watch = FileWatch(str(path))
        seen: list[str] = []
        changed = asyncio.Event()
        watch.listen(lambda: (seen.append("change"), changed.set()))
        watch.listen(lambda: seen.append("a second callback"))  # already listening: ignored
        assert watch.listening
        other.write_text("not the watched file\n")
        with open(path, "a") as f:
            f.write("y\n")
        await asyncio.wait_for(changed.wait(), 5)
        watch.unlisten()
        assert not watch.listening
        before = len(seen)  # the write's events may have come in more than one read
        control, control_changed = FileWatch(str(path)), asyncio.Event()
        control.listen(control_changed.set)  # a watch still listening: its callback runs in the same loop turn
        with open(path, "a") as f:
            f.write("z\n")
        await asyncio.wait_for(control_changed.wait(), 5)
        control.close()
        assert len(seen) == before
        watch.listen(changed.set)
        watch.close()  # closing while listening takes the descriptor off the loop first
        assert not watch.listening
        return seen

    seen = asyncio.run(scenario())
    assert seen and set(seen) == {"change"}


def test_a_directory_deleted_or_moved_away_is_watched_again_once_back(tmp_path):
    """An operator clears logs/ (or moves it aside) before a restart, the log still open or not: the watch
    says it lost the name, rewatch() fails until a directory of that name exists, and then the new file of the
    name is seen."""
    import shutil

    import pytest

    logs = tmp_path / "logs"
    away = {"deleted": lambda: shutil.rmtree(logs), "moved": lambda: os.rename(logs, tmp_path / "logs.old")}
    for how, held_open in [(h, o) for h in away for o in (False, True)]:
        logs.mkdir()
        path = logs / "node_0.log"
        path.write_text("first\n")
        holder = open(path) if held_open else None  # a reader of the old file keeps its directory's inode
        watch = FileWatch(str(path))
        try:
            away[how]()
            while not watch.lost:
                assert readable(watch), f"{how} (held open: {held_open}): the name's going was not reported"
                watch.changed()
            if how == "deleted":
                with pytest.raises(OSError):
                    watch.rewatch()
            logs.mkdir()
            watch.rewatch()
            assert not watch.lost
            path.write_text("the new run\n")
            assert readable(watch) and watch.changed()
            with open(path, "a") as f:
                f.write("more\n")
            assert readable(watch) and watch.changed()
        finally:
            watch.close()
            if holder:
                holder.close()
        shutil.rmtree(tmp_path / "logs.old", ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)
