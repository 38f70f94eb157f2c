"""Headless lifecycle commands, all clients of the supervisor's socket (docs/supervisor.md):

  up PROFILE [--simulate] [--foreground] [--run-dir DIR] [--port-offset N] [--machine HOST]
  status PROFILE [--json]            start|stop|restart PROFILE [--ranks 0,3 | --failed | --all] [--wait]
  toggle PROFILE GROUP on|off        logs PROFILE --rank N [-f] [-n LINES] [--generation K]
  events PROFILE [-f] [--json]       down PROFILE

Every command takes --simulate / --run-dir to find the same run directory as `up`.
Exit status: 0 ok; 1 the supervisor refused or the operation failed; 2 bad profile or arguments;
3 no supervisor is running for that run directory; 4 `up` found a supervisor already running.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass

from xllm_tui.units import size

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NO_SUPERVISOR, EXIT_ALREADY_RUNNING = 0, 1, 2, 3, 4
EXIT_NOT_ANSWERING = 5  # a supervisor holds the run dir but does not answer (frozen or overloaded)


@dataclass
class Target:
    profile_path: str
    name: str
    run_dir: str
    simulate: bool
    profile: object | None  # spec.Profile when it loaded
    loaded: object | None = None  # its profile.LoadResult: `up` checks it further (preflight) without reading it again


def add_run_dir_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--simulate", action="store_true",
                        help="the simulated deployment (its own run directory, <name>-sim)")
    parser.add_argument("--run-dir", help="the supervisor's run directory (default: from the profile)")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("profile", metavar="PROFILE", help="profile YAML file")
    add_run_dir_arguments(parser)
    if name == "up":
        parser.add_argument("--foreground", action="store_true",
                            help="run the supervisor in this process (for systemd) instead of detached")
        parser.add_argument("--port-offset", type=int, default=0, help="under --simulate: shift every port by N")
        parser.add_argument("--machine", help="the machine (host or name) whose ranks to run (default: this host)")
        parser.add_argument("--over-ssh", action="store_true",
                            help="under --simulate: run machine 0's ranks here and reach every other machine over ssh "
                                 "(its loopback address), as on a real cluster (docs/two-machines.md)")
        parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the supervisor")
    elif name == "status":
        parser.add_argument("--json", action="store_true", help="print the snapshot as JSON (docs/protocol.md)")
        parser.add_argument("--events", type=int, default=8, metavar="N", help="last N events to show")
    elif name in ("start", "stop", "restart"):
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--ranks", help="comma-separated rank numbers, e.g. 0,3")
        which.add_argument("--failed", action="store_true", help="the failed and crash-looping ranks")
        which.add_argument("--all", action="store_true", help="every rank (the default)")
        parser.add_argument("--wait", action="store_true",
                            help="wait until the ranks are ready (start/restart) or stopped (stop)")
        if name in ("start", "restart"):
            parser.add_argument("--only", action="store_true",
                                help="only these ranks, even where xllm needs the whole world relaunched (a rank "
                                     "cannot rejoin a running world: the world stays broken)")
            parser.add_argument("-y", "--yes", action="store_true",
                                help="do not ask before relaunching the whole world for a healthy rank")
        parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait at most")
    elif name == "toggle":
        parser.add_argument("group", help="toggle group name, e.g. determinism")
        parser.add_argument("value", choices=["on", "off"])
    elif name == "logs":
        parser.add_argument("--rank", type=int, required=True, help="rank number")
        parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
        parser.add_argument("-n", "--lines", type=int, default=40, help="last N lines (default 40; 0 = all)")
        parser.add_argument("--generation", type=int, default=0, metavar="K",
                            help="0 = current log, 1 = the previous launch's (node_N.log.1), ...")
    elif name == "events":
        parser.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
        parser.add_argument("--json", action="store_true", help="one JSON event per line")
        parser.add_argument("-n", "--lines", type=int, default=50, help="last N events (0 = all)")
    elif name == "down":
        parser.add_argument("--keep-ranks", action="store_true",
                            help="stop only the supervisor; ranks keep running (a new `up` re-adopts them)")
        parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the shutdown")


def err(text: str) -> None:
    print(f"xllm-tui: {text}", file=sys.stderr)


def resolve_target(args: argparse.Namespace, need_profile: bool = False) -> Target | None:
    """Find the run directory. Prints diagnostics and returns None for a bad profile."""
    from xllm_tui.client import run_dir_for
    from xllm_tui.profile import load_profile

    path = args.profile
    result = load_profile(path, simulate=args.simulate)
    if result.errors or result.profile is None:
        if args.run_dir and not need_profile:
            # A broken (e.g. half-edited) profile must not keep an operator from reaching its supervisor.
            return Target(path, os.path.basename(path), os.path.abspath(args.run_dir), args.simulate, None)
        for d in result.errors or result.diagnostics:
            print(str(d), file=sys.stderr)
        if not result.diagnostics:
            err(f"{path}: cannot load the profile")
        return None
    profile = result.profile if result else None
    if args.run_dir:
        run_dir = os.path.abspath(args.run_dir)
    else:
        run_dir = run_dir_for(profile, args.simulate)
    name = profile.name if profile else os.path.basename(run_dir)
    return Target(path, name, run_dir, args.simulate, profile, result)


def no_supervisor(target: Target) -> int:
    from xllm_tui.client import unavailable_message, unresponsive_pid

    err(unavailable_message(target.name, target.run_dir, simulate=target.simulate, profile_arg=target.profile_path))
    return EXIT_NOT_ANSWERING if unresponsive_pid(target.run_dir) is not None else EXIT_NO_SUPERVISOR


def connect(target: Target, timeout: float = 5.0):
    from xllm_tui.client import SupervisorClient, SupervisorUnavailable, socket_path, supervisor_answers

    if not supervisor_answers(target.run_dir):
        raise SupervisorUnavailable(target.run_dir)
    return SupervisorClient(socket_path(target.run_dir), timeout=timeout)


def run(args: argparse.Namespace) -> int:
    from xllm_tui.client import SupervisorError, SupervisorUnavailable

    command = args.command
    target = resolve_target(args, need_profile=command == "up")
    if target is None:
        return EXIT_BAD_INPUT
    handler = globals()[f"cmd_{command}"]
    try:
        return handler(args, target)
    except SupervisorUnavailable:
        return no_supervisor(target)
    except SupervisorError as e:
        err(e.message)
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_OK


# ----------------------------------------------------------------------------------------------- up


def preflight(loaded, *, simulate: bool) -> bool:
    """The checks that need the machine (the binary's --helpxml, the model directories) on the loaded profile
    (a profile.LoadResult), before any rank starts; False = refuse (errors only: under --simulate the model
    check only warns)."""
    from xllm_tui.commands.validate import check_binary_and_models

    diagnostics, _notes = check_binary_and_models(loaded, simulate=simulate)
    for diagnostic in diagnostics:
        print(str(diagnostic), file=sys.stderr)
    return not any(d.severity == "error" for d in diagnostics)


def cmd_up(args: argparse.Namespace, target: Target) -> int:
    from xllm_tui.client import SupervisorUnavailable, ensure_supervisor, supervisor_answers
    from xllm_tui.supervisor.state import LOG_NAME, SOCKET_NAME, is_locked, read_lock_pid

    hello = supervisor_answers(target.run_dir)
    if hello or is_locked(target.run_dir):
        pid = hello["pid"] if hello else read_lock_pid(target.run_dir)
        err(f"a supervisor is already running for profile {target.name} (pid {pid}, run dir {target.run_dir}); "
            f"see `xllm-tui status {args.profile}{' --simulate' if args.simulate else ''}`, "
            "or stop it with `xllm-tui down` first")
        return EXIT_ALREADY_RUNNING
    if not preflight(target.loaded, simulate=args.simulate):
        return EXIT_BAD_INPUT
    if args.foreground:
        from xllm_tui.supervisor import ProfileInvalid, RunDirLocked, serve

        try:
            return serve(args.profile, simulate=args.simulate, run_dir=target.run_dir, port_offset=args.port_offset,
                         machine=args.machine, over_ssh=args.over_ssh)
        except RunDirLocked as e:
            err(str(e))
            return EXIT_ALREADY_RUNNING
        except ProfileInvalid as e:
            for line in e.diagnostics:
                print(line, file=sys.stderr)
            return EXIT_BAD_INPUT
    print(f"starting the supervisor for {target.name}" + (" (simulated)" if args.simulate else ""), end="",
          flush=True)
    try:
        ensure_supervisor(args.profile, simulate=args.simulate, run_dir=target.run_dir,
                          port_offset=args.port_offset, timeout=args.timeout, machine=args.machine, over_ssh=args.over_ssh,
                          progress=lambda: print(".", end="", flush=True))
    except SupervisorUnavailable as e:
        print()
        err(str(e))
        return EXIT_FAILED
    print(" up")
    hello = supervisor_answers(target.run_dir) or {}
    sim = (" --simulate" if args.simulate else "") + (f" --run-dir {shlex.quote(args.run_dir)}" if args.run_dir else "")
    print(f"  supervisor pid {hello.get('pid')}, run dir {target.run_dir}")
    print(f"  socket         {os.path.join(target.run_dir, SOCKET_NAME)}")
    print(f"  its log        {os.path.join(target.run_dir, LOG_NAME)}")
    print(f"  watch:  xllm-tui status {args.profile}{sim}   |   xllm-tui events {args.profile}{sim} -f")
    print(f"  stop:   xllm-tui down {args.profile}{sim}")
    mapping = ((_snapshot_or_none(target.run_dir) or {}).get("profile") or {}).get("simulate_mapping")
    if mapping:
        print("  --simulate maps the profile onto this machine:")
        for line in mapping:
            print(f"    {line}")
    return EXIT_OK


def _snapshot_or_none(run_dir: str) -> dict | None:
    from xllm_tui.client import SupervisorClient, SupervisorError, SupervisorUnavailable, socket_path

    try:
        with SupervisorClient(socket_path(run_dir), timeout=5.0) as client:
            return client.snapshot()
    except (SupervisorUnavailable, SupervisorError, OSError):
        return None


# ------------------------------------------------------------------------------------------- status


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def format_event(ev: dict) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(ev.get("ts", 0)))
    who = f"rank {ev['rank']}" if ev.get("rank") is not None else ev.get("kind", "")
    text = ev.get("reason", "")
    if ev.get("kind") in ("state", "group", "machine") and ev.get("to"):
        text = f"{ev.get('from')} -> {ev['to']}: {text}"
    if ev.get("remote_seq") is not None and ev.get("machine"):
        text = f"[{ev['machine']} #{ev['remote_seq']}] {text}"  # another machine's own event, as it arrived
    if ev.get("kind") == "prelaunch":
        for label, key in (("removed", "removed"), ("skipped", "skipped"), ("errors", "errors")):
            items = ev.get(key) or []
            if items:
                text += f"; {label}: " + ", ".join(items[:5]) + (" ..." if len(items) > 5 else "")
    return f"{stamp} #{ev.get('seq')} {ev.get('kind', ''):9} {who:8} {text}"


def format_devices(devices: dict | None, now: float | None = None, simulate: bool = False) -> list[str]:
    """The short device lines of `status`: health counts, the hottest NPU, HBM, binding warnings (the ranks
    they are about have `!` after their cores in the table)."""
    if not devices:
        return []
    age = f", read {_duration(max(0.0, (now or time.time()) - devices['polled_at']))} ago" \
        if devices.get("polled_at") else ""
    summary = devices.get("summary") or {}
    if not devices.get("devices"):
        why = "; ".join(devices.get("errors") or []) or "no devices listed"
        lines = [f"devices: unavailable{age}: {why}"]
    else:
        health = ", ".join(f"{count} {word}" for word, count in (summary.get("health") or {}).items())
        kind = "GPUs" if devices.get("backend") == "nvidia-smi" else "NPUs"
        parts = [f"{summary.get('count', len(devices['devices']))} {kind} ({devices.get('backend')}{age})", health]
        hottest = summary.get("hottest")
        if hottest:
            parts.append(f"hottest NPU {hottest['logic_id']} {hottest['temp_c']:g} C")
        if summary.get("hbm_used_mb") is not None:
            parts.append(f"HBM {summary['hbm_used_mb'] / 1024:.1f}/{summary['hbm_total_mb'] / 1024:.1f} GB "
                         f"({summary['hbm_pct']:g}%)")
        lines = ["devices: " + "; ".join(p for p in parts if p)]
    if devices.get("topology_problem"):
        lines.append(f"cores: topology: {devices['topology_problem']}")
    # Under --simulate the profile's cores are checked (the table shows what they are mapped onto here).
    note = " (the profile's cores)" if simulate else ""
    lines += [f"! binding warning{note}: {issue['message']}" for issue in devices.get("binding") or []]
    return lines


CLOCK_SKEW_WARNING_S = 2.0


def format_disks(disks: list[dict], machine: str | None = None) -> list[str]:
    """A filesystem of the logs or the run directory that is full, or running low (nothing while all is well)."""
    lines = []
    where = f" on machine {machine}" if machine else ""
    for d in disks:
        if d.get("level") in ("low", "full"):
            total = d.get("total") or 0
            share = f" ({100 * d['free'] / total:.1f}% free)" if total else ""
            soon = f", full in about {_duration(d['full_in_s'])}" if d.get("full_in_s") and d["level"] == "low" else ""
            held = ""
            if d.get("held_bytes"):
                held = (f"; {size(d['held_bytes'])} in deleted logs that rank(s) "
                        f"{', '.join(map(str, d.get('held_by') or []))} still write (freed when they exit, or by "
                        "`: > /proc/PID/fd/1`)")
            lines.append(f"disk {d['level']}{where}: {', '.join(d.get('paths') or [])}: {size(d.get('free'))} left"
                         f"{share}{soon}{held}")
    return lines


def format_machines(machines: list[dict]) -> list[str]:
    """One line per other machine of a multi-machine world: reachable or not, and a clock skew worth knowing."""
    lines = []
    for m in machines:
        if m.get("state") == "local":
            continue
        text = f"machine {m['name']}: {m['state']}"
        if m.get("state") == "connected":
            text += f" over ssh (supervisor pid {m.get('supervisor_pid')}, ranks {_rank_span(m.get('ranks') or [])})"
        else:
            text += f" - {m.get('reason')}"
        skew = m.get("clock_skew_s")
        if isinstance(skew, (int, float)) and abs(skew) >= CLOCK_SKEW_WARNING_S:
            text += f"; its clock is {abs(skew):.1f}s {'behind' if skew > 0 else 'ahead of'} this machine's"
        lines.append(text)
    return lines


def _rank_span(ranks: list[int]) -> str:
    if ranks and ranks == list(range(ranks[0], ranks[-1] + 1)) and len(ranks) > 1:
        return f"{ranks[0]}-{ranks[-1]}"
    return ", ".join(map(str, ranks)) or "none"


def format_status(raw: dict, events: int = 8) -> str:
    from xllm_tui.protocol import Snapshot

    snap = Snapshot.from_dict(raw)
    group, sup, prof = snap.group, snap.supervisor, snap.profile
    lines = [
        f"profile {prof['name']}{' (simulated)' if prof.get('simulate') else ''}  supervisor pid {sup['pid']}  "
        f"run dir {sup['run_dir']}",
        f"group: {group.state} - {group.reason}  (restarts {group.restarts}, policy "
        f"{group.policy['mode']}/{group.policy['scope']})",
    ]
    if group.first_failure:
        ff = group.first_failure
        where = f" on machine {ff['machine']}" if ff.get("machine") else ""
        lines.append(f"first failure: rank {ff['rank']}{where} {ff['cause']}: {ff['message']}")
    lines += format_machines(snap.machines)
    lines += format_disks(sup.get("disks") or [])
    for m in snap.machines:
        if m.get("state") != "local":
            lines += format_disks(m.get("disks") or [], machine=m.get("name") or m.get("host"))
    rows = [["RANK", "MACHINE", "DEV", "CORES", "PID", "STATE", "UPTIME", "RESTARTS", "CPU", "MEM", "REASON"]]
    for r in snap.ranks:
        rows.append([
            str(r.rank), str(r.machine), str(r.device), (r.cores or "-") + ("!" if r.binding else ""),
            str(r.pid or "-"), r.state + ("*" if r.relaunch_pending else ""),
            _duration(r.uptime_s), str(r.restarts),
            "-" if r.cpu_pct is None else f"{r.cpu_pct:.0f}%", size(r.rss_bytes),
            r.reason,
        ])
    lines += _table(rows)
    if any(r.relaunch_pending for r in snap.ranks):
        lines.append("* relaunch pending: the next launch of this rank gets a different environment")
    lines += format_devices(snap.devices, snap.time, simulate=bool(prof.get("simulate")))
    if snap.toggles:
        lines.append("toggles: " + ", ".join(f"{t['name']}={'on' if t['enabled'] else 'off'}" for t in snap.toggles))
    if events and snap.events:
        lines.append("last events:")
        lines += ["  " + format_event(ev.to_dict()) for ev in snap.events[-events:]]
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace, target: Target) -> int:
    with connect(target) as client:
        snap = client.snapshot()
    if args.json:
        print(json.dumps(snap, indent=2))
    else:
        print(format_status(snap, args.events))
    return EXIT_OK


# ------------------------------------------------------------------------------ start / stop / restart


def _rank_selection(args: argparse.Namespace) -> object:
    if args.failed:
        return "failed"
    if args.ranks:
        try:
            return [int(x) for x in args.ranks.replace(" ", "").split(",") if x != ""]
        except ValueError:
            err(f"{args.command}: --ranks takes rank numbers like 0,3 (got {args.ranks!r})")
            raise SystemExit(EXIT_BAD_INPUT) from None
    return "all"


def _settled(snap: dict, ranks: list[int], command: str, wait_ready: bool, before: dict[int, dict],
             asked_at: float) -> bool:
    """Has the action visibly happened to every rank (and, with --wait, reached ready or failed)?"""
    by_rank = {r["rank"]: r for r in snap["ranks"]}
    for n in ranks:
        r, old = by_rank.get(n), before.get(n, {})
        if r is None:
            continue
        if command == "stop":
            if r["state"] in ("stopping", "starting", "loading", "ready", "degraded"):
                return False
            continue
        relaunched = r["generation"] > old.get("generation", 0) or (r["state"] == "failed" and r["since"] >= asked_at)
        needs_launch = command == "restart" or old.get("state") not in ("starting", "loading", "ready", "degraded")
        if needs_launch and not relaunched:
            return False
        if r["state"] in ("stopped", "stopping"):
            return False
        if wait_ready and r["state"] not in ("ready", "failed", "crash-looping", "exited"):
            return False
    return True


def _consent_to_world(args: argparse.Namespace, plan, selection: object, snap) -> bool:
    """Relaunching a whole world because the operator named healthy ranks: ask first (or --yes)."""
    if not plan.world or selection in ("all", "failed") or args.yes:
        return True
    if any(snap.rank(n) is not None and snap.rank(n).failed for n in selection):
        return True
    question = f"{args.command} rank(s) {', '.join(map(str, selection))}: {plan.explanation}."
    if not sys.stdin.isatty():
        err(f"{question}\nPass --yes to do that, or --only for rank(s) {', '.join(map(str, selection))} alone "
            "(they cannot rejoin the others' world, which then stays broken).")
        return False
    answer = input(f"{question}\nContinue? [y/N] ").strip().lower()
    return answer in ("y", "yes")


def cmd_lifecycle_op(args: argparse.Namespace, target: Target) -> int:
    from xllm_tui.protocol import Snapshot, plan_restart

    selection = _rank_selection(args)
    only = bool(getattr(args, "only", False))
    with connect(target) as client:
        snap = Snapshot.from_dict(client.snapshot())
        before = {r.rank: r.to_dict() for r in snap.ranks}
        if args.command in ("start", "restart"):
            chosen = list(before) if selection == "all" else snap.failed_ranks if selection == "failed" else selection
            plan = plan_restart({r.rank: r.state for r in snap.ranks}, [n for n in chosen if n in before],
                                scope=snap.group.scope, only=only, op=args.command,
                                waiting={r.rank for r in snap.ranks if r.waiting},
                                restart_scheduled=snap.group.next_restart_at is not None)
            if not _consent_to_world(args, plan, selection, snap):
                return EXIT_BAD_INPUT
        asked_at = time.time()
        result = client.request(args.command, ranks=selection, only=only,
                                who=f"`xllm-tui {args.command}` (pid {os.getpid()})")
        accepted = result.get("accepted", [])
        if not accepted:
            print(f"{args.command}: no rank matched {selection}")
            return EXIT_OK
        if result.get("explanation"):
            print(f"{args.command}: {result['explanation']}")
        print(f"{args.command}: rank(s) {', '.join(map(str, accepted))}", end="", flush=True)
        deadline = time.monotonic() + args.timeout
        while True:
            raw = client.snapshot()
            if _settled(raw, accepted, args.command, args.wait, before, asked_at):
                break
            if args.command != "stop" and raw["group"].get("waiting_for"):  # a machine was lost meanwhile
                print(f"\n{args.command}: the world waits: {raw['group']['reason']}")
                return EXIT_FAILED
            if time.monotonic() >= deadline:
                print(" (still in progress)")
                return EXIT_FAILED
            print(".", end="", flush=True)
            time.sleep(0.5)
    print()
    done = Snapshot.from_dict(raw)
    for n in accepted:
        r = done.rank(n)
        print(f"  rank {n}: {r.state} - {r.reason}")
    bad = [n for n in accepted if done.rank(n).state in ("failed", "crash-looping")]
    return EXIT_FAILED if bad and args.command != "stop" else EXIT_OK


cmd_start = cmd_stop = cmd_restart = cmd_lifecycle_op


# ------------------------------------------------------------------------------------------ toggle


def cmd_toggle(args: argparse.Namespace, target: Target) -> int:
    with connect(target) as client:
        result = client.request("toggle", group=args.group, on=args.value == "on",
                                who=f"`xllm-tui toggle` (pid {os.getpid()})")
    print(f"{result['group']}: {'on' if result['enabled'] else 'off'} (takes effect at the next launch)")
    pending = result.get("relaunch_pending") or []
    if pending:
        sim = " --simulate" if args.simulate else ""
        print(f"relaunch pending for rank(s) {', '.join(map(str, pending))}: "
              f"`xllm-tui restart {args.profile}{sim}` applies it")
    return EXIT_OK


# -------------------------------------------------------------------------------------------- logs


REMOTE_LOG = "<on another machine>"  # _log_path_for: read it through machine 0's supervisor (log_read)


def _remote_logs(args: argparse.Namespace, target: Target) -> int:
    """A rank on another machine: its log over the supervisor's connection to that machine, fetched on demand."""
    with connect(target, timeout=60) as client:
        if args.lines == 0:
            offset = 0
            while True:
                part = client.request("log_read", rank=args.rank, generation=args.generation, offset=offset)
                sys.stdout.write(part["data"])
                if part["next"] == offset or part.get("missing"):
                    break
                offset = part["next"]
        else:
            part = client.request("log_read", rank=args.rank, generation=args.generation, lines=args.lines)
            if part.get("missing"):
                err(f"{part['path']} does not exist (yet) on rank {args.rank}'s machine")
                return EXIT_FAILED
            sys.stdout.write(part["data"])
            offset = part["next"]
        sys.stdout.flush()
        inode = part.get("inode")
        caught_up = True
        while args.follow and args.generation == 0:
            if caught_up:  # a rank logging hard is read on at once, in log_read's largest replies, as tail -f does
                time.sleep(0.5)
            part = client.request("log_read", rank=args.rank, offset=offset, max_bytes=4 << 20)
            if inode is not None and part.get("inode") not in (None, inode):
                # A relaunch rotated the log: the name is a new file now, followed from its start (as tail -F).
                part = client.request("log_read", rank=args.rank, offset=0)
            inode = part.get("inode")
            if part["data"]:
                sys.stdout.write(part["data"])
                sys.stdout.flush()
            offset = part["next"]
            caught_up = not isinstance(part.get("size"), int) or offset >= part["size"]
    return EXIT_OK


def _log_path_for(args: argparse.Namespace, target: Target) -> str | None:
    from xllm_tui.client import SupervisorUnavailable

    try:
        with connect(target) as client:
            snap = client.snapshot()
        for r in snap["ranks"]:
            if r["rank"] == args.rank:
                if r.get("remote"):
                    return REMOTE_LOG
                from xllm_tui.logs.tail import deleted_log_source

                held = None if args.generation else deleted_log_source(r["log_path"], r.get("pid"))
                if held:
                    err(f"{r['log_path']} was deleted while rank {args.rank} runs: reading what it still writes, "
                        f"through {held}")
                return held or r["log_path"]
        err(f"no rank {args.rank}; ranks: {', '.join(str(r['rank']) for r in snap['ranks'])}")
        return None
    except SupervisorUnavailable:
        pass
    if target.profile is None:
        raise SupervisorUnavailable(target.run_dir)
    # No supervisor: the plan says where the log is (post-mortem reading works without one).
    from xllm_tui.launch import build_simulate_mapping, plan_launches

    mapping = build_simulate_mapping(target.profile) if target.simulate else None
    for launch in plan_launches(target.profile, simulate=mapping, base_env={},
                                log_root=target.run_dir if target.simulate else None):
        if launch.rank == args.rank:
            return launch.log_path
    err(f"no rank {args.rank} in profile {target.name}")
    return None


def cmd_logs(args: argparse.Namespace, target: Target) -> int:
    from xllm_tui.logs.tail import follow, log_generations, tail_lines

    path = _log_path_for(args, target)
    if path is None:
        return EXIT_BAD_INPUT
    if path == REMOTE_LOG:
        return _remote_logs(args, target)
    if args.generation:
        generations = log_generations(path)
        if args.generation > len(generations):
            err(f"rank {args.rank} has {len(generations)} earlier log generation(s); --generation "
                f"{args.generation} does not exist")
            return EXIT_BAD_INPUT
        path = generations[args.generation - 1]
    if not os.path.exists(path):
        err(f"{path} does not exist (yet)")
        return EXIT_FAILED
    if args.lines == 0:
        with open(path, "rb") as f:
            for raw in f:
                sys.stdout.write(raw.decode(errors="replace"))
    else:
        for line in tail_lines(path, args.lines):
            print(line)
    sys.stdout.flush()
    if args.follow and args.generation == 0:
        for line in follow(path, 0.3, from_end=True):
            print(line, flush=True)
    return EXIT_OK


# ------------------------------------------------------------------------------------------ events


def cmd_events(args: argparse.Namespace, target: Target) -> int:
    from xllm_tui.supervisor.state import EVENTS_NAME, iter_events

    path = os.path.join(target.run_dir, EVENTS_NAME)
    if not os.path.exists(path) and not args.follow:
        return no_supervisor(target)
    events = list(iter_events(path))
    if args.lines:
        events = events[-args.lines:]
    last = 0
    for ev in events:
        print(json.dumps(ev) if args.json else format_event(ev), flush=True)
        last = ev["seq"]
    if args.follow:
        with connect(target) as client:
            for ev in client.events(since=last):
                print(json.dumps(ev) if args.json else format_event(ev), flush=True)
    return EXIT_OK


# -------------------------------------------------------------------------------------------- down


def cmd_down(args: argparse.Namespace, target: Target) -> int:
    from xllm_tui.supervisor.state import LOG_NAME, is_locked

    with connect(target) as client:
        hello = client.hello()
        client.request("shutdown", stop_ranks=not args.keep_ranks, who=f"`xllm-tui down` (pid {os.getpid()})")
    what = "the supervisor" if args.keep_ranks else "every rank and the supervisor"
    print(f"stopping {what} (pid {hello['pid']})", end="", flush=True)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not is_locked(target.run_dir):
            print(" done")
            return EXIT_OK
        print(".", end="", flush=True)
        time.sleep(0.3)
    print()
    err(f"the supervisor (pid {hello['pid']}) is still running after {args.timeout:g}s; see "
        f"{os.path.join(target.run_dir, LOG_NAME)}")
    return EXIT_FAILED
