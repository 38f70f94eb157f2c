"""Launch plans: a validated Profile -> one RankLaunch per rank (argv, environment, cwd, log file).

Everything here is pure except where said (the default base environment is os.environ, the simulate
mapping reads this process's CPU affinity and checks LD_PRELOAD files). Also renders the equivalent
bash script and the HCCL rank table. No Textual, no processes are started here.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from xllm_tui.cores import available_cores, cores_for_rank, format_cores, map_cores, parse_cores
from xllm_tui.spec import FlagValue, Machine, Profile, RankLaunch, RankSpec
from xllm_tui.xllm_flags import DEFAULT_RELEASE

if TYPE_CHECKING:
    from xllm_tui.devices.model import DeviceReport

SIM_MODULE = "xllm_tui.sim.xllm"
SIMULATED_NPU_SMI = (sys.executable, "-m", "xllm_tui.sim.npu_smi")

# Identity flags the plan writes itself; a profile flag with one of these names would be a second,
# conflicting value. (--draft_model, --draft_devices and --rank_tablefile may come either way: profile.py
# already places them in Profile.flags; the plan adds them only when they are not there.)
GENERATED_FLAGS = ("model", "model_id", "host", "port", "devices", "master_node_addr", "nnodes", "node_rank")

_PLACEHOLDER = re.compile(r"\{(rank|local_rank|device|port|host)\}")
_IPV4 = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(?![\w.])")
# Directories ld.so searches by default; used to decide whether a bare LD_PRELOAD name would resolve.
_DEFAULT_LIB_DIRS = ("/lib", "/usr/lib", "/lib64", "/usr/lib64", f"/usr/lib/{os.uname().machine}-linux-gnu")


class LaunchError(ValueError):
    """A profile cannot be turned into launches as asked (unknown machine, missing topology, ...)."""


# --------------------------------------------------------------------------------------------- ranks


def select_machines(profile: Profile, machine: str | None = None) -> list[tuple[int, Machine]]:
    """(index, Machine) pairs: all machines, or the one whose host or name is `machine`."""
    indexed = list(enumerate(profile.machines))
    if machine is None:
        return indexed
    chosen = [(i, m) for i, m in indexed if machine in (m.host, m.name)]
    if not chosen:
        known = ", ".join(m.host + (f" ({m.name})" if m.name and m.name != m.host else "") for m in profile.machines)
        raise LaunchError(
            f"{profile.source_path}: no machine {machine!r} in profile {profile.name!r}; "
            f"choose one of: {known} (by host address or name)"
        )
    return chosen[:1]


def _rank_cores(
    profile: Profile, machine: Machine, local_rank: int, device: int, topology_cores: Mapping[int, str] | None
) -> str | None:
    if machine.cores:
        if local_rank >= len(machine.cores):
            raise LaunchError(
                f"{profile.source_path}: machine {machine.host} lists {len(machine.cores)} core lists "
                f"for {len(machine.devices)} devices; give one per device"
            )
        return machine.cores[local_rank]
    rule = profile.core_rule
    if rule.kind == "topology":
        if topology_cores is None:
            raise LaunchError(
                f"{profile.source_path}: core rule 'topology' needs the NPU topology "
                "(CPU affinity from `npu-smi info -t topo`), and none was given; run where npu-smi works, "
                "or use core rule per_device / an explicit cores list"
            )
        if device not in topology_cores or not topology_cores[device]:
            raise LaunchError(
                f"{profile.source_path}: npu-smi topology has no CPU affinity for device {device} "
                f"(known: {sorted(topology_cores)}); give the machine an explicit cores list"
            )
        return topology_cores[device]
    return cores_for_rank(rule, device, local_rank)


def ranks_of(
    profile: Profile, machine: str | None = None, topology_cores: Mapping[int, str] | None = None
) -> list[RankSpec]:
    """Every rank of the world (or of one machine), numbered machine by machine.

    Machine 0's devices are ranks 0..n0-1, machine 1's continue from n0, as the guide's node_rank=i+LOCAL_NODES.
    Every machine uses base_port + local_rank, as the guide's START_PORT + i.
    """
    selected = {i for i, _ in select_machines(profile, machine)}
    specs: list[RankSpec] = []
    rank = 0
    for index, m in enumerate(profile.machines):
        for local_rank, device in enumerate(m.devices):
            if index in selected:
                specs.append(
                    RankSpec(
                        rank=rank,
                        local_rank=local_rank,
                        machine=m,
                        device=device,
                        port=profile.base_port + local_rank,
                        cores=_rank_cores(profile, m, local_rank, device, topology_cores),
                    )
                )
            rank += 1
    return specs


# ------------------------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DeviceTools:
    """Which device tool to run for a profile: the arguments of devices.probe.read_devices, and why."""

    npu_smi: str | tuple[str, ...] | None = None
    nvidia_smi: str | None = None
    timeout_s: float = 10.0
    origin: str = "auto"  # "--simulate", "command line", "profile devices:", "auto"
    missing: str | None = None  # why no tool can run here (nothing found on PATH, path missing)

    @property
    def available(self) -> bool:
        return self.missing is None

    def describe(self) -> str:
        tool = self.npu_smi or self.nvidia_smi
        if self.origin == "--simulate":
            return "the simulated npu-smi (--simulate)"
        if tool is None:
            return f"npu-smi or nvidia-smi from PATH ({self.origin})"
        return f"{tool if isinstance(tool, str) else shlex.join(tool)} ({self.origin})"


def _tool_missing(tool: str) -> str | None:
    if "/" in tool:
        return None if os.path.isfile(tool) and os.access(tool, os.X_OK) else f"{tool} not found or not executable"
    return None if shutil.which(tool) else f"{tool} is not on PATH"


def device_tools(
    profile: Profile | None = None,
    *,
    simulate: bool = False,
    npu_smi: str | None = None,
    nvidia_smi: str | None = None,
    timeout: float | None = None,
) -> DeviceTools:
    """The tool to read a machine's devices with. Precedence: --npu-smi/--nvidia-smi, then --simulate (the
    simulated npu-smi, whatever the profile says), then the profile's `devices:` key, then npu-smi on PATH,
    then nvidia-smi. Looks at PATH and the file system only; runs nothing."""
    settings = profile.devices if profile is not None else None
    wait = timeout if timeout is not None else (settings.timeout_s if settings is not None else 10.0)
    if npu_smi or nvidia_smi:
        tool = npu_smi or nvidia_smi
        assert tool is not None
        return DeviceTools(npu_smi, None if npu_smi else nvidia_smi, wait, "command line", _tool_missing(tool))
    if simulate:
        return DeviceTools(SIMULATED_NPU_SMI, None, wait, "--simulate")
    if settings is not None and settings.backend == "npu-smi":
        tool = settings.npu_smi or "npu-smi"
        return DeviceTools(tool, None, wait, "profile devices:", _tool_missing(tool))
    if settings is not None and settings.backend == "nvidia-smi":
        tool = settings.nvidia_smi or "nvidia-smi"
        return DeviceTools(None, tool, wait, "profile devices:", _tool_missing(tool))
    # auto: a path the profile names first, then whatever is on PATH
    for npu, nvidia in ((settings.npu_smi, None), (None, settings.nvidia_smi)) if settings is not None else ():
        tool = npu or nvidia
        if tool and _tool_missing(tool) is None:
            return DeviceTools(npu, nvidia, wait, "profile devices:")
    for name in ("npu-smi", "nvidia-smi"):
        found = shutil.which(name)
        if found:
            return DeviceTools(found if name == "npu-smi" else None, found if name == "nvidia-smi" else None, wait, "auto")
    return DeviceTools(None, None, wait, "auto", "no device tool here: neither npu-smi nor nvidia-smi is on PATH")


def read_profile_devices(
    profile: Profile | None = None,
    *,
    simulate: bool = False,
    npu_smi: str | None = None,
    nvidia_smi: str | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    tools: DeviceTools | None = None,
) -> DeviceReport:
    """Read the devices with device_tools(...) (or `tools`). Blocking (runs the tool, bounded by the
    timeout): callers with an event loop call it from a thread. Never raises: an unavailable report says why."""
    from xllm_tui.devices.probe import read_devices

    tools = tools or device_tools(profile, simulate=simulate, npu_smi=npu_smi, nvidia_smi=nvidia_smi, timeout=timeout)
    # A missing tool is not short-cut here: read_devices says what is missing and how to name it.
    return read_devices(npu_smi=tools.npu_smi, nvidia_smi=tools.nvidia_smi, timeout=tools.timeout_s, env=env)


def local_addresses() -> set[str]:
    """Names and addresses of this host (loopback, hostname, every interface address)."""
    import socket

    found = {"127.0.0.1", "::1", "localhost", socket.gethostname(), socket.getfqdn()}
    try:
        import psutil

        for entries in psutil.net_if_addrs().values():
            found.update(e.address.split("%")[0] for e in entries)
    except Exception:  # no address list: only the names above match
        pass
    return found


def machines_here(profile: Profile, *, simulate: bool = False, addresses: Iterable[str] | None = None) -> list[int]:
    """Indices of the profile's machines that are this host (host or name is one of its addresses).

    Under --simulate every machine runs here, but the devices read are one machine's: machine 0's.
    """
    if simulate:
        return [0] if profile.machines else []
    mine = set(local_addresses() if addresses is None else addresses)
    return [i for i, m in enumerate(profile.machines) if m.host.strip("[]") in mine or (m.name and m.name in mine)]


def machine_of_this_host(profile: Profile, *, simulate: bool = False, addresses: Iterable[str] | None = None):
    """The profile's machine that is this host, or None (under --simulate: machine 0, whose devices are read)."""
    here = machines_here(profile, simulate=simulate, addresses=addresses)
    return profile.machines[here[0]] if here else None


def needs_topology(profile: Profile, machine: str | None = None) -> bool:
    """True when some rank (of `machine`, or of any machine) takes its cores from the NPU topology."""
    if profile.core_rule.kind != "topology":
        return False
    return any(not m.cores for _, m in select_machines(profile, machine))


def topology_cores_from_devices(
    profile: Profile, report: DeviceReport | None, machine: str | None = None
) -> dict[int, str] | None:
    """device -> cores for a profile with `cores: topology`, from the CPU affinity in `report` (read on the
    machine that runs the ranks); pass the result as plan_launches(topology_cores=...).

    None when no rank needs it (another core rule, or explicit cores on every machine). NPUs that share an
    affinity split it in logic-id order, `cores.count` cores each (devices.affinity.topology_cores).
    Raises LaunchError, saying what to do, when the report has no devices or no affinity for a rank's NPU.
    """
    from xllm_tui.devices.affinity import topology_cores

    if not needs_topology(profile, machine):
        return None
    how_to_fix = (
        "run this on the machine that runs the ranks (where npu-smi works; or use --simulate), or give "
        "explicit cores (each machine's cores: ['0-11', ...], or cores: {rule: per_device, count: 12})"
    )
    if report is None or not report.devices:
        why = "; ".join(report.errors) if report is not None and report.errors else "the devices were not read"
        raise LaunchError(
            f"{profile.source_path}: the core rule `cores: topology` needs each NPU's CPU affinity from `npu-smi info -t topo`, "
            f"but no devices could be read here ({why}): {how_to_fix}"
        )
    if not report.topology.cpu_affinity:
        raise LaunchError(
            f"{profile.source_path}: the core rule `cores: topology` needs each NPU's CPU affinity, but this machine's "
            f"`npu-smi info -t topo` prints no CPU Affinity column (as A3 machines on ARM do): {how_to_fix}"
        )
    cores = topology_cores(report.topology, profile.core_rule.count)
    needed = sorted({d for _, m in select_machines(profile, machine) if not m.cores for d in m.devices})
    unknown = [d for d in needed if d not in cores]
    if unknown:
        raise LaunchError(
            f"{profile.source_path}: the core rule `cores: topology`: the topology gives no CPU affinity for NPU(s) "
            f"{', '.join(map(str, unknown))} (it lists {', '.join(map(str, sorted(cores))) or 'none'}): {how_to_fix}"
        )
    return cores


# ------------------------------------------------------------------------------------------ simulate


def _split_host_port(addr: str) -> tuple[str, int | None]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        return addr, None
    return host, int(port)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _preload_entries(value: str) -> list[str]:
    # ld.so accepts both colons and spaces as separators.
    return [e for e in re.split(r"[:\s]+", value) if e]


def _preload_resolves(entry: str, library_path: str) -> bool:
    if "/" in entry:
        return os.path.exists(entry)
    dirs = [d for d in library_path.split(":") if d] + list(_DEFAULT_LIB_DIRS)
    return any(os.path.exists(os.path.join(d, entry)) for d in dirs)


@dataclass
class SimulateMapping:
    """How --simulate maps a profile onto this machine; everything not named here stays as the profile says."""

    binary_argv: tuple[str, ...]
    addresses: dict[str, str]  # profile address -> loopback address
    cores: dict[str, str]  # profile core list -> core list within this process's CPU affinity
    port_offset: int = 0
    allowed_cores: tuple[int, ...] = ()
    withheld_preload: tuple[str, ...] = ()  # profile LD_PRELOAD entries missing here (withheld from the env)
    numactl: bool = True  # False when numactl is not installed here: ranks run unbound
    _address_pattern: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def map_address(self, text: str) -> str:
        """`text` with every profile address replaced by its loopback address (whole addresses only)."""
        if not self.addresses:
            return text
        if self._address_pattern is None:
            alternatives = "|".join(re.escape(a) for a in sorted(self.addresses, key=len, reverse=True))
            self._address_pattern = re.compile(rf"(?<![\w.-])(?:{alternatives})(?![\w-]|\.\w)")
        return self._address_pattern.sub(lambda m: self.addresses[m.group(0)], text)

    def map_cores(self, cores: str) -> str:
        """Core c -> allowed[c % len(allowed)], deduplicated, compact; cached in self.cores."""
        if cores not in self.cores:
            allowed = self.allowed_cores or available_cores()
            self.cores[cores] = format_cores(map_cores(parse_cores(cores), allowed))
        return self.cores[cores]

    def map_port(self, port: int) -> int:
        mapped = port + self.port_offset
        if not 1 <= mapped <= 65535:
            raise LaunchError(f"simulated port {port}{self.port_offset:+d} = {mapped} is outside 1..65535")
        return mapped

    def map_host_port(self, addr: str) -> str:
        host, port = _split_host_port(addr)
        host = self.map_address(host)
        return host if port is None else f"{host}:{self.map_port(port)}"

    def describe(self) -> list[str]:
        lines = [f"binary -> {shlex.join(self.binary_argv)}"]
        lines += [f"{original} -> {mapped}" for original, mapped in self.addresses.items()]
        lines += [f"cores {original} -> {mapped}" for original, mapped in self.cores.items()]
        if self.port_offset:
            lines.append(f"ports shifted by {self.port_offset:+d}")
        if not self.numactl:
            lines.append("numactl not found here: ranks run without core binding")
        lines += [f"LD_PRELOAD {entry} withheld (not on this machine)" for entry in self.withheld_preload]
        return lines


def _profile_addresses(profile: Profile) -> list[str]:
    """Every IPv4 address the profile mentions, in a stable order: machines first, master, then the rest."""
    found: list[str] = []

    def add(address: str) -> None:
        if address and address not in found and not _is_loopback(address):
            found.append(address)

    for m in profile.machines:
        add(m.host)
    add(_split_host_port(profile.master_node_addr)[0])
    texts = [str(v) for _, v in profile.flags] + [v for _, v in profile.env]
    texts += [v for t in profile.toggles for _, v in t.env]
    for text in texts:
        for match in _IPV4.finditer(text):
            add(match.group(1))
    return found


def build_simulate_mapping(
    profile: Profile, port_offset: int = 0, topology_cores: Mapping[int, str] | None = None
) -> SimulateMapping:
    """Machine i -> 127.0.0.(i+1); the master host like its machine; any other address the profile
    mentions -> a further loopback address. Cores onto os.sched_getaffinity(0)."""
    addresses: dict[str, str] = {}
    for index, m in enumerate(profile.machines):
        addresses.setdefault(m.host, f"127.0.0.{index + 1}")
    master_host = _split_host_port(profile.master_node_addr)[0]
    if master_host and not _is_loopback(master_host):
        # Rank 0 runs on machine 0, so an unlisted master host still belongs there.
        addresses.setdefault(master_host, "127.0.0.1")
    next_octet = len(profile.machines) + 1
    for address in _profile_addresses(profile):
        if address not in addresses:
            addresses[address] = f"127.0.0.{next_octet}"
            next_octet += 1
    for original in list(addresses):
        if _is_loopback(original):
            del addresses[original]  # already local: leave as written

    mapping = SimulateMapping(
        binary_argv=(sys.executable, "-m", SIM_MODULE),
        addresses=addresses,
        cores={},
        port_offset=port_offset,
        allowed_cores=available_cores(),
        numactl=shutil.which("numactl") is not None,
    )
    # Topology cores are known only at plan time; map_cores fills those in then.
    if profile.core_rule.kind != "topology" or topology_cores is not None:
        for spec in ranks_of(profile, topology_cores=topology_cores):
            if spec.cores:
                mapping.map_cores(spec.cores)

    preload = [e for name, entries in profile.path_prepend if name == "LD_PRELOAD" for e in entries]
    preload += [e for name, value in profile.env if name == "LD_PRELOAD" for e in _preload_entries(value)]
    library_path = ":".join(
        [e for name, entries in profile.path_prepend if name == "LD_LIBRARY_PATH" for e in entries]
        + [v for name, v in profile.env if name == "LD_LIBRARY_PATH"]
    )
    mapping.withheld_preload = tuple(dict.fromkeys(e for e in preload if not _preload_resolves(e, library_path)))
    return mapping


# ----------------------------------------------------------------------------------------------- plan


def render_flag_value(value: FlagValue) -> str:
    """gflags spelling: booleans true/false, everything else as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _substitute(text: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def profile_dir(profile: Profile) -> str:
    return os.path.dirname(os.path.abspath(profile.source_path))


def working_dir_of(profile: Profile) -> str:
    """profile.working_dir (relative to the profile file) or the profile file's directory."""
    if profile.working_dir:
        return os.path.normpath(os.path.join(profile_dir(profile), os.path.expanduser(profile.working_dir)))
    return profile_dir(profile)


def effective_toggles(profile: Profile, toggles: Mapping[str, bool] | None = None) -> dict[str, bool]:
    """name -> enabled: the profile's states with `toggles` overriding; unknown names are an error."""
    states = {t.name: t.enabled for t in profile.toggles}
    for name, on in (toggles or {}).items():
        if name not in states:
            raise LaunchError(f"no toggle group {name!r} in profile {profile.name!r}; known: {', '.join(states) or 'none'}")
        states[name] = bool(on)
    return states


def compose_env(
    profile: Profile,
    *,
    base_env: Mapping[str, str] | None = None,
    captured_env: Mapping[str, str] | None = None,
    toggles: Mapping[str, bool] | None = None,
    simulate: SimulateMapping | None = None,
) -> dict[str, str]:
    """base_env (default os.environ) + captured_env + path_prepend + profile env + enabled toggles (and their unset)."""
    env = dict(os.environ if base_env is None else base_env)
    captured = dict(captured_env or {})
    for name, entries in profile.path_prepend:
        # The guide exports its paths first (export X=entry:$X), then sources set_env.sh, which puts its
        # own entries in front: scripts' additions, then the profile's entries, then the inherited value.
        inherited = env.get(name, "")
        added = captured.pop(name, None)
        if added is not None and inherited:
            added = added[: -len(inherited)].rstrip(":") if added.endswith(inherited) else added
            if added == inherited:
                added = ""
        parts = [p for p in (added or "", ":".join(entries), inherited) if p]
        env[name] = ":".join(parts)
    env.update(captured)
    env.update(profile.env)
    states = effective_toggles(profile, toggles)
    for toggle in profile.toggles:
        if states[toggle.name]:
            env.update(toggle.env)
            for name in toggle.unset:
                env.pop(name, None)
    if simulate is not None:
        env = {name: simulate.map_address(value) for name, value in env.items()}
        if profile.xllm_release != DEFAULT_RELEASE:  # the simulator's default is the guide's commit too
            env.setdefault("XLLM_SIM_XLLM_VERSION", profile.xllm_release)  # imitate the profile's xllm
        if "LD_PRELOAD" in env:
            # A missing preload makes ld.so print an error into every log line's process: withhold it.
            kept = [e for e in _preload_entries(env["LD_PRELOAD"]) if _preload_resolves(e, env.get("LD_LIBRARY_PATH", ""))]
            if kept:
                env["LD_PRELOAD"] = ":".join(kept)
            else:
                del env["LD_PRELOAD"]
    return env


def _is_speculative_flag(name: str) -> bool:
    return "speculative" in name


def rank_argv(
    profile: Profile, spec: RankSpec, simulate: SimulateMapping | None = None
) -> tuple[str, ...]:
    """numactl -C cores, the binary, then the flags in the guide's order.

    --model, --model_id, --host, --port, --devices, --master_node_addr, --nnodes, --node_rank, the
    profile's flags, --draft_model/--draft_devices (unless the flags hold them already: placed before the
    first draft_* or *speculative* flag, as the guide writes them, else after the profile's flags),
    --rank_tablefile (unless in the flags already).
    """
    host = spec.machine.host
    port = spec.port
    master = profile.master_node_addr
    cores = spec.cores
    binary: tuple[str, ...] = (profile.binary,)
    if simulate is not None:
        host = simulate.map_address(host)
        port = simulate.map_port(port)
        master = simulate.map_host_port(master)
        cores = simulate.map_cores(cores) if cores and simulate.numactl else None
        binary = tuple(simulate.binary_argv)
    values = {
        "rank": str(spec.rank),
        "local_rank": str(spec.local_rank),
        "device": str(spec.device),
        "port": str(port),
        "host": host,
    }
    flags: list[tuple[str, str]] = [("model", profile.model)]
    if profile.model_id:
        flags.append(("model_id", profile.model_id))
    flags += [
        ("host", host),
        ("port", str(port)),
        ("devices", f"npu:{spec.device}"),
        ("master_node_addr", master),
        ("nnodes", str(profile.nnodes)),
        ("node_rank", str(spec.rank)),
    ]
    given = {name for name, _ in profile.flags}
    draft_flags: list[tuple[str, str]] = []
    if profile.draft_model:
        draft_flags = [(n, v) for n, v in (("draft_model", profile.draft_model), ("draft_devices", f"npu:{spec.device}"))
                       if n not in given]
    for name, value in profile.flags:
        if draft_flags and (_is_speculative_flag(name) or name.startswith("draft_")):
            flags += draft_flags  # the guide keeps the draft model next to its speculative settings
            draft_flags = []
        if name in GENERATED_FLAGS:
            raise LaunchError(
                f"{profile.source_path}: flag {name!r} is set by the launch plan itself; "
                "remove it from flags and use the profile's own key for it"
            )
        text = _substitute(render_flag_value(value), values)
        flags.append((name, simulate.map_address(text) if simulate is not None else text))
    flags += draft_flags
    if profile.rank_tablefile and "rank_tablefile" not in given:
        flags.append(("rank_tablefile", profile.rank_tablefile))
    prefix: tuple[str, ...] = ("numactl", "-C", cores) if cores else ()
    return prefix + binary + tuple(f"--{name}={value}" for name, value in flags)


def plan_launches(
    profile: Profile,
    *,
    machine: str | None = None,
    simulate: SimulateMapping | None = None,
    base_env: Mapping[str, str] | None = None,
    captured_env: Mapping[str, str] | None = None,
    toggles: Mapping[str, bool] | None = None,
    topology_cores: Mapping[int, str] | None = None,
    log_root: str | None = None,
) -> list[RankLaunch]:
    """One RankLaunch per rank of `machine` (default: every machine).

    log_root, when given, replaces the working directory as the base of log_dir (the supervisor's run dir).
    Under `simulate`, each RankLaunch.spec holds what really runs: loopback host, shifted port, mapped
    cores (spec.machine.name keeps the profile's host for display).
    """
    env = tuple(sorted(compose_env(
        profile, base_env=base_env, captured_env=captured_env, toggles=toggles, simulate=simulate
    ).items()))
    cwd = working_dir_of(profile)
    log_base = os.path.join(log_root or cwd, os.path.expanduser(profile.log_dir))
    launches = []
    specs = ranks_of(profile, machine, topology_cores)
    names = [_substitute(profile.log_file, {
        "rank": str(spec.rank), "local_rank": str(spec.local_rank), "device": str(spec.device),
        "port": str(spec.port), "host": spec.machine.host,
    }) for spec in specs]
    # node_{local_rank}.log names each machine's logs as the guide does, each on its own machine; when
    # several machines run on this host (--simulate) the names collide: each machine gets a directory.
    shared = simulate is not None and len(set(names)) < len(names)
    for spec, log_name in zip(specs, names):
        if shared:
            log_name = os.path.join(spec.machine.name or spec.machine.host, log_name)
        argv = rank_argv(profile, spec, simulate)
        if simulate is not None:
            # The spec says what really runs, so nothing downstream (probes, UIs) sees a real address.
            spec = replace(
                spec,
                port=simulate.map_port(spec.port),
                cores=simulate.map_cores(spec.cores) if spec.cores and simulate.numactl else None,
                machine=replace(spec.machine, host=simulate.map_address(spec.machine.host),
                                name=spec.machine.name or spec.machine.host),
            )
        launches.append(
            RankLaunch(
                spec=spec,
                argv=argv,
                env=env,
                cwd=cwd,
                log_path=os.path.normpath(os.path.join(log_base, log_name)),
                role="master" if spec.rank == 0 else "worker",
            )
        )
    return launches


def flag_pairs(argv: Iterable[str]) -> list[tuple[str, str]]:
    """(name, value) of every --name=value / --name argument (a bare --name reads as true)."""
    pairs = []
    for arg in argv:
        if arg.startswith("--"):
            name, sep, value = arg[2:].partition("=")
            pairs.append((name, value if sep else "true"))
    return pairs


@dataclass(frozen=True)
class LaunchDiff:
    """What differs between two launches of the same rank (for "relaunch pending")."""

    env_added: dict[str, str]
    env_removed: dict[str, str]
    env_changed: dict[str, tuple[str, str]]  # name -> (old, new)
    argv_old: tuple[str, ...]
    argv_new: tuple[str, ...]
    cwd_changed: tuple[str, str] | None = None

    @property
    def argv_changed(self) -> bool:
        return self.argv_old != self.argv_new

    def __bool__(self) -> bool:
        return bool(self.env_added or self.env_removed or self.env_changed or self.argv_changed or self.cwd_changed)

    def describe(self) -> list[str]:
        lines = [f"+ {k}={v}" for k, v in sorted(self.env_added.items())]
        lines += [f"- {k}={v}" for k, v in sorted(self.env_removed.items())]
        lines += [f"~ {k}: {old} -> {new}" for k, (old, new) in sorted(self.env_changed.items())]
        if self.argv_changed:
            old, new = set(self.argv_old), set(self.argv_new)
            lines += [f"- arg {a}" for a in self.argv_old if a not in new]
            lines += [f"+ arg {a}" for a in self.argv_new if a not in old]
            if old == new:
                lines.append("~ argument order changed")
        if self.cwd_changed:
            lines.append(f"~ cwd: {self.cwd_changed[0]} -> {self.cwd_changed[1]}")
        return lines


def launch_diff(old: RankLaunch, new: RankLaunch) -> LaunchDiff:
    a, b = old.env_dict(), new.env_dict()
    return LaunchDiff(
        env_added={k: v for k, v in b.items() if k not in a},
        env_removed={k: v for k, v in a.items() if k not in b},
        env_changed={k: (a[k], b[k]) for k in a.keys() & b.keys() if a[k] != b[k]},
        argv_old=tuple(old.argv),
        argv_new=tuple(new.argv),
        cwd_changed=(old.cwd, new.cwd) if old.cwd != new.cwd else None,
    )


env_of_launch_diff = launch_diff


# --------------------------------------------------------------------------------------------- script


def _glob_word(pattern: str) -> str:
    """A shell word that globs like `pattern`: quote everything except * ? [ ] and a leading ~/."""
    prefix = ""
    if pattern == "~" or pattern.startswith("~/"):
        prefix, pattern = "~", pattern[1:]
    parts = re.split(r"([*?\[\]])", pattern)
    return prefix + "".join(p if p in ("*", "?", "[", "]") else (shlex.quote(p) if p else "") for p in parts)


def _comment(text: str) -> list[str]:
    return [f"# {line}".rstrip() for line in text.splitlines() or [""]]


def _inside(path: str, roots: Iterable[str]) -> bool:
    path = os.path.normpath(path)
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in map(os.path.normpath, roots))


def _simulate_keeps(pattern: str, roots: list[str]) -> bool:
    """Whether a simulated run may act on `pattern`: ~/ patterns (under $HOME) and paths inside `roots`
    (working directory first: relative patterns resolve there) yes; system paths such as /root/atb/log/ no.
    The supervisor's pre-launch guard under --simulate draws the same line."""
    if pattern == "~" or pattern.startswith("~/"):
        return True
    expanded = os.path.expanduser(pattern)
    return _inside(expanded if os.path.isabs(expanded) else os.path.join(roots[0], expanded), roots)


SIMULATE_SKIP_NOTE = "  # --simulate: a system path, never touched by a simulated run"


def _relative_to(path: str, base: str) -> str:
    rel = os.path.relpath(path, base)
    return path if rel.startswith("..") else rel


def _launch_lines(launch: RankLaunch, indent: str = "") -> list[str]:
    argv = list(launch.argv)
    spec = launch.spec
    binary_end = next((i for i, a in enumerate(argv) if a.startswith("--")), len(argv))
    head = shlex.join(argv[:binary_end]) if binary_end else ""
    lines = [
        f"{indent}# rank {spec.rank} ({launch.role}): device {spec.device}, port {spec.port}, "
        f"cores {spec.cores or 'unbound'}",
        f"{indent}nohup {head} \\",
    ]
    lines += [f"{indent}  {shlex.quote(arg)} \\" for arg in argv[binary_end:]]
    lines.append(f"{indent}  > {shlex.quote(_relative_to(launch.log_path, launch.cwd))} 2>&1 &")
    return lines


def render_script(
    profile: Profile,
    machine: str | None = None,
    *,
    simulate: SimulateMapping | None = None,
    toggles: Mapping[str, bool] | None = None,
    topology_cores: Mapping[int, str] | None = None,
    notes: Iterable[str] = (),
) -> str:
    """The equivalent bash launch script, in the launch guide's style.

    One machine (or `machine` given): exports, sources, pre-launch removals, one nohup line per rank.
    Several machines: the shared part, then one function per machine and a dispatch on $1
    (a machine's host or name, or `all` to start every machine's ranks here, as --simulate does).
    Under `simulate`, sourcing system scripts, removing system paths (outside the working directory,
    the profile's directory and ~/) and `run` steps are commented out: a simulated run never touches them.
    `notes` become comment lines in the header.
    """
    machines = select_machines(profile, machine)
    cwd = working_dir_of(profile)
    states = effective_toggles(profile, toggles)
    # argv comes from the plan itself, so the script can never drift from what the supervisor runs.
    launches = plan_launches(
        profile, machine=machine, simulate=simulate, base_env={}, captured_env={}, toggles=toggles,
        topology_cores=topology_cores,
    )
    out = ["#!/usr/bin/env bash"]
    out += _comment(f"Launch script for profile {profile.name!r}, generated by `xllm-tui script` from {profile.source_path}.")
    out.append("# It starts the same processes with the same environment as `xllm-tui up`; diff it against your own.")
    if profile.description:
        out += _comment(profile.description)
    if simulate is not None:
        out.append("# --simulate: the xllm binary is the simulator; mapped onto this machine:")
        out += [f"#   {line}" for line in simulate.describe()]
    for note in notes:
        out += _comment(note)
    out.append("")
    roots = list(dict.fromkeys([cwd, profile_dir(profile)]))

    def keeps(pattern: str) -> bool:
        return simulate is None or _simulate_keeps(pattern, roots)

    def removal(pattern: str, prefix: str = "") -> str:
        line = f"rm -rf {_glob_word(pattern)}"
        return f"{prefix}{line}" if keeps(pattern) else f"# {line}{SIMULATE_SKIP_NOTE}"

    several = not (len(machines) == 1 and (machine is not None or len(profile.machines) == 1))
    if several:
        # Choose the machine first: a wrong argument must not run the pre-launch removals.
        usage = " | ".join([m.host for _, m in machines] + ["all"])
        out.append('case "${1:-}" in')
        for index, m in machines:
            names = dict.fromkeys([m.host, str(index)] + ([m.name] if m.name else []))
            out.append(f"  {'|'.join(shlex.quote(n) for n in names)}) machines=({index}) ;;")
        out.append(f"  all) machines=({' '.join(str(index) for index, _ in machines)}) ;;")
        out.append(f'  *) echo "usage: $0 MACHINE" {shlex.quote(f"(one of: {usage})")} >&2; exit 2 ;;')
        out += ["esac", ""]
    out += [f"cd {shlex.quote(cwd)} || exit 1", ""]

    def map_value(value: str) -> str:
        return simulate.map_address(value) if simulate is not None else value

    if profile.path_prepend:
        out.append("# library paths (before the scripts, as the guide: their own entries go in front)")
        for name, entries in profile.path_prepend:
            kept = [e for e in entries if simulate is None or e not in simulate.withheld_preload]
            if not kept:
                out.append(f"# {name}: {':'.join(entries)} withheld under --simulate (not on this machine)")
                continue
            # ${X:+:$X}: no dangling colon when X was empty, exactly as the plan composes it.
            out.append(f'export {name}={shlex.quote(":".join(map_value(e) for e in kept))}"${{{name}:+:${name}}}"')
        out.append("")
    if profile.source_scripts:
        out.append("# environment scripts (xllm-tui sources them once and captures the result)")
        for script in profile.source_scripts:
            line = f"source {shlex.quote(os.path.expanduser(script))}"
            out.append(line if keeps(script) else f"# {line}  # --simulate: a system script, not sourced by a simulated run")
        out.append("")
    if profile.env:
        out.append("# environment")
        for name, value in profile.env:
            if simulate is not None and name == "LD_PRELOAD":
                value = ":".join(e for e in _preload_entries(value) if e not in simulate.withheld_preload)
            out.append(f"export {name}={shlex.quote(map_value(value))}")
        out.append("")
    for toggle in profile.toggles:
        on = states[toggle.name]
        out.append(f"# toggle {toggle.name}: {'on' if on else 'off'}" + (f" - {toggle.description}" if toggle.description else ""))
        prefix = "" if on else "# "
        out += [removal(p, prefix) for p in toggle.remove]
        out += [f"{prefix}export {name}={shlex.quote(map_value(value))}" for name, value in toggle.env]
        out += [f"{prefix}unset {name}" for name in toggle.unset]
        out.append("")
    if profile.pre_launch:
        out.append("# pre-launch steps")
        for step in profile.pre_launch:
            commands = [f"rm -rf {_glob_word(p)}" for p in step.remove]
            if step.run:
                commands.append(shlex.join(step.run))
            if step.when == "always":
                out.append(f"# {step.name}")
                out += [removal(p) for p in step.remove]
                if step.run:
                    line = shlex.join(step.run)
                    out.append(line if simulate is None else f"# {line}  # --simulate: run steps are skipped")
            else:
                label = "after a reboot, once" if step.when == "after_reboot" else "run by hand when needed"
                out.append(f"# {step.name} ({label}):")
                for command in commands:
                    out += _comment(command)
        out.append("")
    if profile.rank_tablefile:
        out.append(f"# rank table: xllm-tui ranktable {shlex.quote(profile.source_path)} -o {shlex.quote(profile.rank_tablefile)}")

    def mkdir_line(subset: list[RankLaunch], indent: str = "") -> str:
        dirs = sorted({_relative_to(os.path.dirname(launch.log_path), cwd) for launch in subset})
        return f"{indent}mkdir -p {' '.join(shlex.quote(d) for d in dirs)}"

    if not several:
        index, m = machines[0]
        out += [mkdir_line(launches), "", f"# machine {index}: {m.host}"]
        for launch in launches:
            out += _launch_lines(launch)
        return "\n".join(out) + "\n"

    for index, m in machines:
        first = sum(len(earlier.devices) for earlier in profile.machines[:index])
        mine = [launch for launch in launches if first <= launch.rank < first + len(m.devices)]
        out.append(f"launch_machine_{index}() {{  # {m.host}")
        out.append(mkdir_line(mine, "  "))
        for launch in mine:
            out += _launch_lines(launch, "  ")
        out += ["}", ""]
    out.append('for machine in "${machines[@]}"; do')
    out.append('  "launch_machine_$machine"')
    out.append("done")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------ ranktable


def render_ranktable(profile: Profile) -> dict:
    """The HCCL rank table (layout of the guide's hccl_8+8.json); rank_id is the global rank.

    A one-machine table is allowed when the machine lists device_ips (HCCL accepts it; rarely needed).
    """
    missing = [m.host for m in profile.machines if not m.device_ips]
    if missing:
        raise LaunchError(
            f"{profile.source_path}: the rank table needs each NPU's network address; machine(s) "
            f"{', '.join(missing)} have no device_ips; list one per device under that machine's device_ips "
            "(on the machine, `hccn_tool -i <device> -ip -g` prints each)"
        )
    servers = []
    rank = 0
    for m in profile.machines:
        if len(m.device_ips) != len(m.devices):
            raise LaunchError(
                f"{profile.source_path}: machine {m.host} has {len(m.devices)} devices but "
                f"{len(m.device_ips)} device_ips; give one address per device, in device order"
            )
        devices = []
        for device, device_ip in zip(m.devices, m.device_ips):
            devices.append({"device_id": str(device), "device_ip": device_ip, "rank_id": str(rank)})
            rank += 1
        servers.append({"server_id": m.host, "device": devices, "host_nic_ip": "reserve"})
    return {
        "version": "1.0",
        "server_count": str(len(profile.machines)),
        "server_list": servers,
        "status": "completed",
    }


def ranktable_json(profile: Profile) -> str:
    return json.dumps(render_ranktable(profile), indent=4) + "\n"
