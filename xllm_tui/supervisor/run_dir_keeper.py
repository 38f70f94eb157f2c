"""The run directory removed or moved under a running supervisor (an operator's `rm -rf` of the state directory
to start clean): its lock, socket, state and journal were gone, `status` said no supervisor ran, and a second
`up` started one that adopted the same ranks, two supervisors each restarting them. The supervisor watches its
lock file and run directory with inotify (no cost while nothing happens) and makes them again at once. If
another supervisor holds the new run directory first, that one has adopted the ranks: this one leaves them to
it and exits, touching nothing there. A mixin of Supervisor."""

from __future__ import annotations

import asyncio
import logging
import os
import stat

from xllm_tui.logs.inotify import IN_ATTRIB, IN_DELETE_SELF, IN_MOVE_SELF, Inotify
from xllm_tui.supervisor.state import LOG_NAME, SOCKET_NAME, RunDirLock, RunDirLocked, is_locked, read_lock_pid, \
    save_toggles

log = logging.getLogger("xllm_tui.supervisor")

RUN_DIR_MASK = IN_DELETE_SELF | IN_MOVE_SELF
LOCK_MASK = IN_ATTRIB | IN_MOVE_SELF  # unlinking a file held open changes its link count: IN_ATTRIB
POLL_S = 5.0  # without inotify
SETTLE_S = 1.0  # nothing changed this long where the run directory was: its removal is over
SETTLE_STEP_S = 0.25
RETRY_S = 5.0  # a run directory that cannot be made again (its parent gone too, permissions): tried again


class RunDirKeeping:
    def init_run_dir_keeping(self) -> None:
        self._run_dir_watch: Inotify | None = None
        self._run_dir_polling = False  # the poller without inotify runs (one, however many restores)
        self._run_dir_restoring = False
        self.run_dir_taken = False  # another supervisor holds the run directory now: write nothing there

    def watch_run_dir(self) -> None:
        """Watch the lock file and the run directory; without inotify, look every POLL_S seconds."""
        self._unwatch_run_dir()
        try:
            watch = Inotify()
            try:
                watch.add_watch(self.run_dir, RUN_DIR_MASK)
                watch.add_watch(self.lock.path, LOCK_MASK)
            except OSError:
                watch.close()
                raise
        except (OSError, AttributeError) as e:
            log.warning("run directory not watched (%s): looking every %.0f s", e, POLL_S)
            if not self._run_dir_polling:  # a restore watches again: a second poller would look twice as often
                self._run_dir_polling = True
                self.spawn_task(self._poll_run_dir())
            return
        self._run_dir_watch = watch
        self.loop.add_reader(watch.fd, self._on_run_dir_event)

    def _unwatch_run_dir(self) -> None:
        if self._run_dir_watch is not None:
            self.loop.remove_reader(self._run_dir_watch.fd)
            self._run_dir_watch.close()
            self._run_dir_watch = None

    async def _poll_run_dir(self) -> None:
        try:
            while self._run_dir_watch is None and not self.run_dir_taken:
                await asyncio.sleep(POLL_S)
                self._check_run_dir()
        finally:
            self._run_dir_polling = False

    def _on_run_dir_event(self) -> None:
        if self._run_dir_watch is not None:
            self._run_dir_watch.drain()
        self._check_run_dir()

    def run_dir_ours(self) -> bool:
        """Whether state.json and the like may be written: the run directory is still this supervisor's (not
        removed meanwhile, nor made again by another supervisor)."""
        if self.run_dir_taken:
            return False
        if self.lock.lost():
            self._check_run_dir()
            return False
        return True

    def _check_run_dir(self) -> None:
        if self._run_dir_restoring or self.run_dir_taken or not self.lock.lost():
            return
        if is_locked(self.run_dir):  # another supervisor made it again first (this one was frozen meanwhile)
            self._give_up_run_dir(read_lock_pid(self.run_dir))
            return
        self._run_dir_restoring = True
        self.spawn_task(self.restore_run_dir())

    async def _settled(self) -> bool:
        """Wait until whatever removes the run directory is done: nothing changed for SETTLE_S there or, once it
        is gone, in its nearest ancestor left. Made again during an `rm -rf`, the directory would make that
        rm fail ("Directory not empty"). False when the lock turns out not lost (its file touched or
        chmod-ed)."""
        last, since = None, 0.0
        while True:
            if not self.lock.lost():
                return False
            now = self.loop.time()
            mark = _removal_mark(self.run_dir)
            if mark != last:
                last, since = mark, now
            elif now - since >= SETTLE_S:
                return True
            await asyncio.sleep(SETTLE_STEP_S)

    async def restore_run_dir(self) -> None:
        try:
            if not await self._settled():
                return
            while True:
                lock = RunDirLock(self.run_dir)
                try:
                    lock.acquire()
                    break
                except RunDirLocked as e:
                    self._give_up_run_dir(e.pid)
                    return
                except OSError as e:
                    log.error("cannot make the run directory %s again: %s; trying again in %.0f s",
                              self.run_dir, e, RETRY_S)
                    await asyncio.sleep(RETRY_S)
            old, self.lock = self.lock, lock
            old.release()
            os.chdir(self.run_dir)
            while True:  # the socket first: whatever else cannot be written (a full disk), clients reach it
                try:
                    await self.server.rebind(os.path.join(self.run_dir, SOCKET_NAME))
                    break
                except OSError as e:
                    log.error("cannot listen in %s again: %s; trying again in %.0f s", self.run_dir, e, RETRY_S)
                    await asyncio.sleep(RETRY_S)
            self.watch_run_dir()
            self._best_effort("its own log", self._reopen_own_log)
            kept = self._best_effort("the event journal", self.journal.reopen) or 0
            self._best_effort("toggles.json", lambda: save_toggles(self.run_dir, self.toggles))
            self.write_sim_procs()
            self.event("supervisor", reason=f"the run directory {self.run_dir} was removed or moved while this "
                       f"supervisor ran: made again (lock, socket, state, toggles and the last {kept} events); "
                       "the ranks run on", run_dir_restored=True)
            self.state_changed.set()  # state.json
        finally:
            self._run_dir_restoring = False

    def _best_effort(self, what: str, step):
        try:
            return step()
        except OSError as e:
            log.error("the run directory %s is made again, but not %s: %s", self.run_dir, what, e)
            return None

    def _give_up_run_dir(self, pid: int | None) -> None:
        """Another supervisor made the run directory again first and adopted the ranks (by their markers):
        leave them to it, and write nothing into its directory (state, socket)."""
        self.run_dir_taken = True
        self._unwatch_run_dir()
        if self.server is not None:
            self.server.forget_path()
        who = f"pid {pid}" if pid else "another process"
        self.event("supervisor", reason=f"the run directory {self.run_dir} was removed while this supervisor ran, "
                   f"and another supervisor ({who}) holds it now and has the ranks: leaving them to it")
        self.request_shutdown(False, "another supervisor holding the run directory")

    @staticmethod
    def _reopen_own_log() -> None:
        """A detached supervisor's stdout and stderr go to supervisor.log: when that file was removed with the run
        directory, go on in a new one (a supervisor run in a terminal or under systemd keeps its output)."""
        try:
            st = os.fstat(1)
        except OSError:
            return
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 0:
            return
        fd = os.open(LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            os.dup2(fd, 1)
            os.dup2(fd, 2)
        finally:
            os.close(fd)


def _removal_mark(run_dir: str) -> tuple:
    """What changes while a removal goes on: the run directory's entries and their directories' times (a logs/
    being emptied), or once it is gone, the nearest ancestor left and its time."""
    try:
        with os.scandir(run_dir) as entries:
            inner = sorted((e.name, e.stat(follow_symlinks=False).st_mtime_ns if e.is_dir(follow_symlinks=False)
                            else 0) for e in entries)
        return (run_dir, os.stat(run_dir).st_mtime_ns, tuple(inner))
    except OSError:
        pass
    path = os.path.dirname(run_dir)
    while True:
        try:
            return (path, os.stat(path).st_mtime_ns)
        except OSError:
            parent = os.path.dirname(path)
            if parent == path:
                return (path,)
            path = parent
