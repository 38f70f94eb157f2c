"""The log loop's wake-up: a write in a watched directory wakes it, nothing else does; a burst is one wake-up."""

from __future__ import annotations

import asyncio

from xllm_tui.supervisor.logwake import LogWake


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_a_write_wakes_the_loop_and_silence_does_not(tmp_path):
    log = tmp_path / "node_0.log"
    log.write_text("")

    async def scenario():
        wake = LogWake()
        wake.watch({str(tmp_path)})
        assert wake.watching and wake.take_growth()  # the first round reads what was there before
        assert not wake.take_growth()  # nothing written since: an idle round reads nothing
        waiter = asyncio.ensure_future(wake.wait(tick=600))
        await asyncio.sleep(0)
        assert not waiter.done()
        with open(log, "a") as f:
            f.write("I1129 line\n")
        await waiter  # well before the tick (the test's own timeout is 20 s)
        assert wake.take_growth() and not wake.take_growth()
        wake.close()

    run(scenario())


def test_a_burst_of_writes_is_one_wake_up(tmp_path):
    log = tmp_path / "node_0.log"

    async def scenario():
        wake = LogWake()
        wakes = 0
        original = wake._on_event

        def counting():
            nonlocal wakes
            wakes += 1
            original()

        wake._on_event = counting  # what listen() hands to the event loop
        wake.watch({str(tmp_path)})
        wake.take_growth()
        with open(log, "a") as f:
            for i in range(200):
                f.write(f"I1129 line {i}\n")
                f.flush()  # 200 writes, 200 inotify events, the event loop running between them
                for _ in range(3):
                    await asyncio.sleep(0)
        await wake.wait(tick=600)
        assert wake.take_growth() and wakes == 1
        wake.close()

    run(scenario())


def test_a_poke_wakes_it_and_unwatchable_directories_fall_back_to_polling(tmp_path, monkeypatch):
    import xllm_tui.supervisor.logwake as logwake_module

    def no_inotify(dirs):
        raise OSError(24, "inotify_init1: Too many open files")

    async def scenario():
        wake = LogWake()
        wake.watch({str(tmp_path)})
        wake.take_growth()
        waiter = asyncio.ensure_future(wake.wait(tick=600))
        await asyncio.sleep(0)
        wake.poke()
        await waiter
        assert wake.take_growth()
        wake.close()
        monkeypatch.setattr(logwake_module, "Inotify", no_inotify)
        unwatchable = LogWake()
        unwatchable.watch({str(tmp_path)})
        assert not unwatchable.watching and unwatchable.failed
        assert unwatchable.take_growth()  # no watch: every round reads
        await unwatchable.wait(tick=600)  # polls: returns after POLL_S

    run(scenario())


def test_a_log_directory_made_anew_under_its_name_is_watched_again(tmp_path):
    """logs/ cleared before a restart, made again by the launch: the old watch stays on the old directory (kept
    alive by a reader of a deleted log, a TUI following it), and the new ranks' writes woke nothing, so their
    states were never read. The directory's identity, checked at every round, says to watch it again; a
    directory not there yet is watched once it is."""
    import shutil

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "node_0.log").write_text("old run\n")

    async def wakes_on_write() -> bool:
        waiter = asyncio.ensure_future(wake.wait(tick=600))
        await asyncio.sleep(0)
        with open(logs / "node_0.log", "a") as f:
            f.write("I1129 line\n")
        await waiter
        return wake.take_growth()

    async def scenario():
        wake.watch({str(logs)})
        wake.take_growth()
        assert await wakes_on_write()
        with open(logs / "node_0.log") as reader:  # keeps the old directory's inode
            shutil.rmtree(logs)
            wake.watch({str(logs)})  # a round while the directory is gone
            assert wake.watching and not wake.failed
            logs.mkdir()
            wake.watch({str(logs)})  # the launch's round
            assert wake.take_growth()  # what was written before the new watch is read
            assert await wakes_on_write()
            assert reader.read() == "old run\nI1129 line\n"
        wake.close()

    wake = LogWake()
    run(scenario())


def test_no_directories_no_watch():
    async def scenario():
        wake = LogWake()
        wake.watch(set())
        assert not wake.watching and wake.take_growth()

    run(scenario())


def test_under_a_flood_rounds_are_further_apart(tmp_path):
    """A round's cost is mostly fixed: after a round that read a flood, the next comes no sooner than
    FLOOD_COALESCE_S, however soon the log grows again; a trickle is read again after COALESCE_S."""
    import time

    from xllm_tui.supervisor.logwake import COALESCE_S, FLOOD_COALESCE_S, FLOOD_ROUND_BYTES, round_gap

    assert round_gap(0) == round_gap(FLOOD_ROUND_BYTES - 1) == COALESCE_S
    assert round_gap(FLOOD_ROUND_BYTES) == FLOOD_COALESCE_S > COALESCE_S
    log = tmp_path / "node_0.log"

    async def scenario():
        wake = LogWake()
        wake.watch({str(tmp_path)})
        wake.take_growth()
        log.write_text("I1129 written before the wait\n")
        started = time.monotonic()
        await wake.wait(tick=600, gap=FLOOD_COALESCE_S)
        assert time.monotonic() - started >= FLOOD_COALESCE_S and wake.take_growth()
        wake.close()

    run(scenario())


def test_a_log_directory_made_anew_with_the_old_inode_number_is_watched_again(tmp_path):
    """logs/ cleared with nothing holding it: its watch is gone with it, and the file system may give the new
    directory the old one's inode number (ext4 does, at once), so (st_dev, st_ino) cannot tell them apart. The
    kernel can: a watch asked for again on a live one is the same watch, on a new directory a new one."""
    import shutil

    logs = tmp_path / "logs"
    logs.mkdir()

    async def wakes_on_write() -> bool:
        waiter = asyncio.ensure_future(wake.wait(tick=600))
        await asyncio.sleep(0)
        with open(logs / "node_0.log", "a") as f:
            f.write("I1129 line\n")
        await asyncio.wait_for(waiter, 5)
        return wake.take_growth()

    async def scenario():
        wake.watch({str(logs)})
        wake.take_growth()
        assert await wakes_on_write()
        for _ in range(3):  # made anew a few times: whatever inode numbers the file system hands out
            shutil.rmtree(logs)
            logs.mkdir()
            wake.watch({str(logs)})  # the launch's round
            assert wake.take_growth()  # what was written before the new watch is read
            assert await wakes_on_write()
            wake.watch({str(logs)})  # a round with nothing new: no watch made again, nothing to read
            assert not wake.take_growth()
        wake.close()

    wake = LogWake()
    run(scenario())


def test_a_log_directory_gone_while_its_ranks_run_is_read_at_every_tick(tmp_path):
    """logs/ cleared while the ranks write on into their deleted logs: no write wakes the loop, so every round
    reads (through the ranks' stdout), and a round waits at most IDLE_TICK_S, not a steady deployment's 30 s."""
    import shutil

    from xllm_tui.supervisor.logwake import IDLE_TICK_S

    logs = tmp_path / "logs"
    logs.mkdir()

    async def scenario():
        wake = LogWake()
        wake.watch({str(logs)})
        assert wake.take_growth() and not wake.take_growth() and not wake.blind
        shutil.rmtree(logs)
        wake.watch({str(logs)})
        assert wake.blind and wake.take_growth() and wake.take_growth()
        # Woken by the tick of at most IDLE_TICK_S, not the 600 s asked for (a timeout here fails the test).
        await asyncio.wait_for(wake.wait(tick=600, gap=0), IDLE_TICK_S + 5)
        logs.mkdir()
        wake.watch({str(logs)})
        assert not wake.blind
        wake.close()

    run(scenario())
