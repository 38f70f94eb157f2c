"""A real OpenSSH server on loopback for the multi-machine tests: Debian's sshd with a generated host key and user
key, a private sshd_config (high free port, ListenAddress 127.0.0.2 ..., StrictModes no, AuthorizedKeysFile in
tmp), run as the current user with `sshd -D -e -f cfg`, plus an ssh client config (-F) that knows it.

    def test_x(ssh_machines):
        sshd = ssh_machines(["127.0.0.2"], env_for={"127.0.0.2": {"XDG_STATE_HOME": "/tmp/.../m1"}})
        sshd.client_config, sshd.port, sshd.user_key, sshd.stop_listening(), sshd.start()

The fixture ends sshd (and every session it forked) by its process group; nothing is found by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess

import psutil
import pytest

from conftest import REPO, wait_until

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def ssh_available() -> bool:
    return os.path.exists(SSHD) and shutil.which("ssh") is not None and shutil.which("ssh-keygen") is not None


def free_port_on(hosts: list[str]) -> int:
    """A port free on every one of these loopback addresses."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
        ok = True
        for host in hosts[1:]:
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no common free port")


class SshServer:
    def __init__(self, tmp, hosts: list[str], env_for: dict[str, dict[str, str]]):
        self.dir = tmp
        self.hosts = hosts
        self.port = free_port_on(hosts)
        self.host_key = str(tmp / "host_key")
        self.user_key = str(tmp / "user_key")
        self.authorized = str(tmp / "authorized_keys")
        self.config = str(tmp / "sshd_config")
        self.client_config = str(tmp / "ssh_config")
        self.log = str(tmp / "sshd.log")
        self.proc: subprocess.Popen | None = None
        for key in (self.host_key, self.user_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True,
                           stdin=subprocess.DEVNULL)
        shutil.copy(self.user_key + ".pub", self.authorized)
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory (as the package makes it)
        with open(self.config, "w") as f:
            f.write("\n".join([
                f"Port {self.port}", *[f"ListenAddress {h}" for h in hosts], f"HostKey {self.host_key}",
                f"PidFile {tmp / 'sshd.pid'}", f"AuthorizedKeysFile {self.authorized}", "StrictModes no",
                "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes", "PermitRootLogin prohibit-password",
                "AcceptEnv PYTHONPATH XDG_STATE_HOME XLLM_*", "LogLevel VERBOSE", "ClientAliveInterval 5", "",
            ]))
        blocks = []
        for host in hosts:
            env = {"PYTHONPATH": REPO, **env_for.get(host, {})}
            blocks += [f"Host {host}", f"  SetEnv {' '.join(f'{k}={v}' for k, v in env.items())}"]
        blocks += ["Host *", f"  UserKnownHostsFile {tmp / 'known_hosts'}", "  StrictHostKeyChecking accept-new",
                   "  LogLevel ERROR", ""]
        with open(self.client_config, "w") as f:
            f.write("\n".join(blocks))

    def start(self) -> None:
        log = open(self.log, "ab")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", self.config], stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=log, start_new_session=True)
        log.close()
        for host in self.hosts:
            wait_until(lambda h=host: self._listening(h), 15, 0.05, f"sshd on {host}:{self.port}")

    def _listening(self, host: str) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"sshd exited: {open(self.log).read()[-2000:]}")
        try:
            with socket.create_connection((host, self.port), 0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """End sshd and every session it forked: sessions run in sessions of their own, so they are found as
        sshd's descendants (by pid) before sshd's process group is ended."""
        if self.proc is None:
            return
        try:
            sessions = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            sessions = []
        for child in sessions:
            with contextlib.suppress(psutil.Error):
                child.kill()
        pgid = self.proc.pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(5)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc = None

    def ssh(self, host: str, *words: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", "-F", self.client_config, "-o", "BatchMode=yes", "-p", str(self.port), "-i",
                               self.user_key, "-l", "root", host, *words], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def ssh_machines(tmp_path):
    if not ssh_available():
        pytest.skip("OpenSSH (sshd, ssh, ssh-keygen) is not installed; .ci/run installs openssh-server")
    servers: list[SshServer] = []

    def make(hosts: list[str], env_for: dict[str, dict[str, str]] | None = None) -> SshServer:
        where = tmp_path / f"sshd{len(servers)}"
        where.mkdir()
        server = SshServer(where, hosts, env_for or {})
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()
