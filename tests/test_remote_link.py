"""The pure parts of reaching another machine: the profile's ssh settings and their diagnostics, the ssh command
line, the --simulate mapping of ssh targets to loopback, the profile bundle a remote machine receives."""

from __future__ import annotations

import os

from conftest import REPO
from xllm_tui.commands.remote_attach import write_bundle
from xllm_tui.profile import load_profile, load_profile_text
from xllm_tui.spec import SshTarget
from xllm_tui.supervisor.remote import is_loopback, profile_bundle, ssh_argv, ssh_target

A3_16 = os.path.join(REPO, "profiles", "a3-16card-2node.yaml")


def two_node_text(ssh: str) -> str:
    return f"""
name: t
binary: /bin/true
model: /tmp
master_node_addr: 10.0.0.1:10015
base_port: 18994
machines:
  - host: 10.0.0.1
    devices: [0]
  - host: 10.0.0.2
    devices: [0]
    ssh: {ssh}
"""


def test_the_shipped_two_machine_profile_reaches_machine_1_as_root_over_ssh():
    profile = load_profile(A3_16, simulate=True).profile
    assert profile.machines[0].ssh is None
    assert profile.machines[1].ssh == SshTarget(host="11.87.49.111", user="root", port=22)


def test_an_ssh_alias_alone_is_enough_and_the_remote_command_can_be_named():
    profile = load_profile_text(two_node_text("gpu-b"), "/tmp/t.yaml", simulate=True).profile
    assert profile.machines[1].ssh == SshTarget(host="gpu-b")
    text = two_node_text("{host: gpu-b, identity: ~/.ssh/id_xllm, command: /opt/venv/bin/xllm-tui}")
    target = load_profile_text(text, "/tmp/t.yaml", simulate=True).profile.machines[1].ssh
    assert target.identity == "~/.ssh/id_xllm" and target.command == ("/opt/venv/bin/xllm-tui",)


def test_bad_ssh_settings_are_named_with_file_line_and_key():
    text = two_node_text("{host: -oProxyCommand=evil, port: 70000, user: 'a b', extra: 1}")
    result = load_profile_text(text, "/tmp/t.yaml", simulate=True)
    messages = [str(d) for d in result.errors]
    assert result.profile is None
    assert any(m.startswith("/tmp/t.yaml:12:") and "machines[1].ssh.host" in m and "not an ssh host" in m
               for m in messages), messages
    assert any("machines[1].ssh.port: 70000 is out of range" in m for m in messages), messages
    assert any("machines[1].ssh.user" in m for m in messages), messages
    assert any("machines[1].ssh.extra: unknown key" in m for m in messages), messages


def test_ssh_argv_is_batch_mode_with_keepalives_and_one_quoted_remote_command():
    argv = ssh_argv(SshTarget(host="gpu-b", user="root", port=2222, identity="~/k"),
                    ["python3", "-m", "xllm_tui", "remote-attach"], config="/tmp/cfg")
    assert argv[:3] == ["ssh", "-F", "/tmp/cfg"]
    assert "BatchMode=yes" in argv and "ServerAliveInterval=5" in argv
    assert argv[argv.index("-l") + 1] == "root" and argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-i") + 1] == os.path.expanduser("~/k")
    assert argv[-3:] == ["--", "gpu-b", "python3 -m xllm_tui remote-attach"]
    odd = ssh_argv(SshTarget(host="h", command=("/opt/my env/xllm-tui",)), ["/opt/my env/xllm-tui", "x;y"])
    assert odd[-1] == "'/opt/my env/xllm-tui' 'x;y'"  # the remote shell sees words, never syntax


def test_under_simulate_a_cluster_ssh_target_becomes_the_machines_loopback_address():
    profile = load_profile(A3_16, simulate=True).profile
    simulated = ssh_target(profile, 1, simulate=True)
    assert simulated.host == "127.0.0.2" and is_loopback(simulated.host)
    assert simulated.user is None and simulated.port is None  # the cluster's settings never apply to loopback
    assert ssh_target(profile, 1, simulate=False).host == "11.87.49.111"


def test_the_bundle_carries_the_extends_chain_and_relative_scripts_and_pins_the_working_dir(tmp_path):
    profile = load_profile(A3_16, simulate=True).profile
    bundle = profile_bundle(profile)
    assert bundle["main"] == "a3-16card-2node.yaml"
    assert set(bundle["files"]) == {"a3-16card-2node.yaml", "base/glm45-a3.yaml", "base/python-paths.sh"}
    assert f"working_dir: \"{os.path.join(REPO, 'profiles')}\"" in bundle["files"]["a3-16card-2node.yaml"]

    main, changed = write_bundle(bundle, str(tmp_path / "received"))
    assert changed and not write_bundle(bundle, str(tmp_path / "received"))[1]  # same files: nothing changes
    received = load_profile(main, simulate=True)
    assert received.profile is not None, [str(d) for d in received.errors]
    assert received.profile.working_dir == os.path.join(REPO, "profiles")
    assert [m.host for m in received.profile.machines] == ["11.87.49.110", "11.87.49.111"]


def test_a_bundle_cannot_write_outside_its_directory(tmp_path):
    try:
        write_bundle({"main": "x.yaml", "files": {"../evil.yaml": "x"}}, str(tmp_path / "r"))
    except ValueError as e:
        assert "outside" in str(e)
    else:
        raise AssertionError("a path outside the received directory was written")
    assert not (tmp_path / "evil.yaml").exists()


def test_hccn_tool_output_gives_the_npu_address_and_the_simulated_tool_speaks_it():
    from xllm_tui.devices.hccn import parse_ip, read_device_ips

    assert parse_ip("ipaddr:29.31.0.2\nnetmask:255.255.0.0\n") == "29.31.0.2"
    assert parse_ip("ipaddr: 10.20.0.20\n") == "10.20.0.20"
    assert parse_ip("no address configured\n") is None and parse_ip("ipaddr:999.1.1.1") is None
    env = {**os.environ, "XLLM_SIM_HCCN_IPS": '{"1": "10.1.0.1"}'}
    ips, problems = read_device_ips([0, 1], simulate=True, env=env)
    assert ips == {0: "192.168.100.0", 1: "10.1.0.1"} and problems == []
    missing, why = read_device_ips([0], simulate=False, tool="/nonexistent/hccn_tool")
    assert missing == {} and "not found" in why[0]


def test_status_names_each_other_machine_and_a_clock_skew_worth_knowing():
    from xllm_tui.commands.lifecycle import format_machines

    machines = [{"name": "m0", "state": "local", "ranks": [0, 1]},
                {"name": "m1", "state": "connected", "supervisor_pid": 42, "ranks": [2, 3], "clock_skew_s": 0.01},
                {"name": "m2", "state": "connected", "supervisor_pid": 43, "ranks": [4, 6], "clock_skew_s": -7.5},
                {"name": "m3", "state": "unreachable", "reason": "machine unreachable since 14:02:11: refused",
                 "ranks": [7]}]
    assert format_machines(machines) == [
        "machine m1: connected over ssh (supervisor pid 42, ranks 2-3)",
        "machine m2: connected over ssh (supervisor pid 43, ranks 4, 6); its clock is 7.5s ahead of this machine's",
        "machine m3: unreachable - machine unreachable since 14:02:11: refused",
    ]


def answer_log_read(monkeypatch, answer) -> None:
    """`xllm-tui logs` of rank 1 on another machine, talking to a machine 0 whose log_read replies are
    answer(offset, lines, max_bytes)."""
    from xllm_tui.commands import lifecycle

    class Client:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def request(self, op, *, rank, offset=None, lines=None, generation=0, max_bytes=1 << 20):
            assert op == "log_read" and rank == 1
            return answer(offset, lines, max_bytes)

    monkeypatch.setattr(lifecycle, "connect", lambda target, timeout=5.0: Client())


def test_remote_logs_follow_reads_a_rotated_log_from_its_start(tmp_path, monkeypatch, capsys):
    """`xllm-tui logs -f` on another machine's rank: after a relaunch rotates its log, the new file is followed
    from its first line, not from the old file's length (log_read serves it with the supervisor's reader)."""
    import argparse

    from xllm_tui.commands import lifecycle
    from xllm_tui.logs.tail import rotate_log
    from xllm_tui.supervisor.log_access import read_log_file

    log = tmp_path / "node_1.log"
    log.write_text("old line 1\nold line 2 is a long one\n")
    polls = []

    def answer(offset, lines, max_bytes):
        if offset is not None and offset > 0:
            polls.append(offset)
            if len(polls) == 1:  # a relaunch between two polls: the new log is shorter than the old one
                rotate_log(log)
                log.write_text("new 1\n")
            elif len(polls) == 3:
                raise KeyboardInterrupt
        return read_log_file(str(log), offset=offset, lines=lines, max_bytes=1 << 20)

    answer_log_read(monkeypatch, answer)
    monkeypatch.setattr(lifecycle.time, "sleep", lambda s: None)
    args = argparse.Namespace(rank=1, generation=0, lines=10, follow=True)
    try:
        lifecycle._remote_logs(args, None)
    except KeyboardInterrupt:
        pass
    assert capsys.readouterr().out == "old line 1\nold line 2 is a long one\nnew 1\n"


def test_remote_logs_follow_keeps_up_with_a_rank_logging_hard(tmp_path, monkeypatch, capsys):
    """`xllm-tui logs -f` on another machine's rank that floods its log: every line is printed (a stream, piped
    into grep), read on at once in 4 MiB replies while the file is ahead; it slept half a second between 1 MiB
    reads, 2 MB/s against a rank's 25."""
    import argparse

    from xllm_tui.commands import lifecycle
    from xllm_tui.supervisor.log_access import read_log_file

    log = tmp_path / "node_1.log"
    log.write_text("start-up\n")
    line = "I1201 04:19:34.339349  7921 xllm_server.cpp:59] [verbose] request %08d step decode\n"
    flood = "".join(line % i for i in range(12 * 2**20 // len(line % 0)))
    events = []

    def answer(offset, lines, max_bytes):
        if offset is not None:
            events.append(("read", max_bytes))
            if len([e for e in events if e[0] == "read"]) == 1:
                with open(log, "a") as f:
                    f.write(flood)
        part = read_log_file(str(log), offset=offset, lines=lines, max_bytes=min(max_bytes, 4 << 20))
        if offset is not None and not part["data"]:
            raise KeyboardInterrupt  # caught up and nothing new: the operator's ctrl+c
        return part

    def sleep(seconds):
        events.append(("sleep", seconds))

    answer_log_read(monkeypatch, answer)
    monkeypatch.setattr(lifecycle.time, "sleep", sleep)
    try:
        lifecycle._remote_logs(argparse.Namespace(rank=1, generation=0, lines=10, follow=True), None)
    except KeyboardInterrupt:
        pass
    assert capsys.readouterr().out == "start-up\n" + flood
    reads = [e for e in events if e[0] == "read"]
    assert all(size == 4 << 20 for _, size in reads) and len(reads) == 4  # the flood in 3 reads, then an empty one
    # a sleep before the first read (caught up) and before the last (caught up again), none while behind
    assert [n for n, e in enumerate(events) if e[0] == "sleep"] == [0, 4]


def test_starting_a_rank_that_waits_for_its_npu_stays_narrow_across_machines():
    """As on one machine: `start 1` for a rank held back by a busy NPU launches that rank (and a remote waiting
    rank is forwarded to its machine), it does not relaunch the world that is waiting for it."""
    import asyncio
    from types import SimpleNamespace

    from xllm_tui.supervisor.machines import RemoteMachines

    started: list[list[int]] = []

    class World(RemoteMachines):
        scope = "group"
        group = SimpleNamespace(restart_scheduled=False)
        launch_waiting = None

        def event(self, *args, **fields):
            pass

        def spawn_task(self, coro):
            coro.close()

        def op_start(self, ranks, who):
            started.append([r.rank for r in ranks])
            return asyncio.sleep(0)

        op_stop = op_restart = op_start

    world = World()
    world.ranks = {0: SimpleNamespace(rank=0, state="loading", waiting=None),
                   1: SimpleNamespace(rank=1, state="starting", waiting={"device": 1})}
    world.links = {"m1": SimpleNamespace(label="m1", connected=True, ranks={
        2: {"rank": 2, "state": "loading"}, 3: {"rank": 3, "state": "starting", "waiting": {"device": 1}}})}
    assert world.perform_across_machines("start", [1], "test") == {"accepted": [1], "world": False, "explanation": ""}
    assert started == [[1]]
    assert world.perform_across_machines("start", [3], "test")["accepted"] == [3]
    assert world.perform_across_machines("start", [2], "test")["world"]  # a rank of the running world: all relaunch
