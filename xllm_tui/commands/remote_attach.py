"""`xllm-tui remote-attach`: the other end of machine 0's ssh connection (supervisor/remote.py).

Reads one attach request from stdin (the profile's files, the machine, --simulate, the port offset, simulator
settings), writes the profile under this machine's state directory, starts this machine's supervisor for it
as a member unless one answers (an edited profile is reloaded into a running one), answers
`{"attached": {...}}`, then bridges stdin/stdout to that supervisor's unix socket, JSON lines both ways: requests
go over one connection, a `subscribe` over a second one, so events and replies share the ssh stream. It exits
when stdin closes (ssh dropped) or the supervisor goes away; the supervisor and its ranks stay.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time

from xllm_tui.protocol import PROTOCOL


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    pass  # everything arrives as the first line on stdin


def _reply(out, lock: threading.Lock, message: dict | bytes) -> None:
    data = message if isinstance(message, bytes) else (json.dumps(message) + "\n").encode()
    with lock:
        out.write(data)
        out.flush()


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def write_bundle(bundle: dict, directory: str) -> tuple[str, bool]:
    """The received profile files under `directory`; (main file path, whether any file changed)."""
    changed = False
    root = os.path.realpath(directory)
    for rel, text in bundle["files"].items():
        path = os.path.realpath(os.path.join(directory, rel))
        if not path.startswith(root + os.sep):
            raise ValueError(f"profile file {rel!r} would be written outside {directory}")
        try:
            with open(path, encoding="utf-8") as f:
                if f.read() == text:
                    continue
        except OSError:
            pass
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        changed = True
    return os.path.join(directory, bundle["main"]), changed


def attach(request: dict) -> tuple[dict, str]:
    """Ensure this machine's supervisor for the request; (the attached reply, its run dir). Raises ValueError."""
    from xllm_tui.client import SupervisorClient, ensure_supervisor, run_dir_for, socket_path, state_home, \
        supervisor_answers
    from xllm_tui.profile import load_profile

    simulate = bool(request.get("simulate"))
    machine = str(request["machine"])
    bundle = request["profile"]
    for name, value in (request.get("env") or {}).items():
        if name.startswith("XLLM_SIM_"):
            os.environ[name] = str(value)  # reaches the supervisor started below and its simulated ranks
    label = _safe_name(f"{bundle.get('name') or 'profile'}{'-sim' if simulate else ''}@{machine}")
    received = os.path.join(state_home(), "xllm-tui", "received", label)
    main, changed = write_bundle(bundle, received)
    request["received"] = received
    result = load_profile(main, simulate=simulate)
    if result.profile is None:
        raise ValueError("the profile has errors on this machine:\n" + "\n".join(str(d) for d in result.errors))
    profile = result.profile
    if not any(m.host == machine for m in profile.machines):
        raise ValueError(f"machine {machine} is not in profile {profile.name}")
    # Its own run directory: on one host (or a shared home) it must never be machine 0's.
    run_dir = run_dir_for(profile, simulate).rstrip("/") + "@" + _safe_name(machine)
    note = ""
    hello = supervisor_answers(run_dir)
    if hello and changed:
        try:
            with SupervisorClient(socket_path(run_dir), timeout=60) as client:
                client.request("reload", who="machine 0 (profile changed)")
            note = "profile changed: reloaded (takes effect at the next launch)"
        except Exception as e:  # noqa: BLE001 - report, keep the running supervisor
            note = f"profile changed but reload failed: {e}"
    elif not hello:
        ensure_supervisor(main, simulate=simulate, run_dir=run_dir, port_offset=int(request.get("port_offset") or 0),
                          machine=machine, member=True, timeout=60)
        note = "supervisor started"
    hello = supervisor_answers(run_dir) or {}
    return {"attached": {"protocol": PROTOCOL, "pid": hello.get("pid"), "run_dir": run_dir, "machine": machine,
                         "profile_path": main, "note": note, "attach_pid": os.getpid()}}, run_dir


def check(request: dict) -> dict:
    """`validate --remote` on this machine: the profile as received, loaded as this machine would load it, and
    (on a real machine) its devices and binding. Written to a scratch copy, so a running supervisor's profile
    files never change; nothing is started."""
    import shutil
    import tempfile

    from xllm_tui import __version__
    from xllm_tui.client import state_home
    from xllm_tui.profile import load_profile

    simulate = bool(request.get("simulate"))
    base = os.path.join(state_home(), "xllm-tui", "received")
    os.makedirs(base, mode=0o700, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".check-", dir=base)
    try:
        main, _ = write_bundle(request["profile"], scratch)
        result = load_profile(main, simulate=simulate)
        diagnostics = list(result.diagnostics)
        notes = []
        if result.profile is not None and not simulate:
            from xllm_tui.commands.validate import check_devices

            devices = check_devices(result, simulate=False)
            diagnostics += devices.diagnostics
            notes += devices.notes
        texts = [{"severity": d.severity, "text": str(d).replace(scratch + os.sep, "")} for d in diagnostics]
        return {"checked": {"version": __version__, "diagnostics": texts, "notes": notes,
                            "python": sys.executable}}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _connect(path: str) -> socket.socket:
    from xllm_tui.supervisor.state import ShortSocketPath

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with ShortSocketPath(path) as address:
        sock.connect(address)
    return sock


def _pump(sock: socket.socket, out, lock: threading.Lock, on_end) -> None:
    """Every line from the supervisor to stdout, until it closes the connection."""
    buffer = b""
    try:
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            buffer += chunk
            if b"\n" in buffer:
                lines, _, buffer = buffer.rpartition(b"\n")
                _reply(out, lock, lines + b"\n")
    except OSError:
        pass
    on_end()


def run(args: argparse.Namespace) -> int:
    from xllm_tui.client import pid_alive, socket_path

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    lock = threading.Lock()
    first = stdin.readline()
    try:
        message = json.loads(first)
        if "check" in message:
            _reply(stdout, lock, check(message["check"]))
            return 0
        request = message["attach"]
        reply, run_dir = attach(request)
    except Exception as e:  # noqa: BLE001 - everything goes back to machine 0 as one error line
        _reply(stdout, lock, {"error": {"code": "attach_failed", "message": f"{e.__class__.__name__}: {e}"}})
        return 1
    path = socket_path(run_dir)
    requests = _connect(path)
    supervisor_pid = reply["attached"].get("pid")

    def supervisor_gone() -> None:
        # The supervisor going away (shutdown) ends the bridge, which ends ssh: machine 0 sees the connection
        # close. Only once the process has really exited, so `down` on machine 0 returns with nothing left here.
        deadline = time.monotonic() + 60
        while supervisor_pid and time.monotonic() < deadline and pid_alive(supervisor_pid):
            time.sleep(0.05)
        os._exit(0)

    threading.Thread(target=_pump, args=(requests, stdout, lock, supervisor_gone), daemon=True).start()
    _reply(stdout, lock, reply)
    subscription: socket.socket | None = None
    for line in stdin:
        if not line.strip():
            continue
        try:
            op = json.loads(line).get("op")
        except (ValueError, AttributeError):
            op = None
        if op == "update_profile":
            # The edited profile from machine 0: written where the running supervisor reads it, then reloaded
            # (the reply is the reload's, with the request's id).
            message = json.loads(line)
            try:
                write_bundle(message["profile"], request["received"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                _reply(stdout, lock, {"id": message.get("id"), "ok": False,
                                      "error": {"code": "profile_invalid", "message": f"cannot write the profile: {e}"}})
                continue
            line = (json.dumps({"id": message.get("id"), "op": "reload", "who": message.get("who")}) + "\n").encode()
            requests.sendall(line)
        elif op == "subscribe":
            if subscription is not None:
                subscription.close()
            subscription = _connect(path)
            threading.Thread(target=_pump, args=(subscription, stdout, lock, lambda: None), daemon=True).start()
            subscription.sendall(line)
        else:
            requests.sendall(line)
    return 0  # stdin closed: machine 0 hung up (or ssh dropped)
