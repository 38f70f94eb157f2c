"""glog lines as xllm writes them: parsing, severity, failure causes and start-up milestones (no Textual).

Line format: ``I20251129 15:20:01.123456 12345 llm_engine.cpp:210] message`` (older glog writes the date
as ``I1129``, month and day only). The message texts matched here are xllm's own (v0.7.x; see
docs in ../shared/xllm-facts.md, read from github.com/jd-opensource/xllm).

- `parse_glog(line)` -> `GlogLine` or None for a line that is not a glog line.
- `severity_of(line)` -> "I" | "W" | "E" | "F" | None: a fast check for colouring and filters.
  ``Check failed:`` counts as "F", a line containing ``ERROR:`` (gflags, Python) as "E".
- `classify_failure(message)` -> (cause, message) or None; the causes are the protocol's `cause` values.
- `milestone_of(message)` -> `Milestone` or None; `PHASES` lists the start-up phases in order.
- `StartupTracker`: feed it lines (only the new ones each time) and read phase, progress, ready and the
  first failure; `weights` (a `WeightsProgress`) has the main and the draft model's weight files apart,
  `connected` / `all_models_initialised` combine a v0.7.x worker's readiness with rank 0's log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

SEVERITIES = ("I", "W", "E", "F")

_GLOG = re.compile(
    r"^(?P<sev>[IWEF])(?P<date>\d{8}|\d{4}) (?P<time>\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?)\s+"
    r"(?P<thread>\d+) (?P<file>[^:\s\]]+):(?P<line>\d+)\] ?(?P<msg>.*)$"
)
# Fast severity check: the first character, then that a date follows.
_SEVERITY_PREFIX = re.compile(r"[IWEF]\d{4}")
# Bytes patterns for scanning whole files with LogFile.scan_matching (the log view's filters): a plain literal
# is searched through a rare byte (memchr), any other has a literal prefix, which re scans quickly; a leading
# "\n" anchors at a line start.
_CHECK_FAILED = re.compile(rb"Check failed:")
_ERROR_COLON = re.compile(rb"ERROR:")
ERRORS_PATTERNS = (re.compile(rb"\n[EF]\d{4}[ \d]"), _CHECK_FAILED, _ERROR_COLON)
WARNINGS_PATTERNS = (re.compile(rb"\n[WEF]\d{4}[ \d]"), _CHECK_FAILED, _ERROR_COLON)


@dataclass(frozen=True)
class GlogLine:
    severity: str  # I, W, E or F
    time: datetime  # the year is the current one for the 4-digit (MMDD) form
    thread: int
    file: str
    line: int
    message: str


def parse_glog(line: str, *, year: int | None = None) -> GlogLine | None:
    """Parse one glog line; None if it is not one (also for an impossible date)."""
    m = _GLOG.match(line.rstrip("\r\n"))
    if m is None:
        return None
    date = m["date"]
    if len(date) == 4:
        date = f"{year or datetime.now().year:04d}{date}"
    clock = m["time"]
    if "." not in clock:
        clock += ".0"
    try:
        when = datetime.strptime(f"{date} {clock}", "%Y%m%d %H:%M:%S.%f")
    except ValueError:
        return None
    return GlogLine(m["sev"], when, int(m["thread"]), m["file"], int(m["line"]), m["msg"])


def glog_message(line: str) -> str:
    """The message part of a glog line, or the whole line if it is not a glog line."""
    if _SEVERITY_PREFIX.match(line):
        end = line.find("] ")
        if end != -1:
            return line[end + 2 :]
        if line.endswith("]"):
            return ""
    return line


def severity_of(line: str) -> str | None:
    """I/W/E/F for a glog line; "F" for ``Check failed:``, "E" for ``ERROR:``; None otherwise."""
    if line and _SEVERITY_PREFIX.match(line):
        severity = line[0]
        if severity != "F" and "Check failed:" in line:
            return "F"
        return severity
    if "Check failed:" in line:
        return "F"
    if "ERROR:" in line:
        return "E"
    return None


# (cause, pattern) in priority order: the first that matches wins. Texts are xllm's (31b7cafd to v0.10.0;
# tests/test_logs_glog_real.py holds each as a real-format line with its file:line per release), gflags'
# (gflags.cc) and brpc's (server.cpp).
_FAILURES: list[tuple[str, re.Pattern[str]]] = [
    ("unknown_flag", re.compile(r"ERROR: unknown command line flag '([^']*)'")),
    ("bad_flag", re.compile(r"ERROR: (?:illegal value '.*' specified for \w+ flag|failed validation of new value"
                            r"|flag '.*' is missing its argument|boolean value \(.*\) specified for)")),
    ("model_path_missing", re.compile(r"Model path .* does not exist")),
    ("model_config_invalid", re.compile(
        r"Please check (?:config\.json|model_index\.json)|Failed to load model args from"
        r"|Model is not supported currently, model type|Only support HF model type currently")),
    ("weights_missing", re.compile(
        r"Failed to find model weights files in|Failed to open weight file|Failed to get file size for weight file"
        r"|Failed to map file|Failed to create memory mapping for|Failed to lock memory for file")),
    (
        "kv_cache_oom",
        re.compile(
            r"Available kv cache size must be greater than 0|no n_blocks for kv cache|no memory for kv cache"
            r"|no n_pages for kv cache|Failed to estimate kv cache capacity|NPU out of memory|out of memory",
            re.I,
        ),
    ),
    ("rank_table_error", re.compile(r"Failed to parse rank table file|rank_tablefile (?:does not exist|must not be a symlink)"
                                  r"|Failed to resolve rank_tablefile")),
    ("hccl_error", re.compile(r"Failed, HCCL error|HCCL get root info failed|ACL set device id \d+ failed")),
    ("execute_failed", re.compile(r"Execute_model_async failed|Failed to (?:execute model|get last step results), "
                                  r"result has no value")),
    ("worker_missing", re.compile(r"Not all worker connect to engine server")),
    ("worker_connect_failed", re.compile(
        r"Worker#\d+ connect to \S+ failed|Failed to initialize BRPC channel to")),
    ("port_in_use", re.compile(r"Failed to start (?:brpc )?server on port|Fail to listen \S+:\d+"
                               r"|(?:failed|Failed) to start (?:\w+ )?(?:distribute worker |distribute |collective )?"
                               r"server on address", re.I)),
    ("etcd_error", re.compile(r"etcd connect to etcd server failed")),
    ("config_error", re.compile(
        r"master_node_addr is empty|At least one node is required|Node rank must >= 0"
        r"|Global world size must be divisible|Multi-stream parallel is refactoring"
        r"|Failed to create master, backend is|is only supported on NPU|is not supported for model_type")),
]


def classify_failure(message: str) -> tuple[str, str] | None:
    """(cause, message) for a line that explains a failure, else None.

    Accepts a whole glog line or just its message; the returned message has the glog prefix removed.
    F lines and ``Check failed:`` without a more specific cause give "fatal".
    """
    text = glog_message(message).strip()
    for cause, pattern in _FAILURES:
        if pattern.search(text):
            return cause, text
    if severity_of(message) == "F":
        return "fatal", text
    return None


# Start-up phases in the order xllm reaches them.
PHASES = (
    "role",
    "init",
    "world",
    "worker_connect_retry",
    "worker_connected",
    "collective_server",
    "worker_registered",
    "model_init",
    "weights",
    "model_loaded",
    "model_ready",
    "kv_cache",
    "serving",
)
PHASE_ORDER = {name: i for i, name in enumerate(PHASES)}


@dataclass(frozen=True)
class Milestone:
    phase: str  # one of PHASES
    detail: str = ""  # e.g. the weight file, the address, the role
    rank: int | None = None  # worker_registered / worker_connect*: the rank the line names

    @property
    def order(self) -> int:
        return PHASE_ORDER[self.phase]


_MILESTONES: list[tuple[str, re.Pattern[str]]] = [
    ("role", re.compile(r"set worker role to (local worker|remote worker)")),
    (
        "init",
        re.compile(
            r"(Master init options:.*|Creating engine with devices:.*|Using draft devices:.*"
            r"|Create worker server with device: \d+|DistributeWorker (?:server )?started on address [^\s,]+)"
        ),
    ),
    ("world", re.compile(r"Multi-node serving world_size = (\d+)")),
    ("worker_connect_retry", re.compile(r"Worker#(\d+) try connect to engine server error")),
    ("worker_connected", re.compile(r"Worker#(\d+) connect to (\S+) success")),
    # The address ends at the comma before ", idle_timeout_sec: ..." (xllm_server.cpp).
    ("collective_server", re.compile(r"Collective server started on address ([^\s,]+)")),
    ("worker_registered", re.compile(r"RemoteWorker Hello connected, server_address: .*global_rank_: (\d+)")),
    ("model_init", re.compile(r"Initializing model from: ?(.*)")),
    # A worker's own bracket around loading one model (worker_impl.cpp, newer xllm, world size > 1).
    ("model_init", re.compile(r"Temporarily setting ATen threads to 1 during weight loading()")),
    ("weights", re.compile(r"Loading model weights from (.*)")),
    ("model_loaded", re.compile(r"Weight loading completed, restored ATen threads=(\d+)")),
    # Rank 0 only: one per worker whose InitModel RPC returned (remote_worker.cpp).
    ("model_ready", re.compile(r"Init_model_async succeed")),
    (
        "kv_cache",
        re.compile(r"(worker #\d+: available memory: .*|kv cache capacity: .*|Initializing k cache with shape: .*)"),
    ),
    ("serving", re.compile(r"(Brpc Server started on port (\d+).*|Application startup complete\.)", re.I)),
]
_CHEAP_FILTER = re.compile(
    r"worker role|init options|Creating engine|draft devices|world_size|Worker#|Collective server|RemoteWorker"
    r"|Create worker server|DistributeWorker"
    r"|Initializing|Loading model weights|ATen threads|Weight loading completed|Init_model_async"
    r"|available memory|kv cache capacity|Brpc Server"
    r"|startup complete",
    re.I,
)


def milestone_of(message: str) -> Milestone | None:
    """The start-up milestone a message (or whole glog line) marks, or None."""
    text = glog_message(message)
    if not _CHEAP_FILTER.search(text):
        return None
    for phase, pattern in _MILESTONES:
        m = pattern.search(text)
        if m is None:
            continue
        rank = None
        detail = m.group(1) if m.groups() else m.group(0)
        if phase in ("worker_connect_retry", "worker_connected", "worker_registered"):
            rank = int(m.group(1))
            detail = m.group(0) if phase != "worker_connected" else m.group(2)
        elif phase == "weights":
            detail = detail.strip()
        return Milestone(phase, detail or "", rank)
    return None


# Sharded checkpoints name their total: model-00001-of-00048.safetensors
_SHARD_NAME = re.compile(r"-\d+-of-(\d+)\.\w+\s*$")


def _model_dir(path: str) -> str:
    return path.strip().rstrip("/")


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory + "/")


@dataclass(frozen=True)
class WeightsProgress:
    """Weight files loaded so far, the main model's and the draft model's apart (total None = unknown)."""

    main_loaded: int = 0
    main_total: int | None = None
    draft_loaded: int = 0
    draft_total: int | None = None
    has_draft: bool = False  # a draft model is expected or has been seen

    @property
    def loaded(self) -> int:
        return self.main_loaded + self.draft_loaded

    @property
    def total(self) -> int | None:
        """Both totals added when every model's total is known, else None."""
        if self.main_total is None:
            return None
        if not self.has_draft:
            return self.main_total
        return None if self.draft_total is None else self.main_total + self.draft_total

    def describe(self) -> str:
        """"8/8, draft 1/1", "3/8", "5" (no total known)."""
        text = f"{self.main_loaded}/{self.main_total}" if self.main_total else f"{self.main_loaded}"
        if self.has_draft:
            text += f", draft {self.draft_loaded}/{self.draft_total}" if self.draft_total else \
                f", draft {self.draft_loaded}"
        return text


@dataclass
class StartupState:
    phase: str | None = None
    progress: tuple[int, int | None] | None = None
    ready: bool = False
    failure: tuple[str, str] | None = None  # the first (cause, message)
    detail: str = ""


@dataclass
class StartupTracker:
    """Follows one rank's start-up from its log lines. Feed only new lines; state accumulates.

    is_master: rank 0 is ready at the Brpc/"startup complete" line (or ready_pattern).
    A worker (is_master=False) is ready once it has connected to rank 0 and its models are initialised.
    Its own log says so only in newer xllm, with "Weight loading completed, restored ATen threads=N" after
    each model (worker_impl.cpp); "Init_model_async succeed." is rank 0's line, never a worker's. A kv
    cache line also proves it (allocation follows initialisation). For v0.7.x workers, whose logs have
    neither, combine with rank 0's tracker: `connected` here and `all_models_initialised` there.

    Weights: xllm prints no totals. expected_weights / expected_draft_weights give them (e.g. the number
    of *.safetensors in each model directory); otherwise they are read from sharded file names
    (model-00001-of-00048.safetensors). Which model a file belongs to comes from its directory: under
    model_path / draft_model_path when given, else the paths of the "Initializing model from:" lines
    (the main model first), else the first directory seen is the main model's and another the draft's.
    ready_pattern: overrides the master's readiness line (case-insensitive search), as in the profile.
    """

    is_master: bool = True
    expected_weights: int | None = None
    ready_pattern: str | None = None
    expected_draft_weights: int | None = None
    model_path: str | None = None
    draft_model_path: str | None = None
    phase: str | None = None
    weights_loaded: int = 0  # main and draft together
    workers_registered: set[int] = field(default_factory=set)
    world_size: int | None = None
    connect_retries: int = 0
    connected: bool = False  # a worker's "Worker#r connect to ... success."
    models_loaded: int = 0  # a worker's "Weight loading completed" lines
    models_initialised: int = 0  # rank 0's "Init_model_async succeed." lines, all models
    ready: bool = False
    failure: tuple[str, str] | None = None
    last_milestone: Milestone | None = None
    lines_seen: int = 0

    def __post_init__(self) -> None:
        self._ready_re = re.compile(self.ready_pattern, re.I) if self.ready_pattern else None
        self._main_dir = _model_dir(self.model_path) if self.model_path else None
        self._draft_dir = _model_dir(self.draft_model_path) if self.draft_model_path else None
        self._paths_given = bool(self._main_dir)
        self._main_loaded = 0
        self._draft_loaded = 0
        self._main_shards: int | None = None
        self._draft_shards: int | None = None
        self._draft_seen = False
        self._main_aliases: list[str] = []
        self._draft_aliases: list[str] = []
        self._engine_models: list[str] = []  # paths of "Initializing model from:" lines, in order
        self._round_initialised = 0  # Init_model_async lines since the last "Initializing model from:"
        self._kv_seen = False

    # -- weights --------------------------------------------------------------------------------

    @property
    def expects_draft(self) -> bool:
        return bool(self._draft_dir) or bool(self.expected_draft_weights) or self._draft_seen

    def _learn_model_path(self, path: str) -> None:
        path = _model_dir(path)
        if not path or self._paths_given:
            return
        if path not in self._engine_models:
            self._engine_models.append(path)
        if self._main_dir is None:
            self._main_dir = path
        elif self._draft_dir is None and path != self._main_dir:
            self._draft_dir = path

    def _is_draft_file(self, path: str) -> bool:
        directory = _model_dir(path.rpartition("/")[0])
        mains = [d for d in [self._main_dir, *self._main_aliases] if d]
        drafts = [d for d in [self._draft_dir, *self._draft_aliases] if d]
        best_main = max((len(d) for d in mains if _under(path, d)), default=-1)
        best_draft = max((len(d) for d in drafts if _under(path, d)), default=-1)
        if best_main >= 0 or best_draft >= 0:
            return best_draft > best_main  # the more specific directory wins (a draft inside the main)
        # A directory no known path names (e.g. a symlinked --model): the first is the main model's, as
        # long as none of its files were seen; after that a new one is the draft's.
        if self._main_loaded == 0:
            self._main_aliases.append(directory)
            return False
        if self._draft_loaded == 0 and not self._draft_dir:
            self._draft_aliases.append(directory)
            return True
        return False

    def _count_weight_file(self, path: str) -> None:
        shard = _SHARD_NAME.search(path)
        if self._is_draft_file(path):
            self._draft_seen = True
            self._draft_loaded += 1
            if shard:
                self._draft_shards = max(self._draft_shards or 0, int(shard.group(1)))
        else:
            self._main_loaded += 1
            if shard:
                self._main_shards = max(self._main_shards or 0, int(shard.group(1)))

    @property
    def weights(self) -> WeightsProgress:
        return WeightsProgress(self._main_loaded, self.expected_weights or self._main_shards,
                               self._draft_loaded, self.expected_draft_weights or self._draft_shards,
                               self.expects_draft)

    # -- readiness ------------------------------------------------------------------------------

    @property
    def models_expected(self) -> int:
        """Models a worker loads: 1, or 2 with a draft model."""
        return 2 if self.expects_draft else 1

    @property
    def all_models_initialised(self) -> bool:
        """Rank 0's view: every rank's InitModel succeeded for every model (kv cache set-up follows)."""
        if self.phase in ("kv_cache", "serving"):
            return True
        if not self.world_size:
            return False
        return self.models_initialised >= self.world_size * max(self.models_expected, len(self._engine_models))

    def _worker_ready(self) -> bool:
        return self.connected and (self._kv_seen or self.models_loaded >= self.models_expected)

    @property
    def settled(self) -> bool:
        """Start-up is over: no further milestone line can change this tracker's state as reported (rank 0
        serving; a worker ready with its kv cache allocated, its last start-up line). Readers may then stop
        looking for milestones and look for failures only."""
        if not self.ready:
            return False
        return self.phase == "serving" if self.is_master else self._kv_seen

    # -- feeding --------------------------------------------------------------------------------

    def feed(self, line: str) -> Milestone | None:
        """Account for one log line; returns the milestone it marked, if any."""
        self.lines_seen += 1
        if self.failure is None:
            severity = severity_of(line)
            if severity in ("E", "F"):
                self.failure = classify_failure(line)
        milestone = milestone_of(line)
        if milestone is None:
            if self._ready_re is not None and self.is_master and self._ready_re.search(line):
                milestone = Milestone("serving", glog_message(line))
            else:
                return None
        self.last_milestone = milestone
        phase = milestone.phase
        if phase == "weights":
            self.weights_loaded += 1
            self._count_weight_file(milestone.detail)
        elif phase == "model_init" and milestone.detail:
            self._learn_model_path(milestone.detail)
            self._round_initialised = 0
        elif phase == "model_loaded":
            self.models_loaded += 1
        elif phase == "model_ready":
            self.models_initialised += 1
            self._round_initialised += 1
        elif phase == "worker_connected":
            self.connected = True
        elif phase == "kv_cache":
            self._kv_seen = True
        elif phase == "worker_registered" and milestone.rank is not None:
            self.workers_registered.add(milestone.rank)
        elif phase == "world":
            try:
                self.world_size = int(milestone.detail)
            except ValueError:
                pass
        elif phase == "worker_connect_retry":
            self.connect_retries += 1
        if self.phase is None or milestone.order >= PHASE_ORDER[self.phase]:
            self.phase = phase
        elif phase in ("model_init", "weights") and self.phase in ("model_loaded", "model_ready"):
            self.phase = phase  # the next model (the draft) starts loading
        if self.is_master:
            if phase == "serving" and (self._ready_re is None or self._ready_re.search(line)
                                       or "startup complete" in line.lower()):
                self.ready = True
        else:
            self.ready = self._worker_ready()
        return milestone

    def feed_lines(self, lines) -> None:
        for line in lines:
            self.feed(line)

    @property
    def progress(self) -> tuple[int, int | None] | None:
        """(done, total or None) for the current phase when it is countable."""
        if self.phase == "weights":
            weights = self.weights
            return (weights.loaded, weights.total)
        if self.phase == "model_ready" and self.is_master:
            return (self._round_initialised, self.world_size)
        if self.phase == "worker_registered":
            total = self.world_size - 1 if self.world_size else None
            return (len(self.workers_registered), total)
        if self.phase == "worker_connect_retry":
            return (self.connect_retries, None)
        return None

    def state(self) -> StartupState:
        detail = self.last_milestone.detail if self.last_milestone else ""
        return StartupState(self.phase, self.progress, self.ready, self.failure, detail)

    def describe(self) -> str:
        """A short human text, e.g. "loading weights 12/48", "loading weights 8/8, draft 0/1", "kv cache"."""
        if self.failure:
            return f"{self.failure[0]}: {self.failure[1]}"
        if self.ready:
            return "serving" if self.is_master else "model ready"
        if self.phase is None:
            return "starting"
        if self.phase == "weights":
            return f"loading weights {self.weights.describe()}"
        label = {
            "worker_connect_retry": "waiting for rank 0",
            "worker_registered": "workers registered",
            "model_loaded": "model loaded",
            "model_ready": "models initialised",
            "kv_cache": "kv cache",
        }.get(self.phase, self.phase.replace("_", " "))
        progress = self.progress
        if progress is not None:
            done, total = progress
            return f"{label} {done}/{total}" if total else f"{label} {done}"
        return label
