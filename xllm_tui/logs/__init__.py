"""Log files of the ranks: tail/index (tail.py) and glog parsing, failure causes, milestones (glog.py).

No Textual here: the supervisor and the headless commands use these; the TUI's LogView builds on them.
"""

from xllm_tui.logs.glog import (
    PHASES,
    GlogLine,
    Milestone,
    StartupTracker,
    classify_failure,
    milestone_of,
    parse_glog,
    severity_of,
)
from xllm_tui.logs.tail import (
    IncrementalReader,
    LogFile,
    RefreshResult,
    Snapshot,
    follow,
    log_generations,
    rotate_log,
    tail_lines,
)

__all__ = [
    "PHASES",
    "GlogLine",
    "IncrementalReader",
    "LogFile",
    "Milestone",
    "RefreshResult",
    "Snapshot",
    "StartupTracker",
    "classify_failure",
    "follow",
    "log_generations",
    "milestone_of",
    "parse_glog",
    "rotate_log",
    "severity_of",
    "tail_lines",
]
