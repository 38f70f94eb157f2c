"""`xllm-tui init`: write a starter profile for this machine, from what it can read, then validate it.

Read here: the NPUs and their CPU affinity (npu-smi through xllm_tui.devices; the simulated npu-smi under
--simulate), this host's address, free ports, the Ascend set_env.sh scripts that exist. Asked (on a terminal)
or given as options: the xllm binary, the model and the draft model. Exit status: validate's (0 ok, 1
warnings, 2 errors: the file is written anyway, fix what it says), 2 also when nothing could be written.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys

ASCEND_SCRIPTS = ("/usr/local/Ascend/ascend-toolkit/set_env.sh", "/usr/local/Ascend/nnal/atb/set_env.sh")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--binary", metavar="PATH", help="the xllm binary (asked on a terminal when not given)")
    parser.add_argument("--model", metavar="DIR", help="the model directory (asked on a terminal when not given)")
    parser.add_argument("--draft-model", metavar="DIR", help="the draft (MTP) model directory; none by default")
    parser.add_argument("-o", "--output", metavar="FILE", help="where to write it (default: ./NAME.yaml)")
    parser.add_argument("--name", help="the profile's name (default: xllm-<short host name>)")
    parser.add_argument("--devices", metavar="LIST", help="NPU logic ids to use, e.g. 0-7 (default: every NPU read)")
    parser.add_argument("--host", help="the address the ranks use (default: this host's first non-loopback IPv4)")
    parser.add_argument("--npu-smi", metavar="PATH", help="npu-smi to read the devices with (default: on PATH)")
    parser.add_argument("--simulate", action="store_true", help="read the simulated npu-smi (an A3 machine; "
                        "XLLM_SIM_NPU_KIND=a2 for an A2)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")


def err(text: str) -> None:
    print(f"xllm-tui init: {text}", file=sys.stderr)


def this_host_address() -> tuple[str, str]:
    """(address, how it was chosen): the first IPv4 of an interface that is up and not loopback."""
    try:
        import psutil

        stats = psutil.net_if_stats()
        for name, addresses in sorted(psutil.net_if_addrs().items()):
            if name == "lo" or not (stats.get(name) and stats[name].isup):
                continue
            for address in addresses:
                if address.family == socket.AF_INET and not address.address.startswith("127."):
                    return address.address, f"interface {name}"
    except Exception:  # noqa: BLE001 - any failure falls back to loopback, said in the file
        pass
    return "127.0.0.1", "no non-loopback interface found: loopback, fine for one machine"


def _ask(question: str, default: str | None) -> str | None:
    shown = f" [{default}]" if default else ""
    try:
        answer = input(f"{question}{shown}: ").strip()
    except EOFError:
        answer = ""
    return answer or default


def _default_name() -> str:
    short = socket.gethostname().split(".")[0]
    return "xllm-" + (re.sub(r"[^A-Za-z0-9._-]", "-", short).strip("-") or "host")


def gather_facts(args: argparse.Namespace):
    """MachineFacts from this machine, or an error message."""
    from xllm_tui.cores import available_cores, parse_cores
    from xllm_tui.devices.probe import read_devices
    from xllm_tui.starter import MachineFacts, free_ports

    if args.simulate:
        from xllm_tui.commands.devices import SIMULATED_NPU_SMI

        report = read_devices(npu_smi=SIMULATED_NPU_SMI)
    else:
        report = read_devices(npu_smi=args.npu_smi or None)
    notes = []
    read = sorted(d.logic_id for d in report.devices if d.logic_id is not None)
    if args.devices:
        try:
            devices = list(parse_cores(args.devices))
        except ValueError as e:
            return f"--devices: {e}"
        missing = [d for d in devices if read and d not in read]
        if missing:
            return f"--devices: NPU(s) {', '.join(map(str, missing))} not on this machine ({report.backend} lists " \
                   f"{', '.join(map(str, read))})"
        if not read:
            notes.append(f"devices not read ({'; '.join(report.errors) or 'no tool'}): --devices as given")
    elif read:
        devices = read
    else:
        return ("no devices read: " + ("; ".join(report.errors) or "no npu-smi") +
                "; give --devices 0-7 (and --npu-smi PATH), or try --simulate")
    names = {d.name for d in report.devices if d.name}
    if args.host:
        host, how = args.host, "given with --host"
    else:
        host, how = this_host_address()
    notes.append(f"host {host}: {how}" + ("; under --simulate every address maps to loopback" if args.simulate else ""))
    notes.append(f"devices: {report.backend}" + (" (simulated)" if args.simulate else "") +
                 f", {len(read)} listed, {len(devices)} used")
    base, master = free_ports(len(devices))
    cpus = list(available_cores())
    affinity = {d: a for d, a in report.topology.cpu_affinity.items() if d in devices}
    npu_smi = None  # a tool given by path goes into the profile, so the supervisor reads the same one
    if args.npu_smi and not args.simulate:
        npu_smi = os.path.abspath(args.npu_smi) if os.sep in args.npu_smi else args.npu_smi
    return MachineFacts(host=host, devices=devices, affinity=affinity, cpus=cpus, base_port=base, master_port=master,
                        backend=report.backend or "npu-smi", device_name=" / ".join(sorted(names)),
                        source_scripts=[s for s in ASCEND_SCRIPTS if os.path.isfile(s)], notes=notes,
                        npu_smi=npu_smi)


def run(args: argparse.Namespace) -> int:
    from xllm_tui.starter import GUIDE_BINARY, Answers, starter_profile

    name = args.name or _default_name()
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name):
        err(f"--name {name!r}: letters, digits, '.', '_' and '-' only (it names the run directory)")
        return 2
    output = args.output or f"{name}.yaml"
    if os.path.exists(output) and not args.force:
        err(f"{output} exists; use --force to overwrite it, or --output another file")
        return 2
    facts = gather_facts(args)
    if isinstance(facts, str):
        err(facts)
        return 2
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    binary, model, draft = args.binary, args.model, args.draft_model
    if interactive:
        binary = binary or _ask("xllm binary", GUIDE_BINARY)
        model = model or _ask("model directory", None)
        if args.draft_model is None:
            draft = _ask("draft (MTP) model directory, empty for none", None)
    binary = binary or GUIDE_BINARY
    if not model:
        model = "/path/to/model"
        print("no --model given: wrote /path/to/model; set `model:` to the model directory", file=sys.stderr)
    text = starter_profile(facts, Answers(name=name, binary=binary, model=model, draft_model=draft or None))
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(output)}.tmp{os.getpid()}")
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(temporary, output)
    print(f"wrote {output}: {len(facts.devices)} rank(s) on {facts.host}, ports {facts.base_port}-"
          f"{facts.base_port + len(facts.devices) - 1}, master {facts.host}:{facts.master_port}")
    print("validating it:")
    from xllm_tui.commands import validate

    parser = argparse.ArgumentParser()
    validate.add_arguments(parser, "validate")
    argv = [output] + (["--simulate"] if args.simulate else []) + (["--npu-smi", args.npu_smi] if args.npu_smi else [])
    return int(validate.run(parser.parse_args(argv)) or 0)
