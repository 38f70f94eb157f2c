"""The validated, pure model of a launch profile and of one rank's launch.

profile.py builds these from YAML (and owns validation); launch.py turns a Profile into RankLaunch
objects; the supervisor, the CLI and the TUI only read them. No I/O here, no Textual.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# A flag value as written in the profile; launch.py renders bools the way gflags expects (true/false).
FlagValue = str | int | float | bool


@dataclass(frozen=True)
class SshTarget:
    """How machine 0's supervisor reaches another machine: `ssh [-l user] [-p port] [-i identity] host`, always
    with BatchMode=yes. `host` may be an alias of ~/.ssh/config (which then supplies the rest)."""

    host: str
    user: str | None = None
    port: int | None = None
    identity: str | None = None  # a private key file (~ expanded)
    # The xllm-tui command on that machine, as argv words (it needs xllm-tui installed, not the profile).
    command: tuple[str, ...] = ("python3", "-m", "xllm_tui")


@dataclass(frozen=True)
class Machine:
    """One host of the deployment and the NPUs (logic ids) it runs, in rank order."""

    host: str  # the address xllm gets as --host on that machine
    devices: tuple[int, ...]
    # NPU network addresses for the HCCL rank table, one per device (empty when not given).
    device_ips: tuple[str, ...] = ()
    # Explicit core lists (one "0-11" style string per device); empty = use the profile's CoreRule.
    cores: tuple[str, ...] = ()
    name: str = ""  # a short label for UIs; defaults to host
    ssh: SshTarget | None = None  # how to reach it; None = `ssh <host>` (machine 0 is never reached over ssh)


@dataclass(frozen=True)
class CoreRule:
    """How CPU cores are chosen for each rank when a machine gives no explicit list.

    kind "per_device": cores [first + device*count, first + device*count + count - 1] (the guide's rule,
    keyed on the device id); "per_rank": the same keyed on the local rank; "topology": the NPU's CPU
    affinity from `npu-smi info -t topo`; "none": run without numactl.
    """

    kind: Literal["per_device", "per_rank", "topology", "none"] = "per_device"
    count: int = 12
    first: int = 0


@dataclass(frozen=True)
class Toggle:
    """A named environment group that is off or on for the next launch."""

    name: str
    enabled: bool
    env: tuple[tuple[str, str], ...]  # ordered (name, value)
    remove: tuple[str, ...] = ()  # glob patterns removed before launch (~ expanded), e.g. ~/dynamic_profiling_socket_*
    unset: tuple[str, ...] = ()  # variables removed from the environment when on
    description: str = ""


@dataclass(frozen=True)
class PreLaunchStep:
    """A step the supervisor runs before launching the group. Data, never a shell string."""

    name: str
    remove: tuple[str, ...] = ()  # glob patterns to delete (files or directories)
    run: tuple[str, ...] = ()  # argv to execute (no shell)
    when: Literal["always", "after_reboot", "manual"] = "always"
    timeout_s: float = 300.0


@dataclass(frozen=True)
class RestartPolicy:
    mode: Literal["manual", "on-failure"] = "on-failure"
    scope: Literal["group", "rank"] = "group"
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 60.0
    backoff_factor: float = 2.0
    max_restarts: int = 5  # within window_s; beyond that: crash-looping, left alone
    window_s: float = 600.0


@dataclass(frozen=True)
class Readiness:
    """Evidence that a rank or the group is up."""

    # Log milestone that marks rank 0 ready (matched case-insensitively).
    ready_pattern: str = "Brpc Server started"
    http_probe: bool = True  # GET /health on rank 0's --port once the Brpc line is seen
    probe_interval_s: float = 5.0
    silence_warning_s: float = 0.0  # 0 = off; a ready rank whose log is silent this long is degraded
    start_timeout_s: float = 0.0  # 0 = no limit; a rank not ready by then is degraded


@dataclass(frozen=True)
class DeviceSettings:
    """How the devices (NPUs, or GPUs) of a machine are read: which tool, where it is, how often."""

    backend: Literal["auto", "npu-smi", "nvidia-smi"] = "auto"  # auto: npu-smi on PATH, then nvidia-smi
    npu_smi: str | None = None  # path of npu-smi; None = "npu-smi" on PATH
    nvidia_smi: str | None = None  # path of nvidia-smi; None = "nvidia-smi" on PATH
    poll_interval_s: float = 10.0  # how often a supervisor reads them (npu-smi takes about a second)
    timeout_s: float = 10.0  # one reading may take this long before the tool is killed
    # Before a rank is launched, another process holding its NPU: "wait" (the rank waits until the holder is
    # gone or the operator starts it again), "fail" (the rank fails, cause npu_busy), "ignore" (launch, warn).
    on_busy: Literal["wait", "fail", "ignore"] = "wait"


# What a hook can be run on (xllm_tui.alerts turns journal events into these), plus the journal's raw kinds.
HOOK_EVENTS = (
    "rank_failed", "rank_exited", "rank_degraded", "rank_ready", "crash_looping", "group_ready", "group_failed",
    "group_degraded", "group_stopped", "device_health", "machine_unreachable", "any",
)
JOURNAL_KINDS = ("state", "group", "action", "prelaunch", "toggle", "supervisor", "device", "machine")


@dataclass(frozen=True)
class Hook:
    """A command run on chosen events with the event as JSON on stdin: argv, never a shell."""

    name: str
    on: tuple[str, ...]  # HOOK_EVENTS or JOURNAL_KINDS
    run: tuple[str, ...]
    timeout_s: float = 30.0


@dataclass(frozen=True)
class MetricsSettings:
    """Where the deployment's state goes as Prometheus text (the `metrics:` key)."""

    textfile: str | None = None  # rewritten atomically, for node_exporter's textfile collector
    listen: str | None = None  # "127.0.0.1:9464" (loopback only) or "unix:/path/metrics.sock": GET /metrics
    interval_s: float = 15.0  # how often the supervisor refreshes it


@dataclass(frozen=True)
class Profile:
    name: str
    source_path: str  # the YAML file it came from
    binary: str
    model: str
    model_id: str | None
    draft_model: str | None
    machines: tuple[Machine, ...]
    master_node_addr: str  # "host:port"
    base_port: int
    core_rule: CoreRule
    flags: tuple[tuple[str, FlagValue], ...]  # ordered; every rank gets them (values may hold {rank} etc.)
    env: tuple[tuple[str, str], ...]  # ordered base environment, values are data
    path_prepend: tuple[tuple[str, tuple[str, ...]], ...] = ()  # e.g. LD_LIBRARY_PATH: (a, b) -> a:b:$inherited
    source_scripts: tuple[str, ...] = ()  # scripts whose resulting environment is captured once
    toggles: tuple[Toggle, ...] = ()
    pre_launch: tuple[PreLaunchStep, ...] = ()
    log_dir: str = "logs"  # relative to working_dir
    log_file: str = "node_{rank}.log"
    working_dir: str | None = None  # None = the profile file's directory
    run_dir: str | None = None  # None = $XDG_STATE_HOME/xllm-tui/<name>
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    readiness: Readiness = field(default_factory=Readiness)
    stop_grace_s: float = 15.0
    rank_tablefile: str | None = None  # written by `xllm-tui ranktable`, passed as --rank_tablefile
    description: str = ""
    devices: DeviceSettings = field(default_factory=DeviceSettings)  # the `devices:` key
    hooks: tuple[Hook, ...] = ()  # the `hooks:` key (xllm_tui.alerts runs them)
    metrics: MetricsSettings | None = None  # the `metrics:` key (xllm_tui.metrics); None = no metrics
    xllm_release: str = "31b7cafd"  # whose flags validate checks (xllm_flags.RELEASES); the guide's pin

    @property
    def nnodes(self) -> int:
        return sum(len(m.devices) for m in self.machines)

    def toggle(self, name: str) -> Toggle | None:
        return next((t for t in self.toggles if t.name == name), None)


@dataclass(frozen=True)
class RankSpec:
    """One rank of the world: where it runs and what identifies it."""

    rank: int  # global --node_rank
    local_rank: int  # index on its machine
    machine: Machine
    device: int  # NPU logic id for --devices=npu:N
    port: int
    cores: str | None  # numactl -C argument, None = no binding


@dataclass(frozen=True)
class RankLaunch:
    """Exactly what is executed for one rank: argv list (never a shell), environment, cwd, log file."""

    spec: RankSpec
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # the full environment the process gets, sorted by name
    cwd: str
    log_path: str
    role: Literal["master", "worker"]

    @property
    def rank(self) -> int:
        return self.spec.rank

    def env_dict(self) -> dict[str, str]:
        return dict(self.env)
