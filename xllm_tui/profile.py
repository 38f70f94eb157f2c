"""YAML launch profile -> validated `spec.Profile`; every problem is reported with file, line, column and key path.

How positions survive validation: the YAML text is composed (not constructed) into PyYAML nodes, which
carry start marks; those are turned into small located nodes (`_Map`, `_Seq`, `_Scalar`) that remember
their file. `extends:` merges such trees, so a key that came from a base profile still names the base
file. Validation walks the located tree and never raises for bad input: it collects `Diagnostic`s.

Contract with launch.py (see docs/profiles.md): `Profile.flags` holds every flag after the identity flags
(--model, --model_id, --host, --port, --devices, --master_node_addr, --nnodes, --node_rank), in the order
the launch must pass them, already including --draft_model/--draft_devices and --rank_tablefile when the
profile sets `draft_model` / `rank_tablefile`. Flag values may still contain the per-rank placeholders
{rank} {local_rank} {device} {port} {host}; launch.py fills them.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from xllm_tui.cores import cores_for_rank, format_cores, parse_cores
from xllm_tui.xllm_flags import ANY_RELEASE, DEFAULT_RELEASE, RELEASES, all_flags, explain_unknown, resolve_release
from xllm_tui.spec import (
    CoreRule,
    HOOK_EVENTS,
    JOURNAL_KINDS,
    DeviceSettings,
    FlagValue,
    Hook,
    Machine,
    SshTarget,
    MetricsSettings,
    PreLaunchStep,
    Profile,
    Readiness,
    RestartPolicy,
    Toggle,
)

Severity = Literal["error", "warning"]


# --------------------------------------------------------------------------------------------------
# Public result types


@dataclass
class Diagnostic:
    severity: Severity
    message: str
    file: str
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based
    key_path: str = ""  # e.g. "flags.max_tokens_per_batch", "machines[1].device_ips"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        key = f"{self.key_path}: " if self.key_path else ""
        return f"{where}: {self.severity}: {key}{self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "key": self.key_path,
            "message": self.message,
        }


@dataclass
class LoadResult:
    """The profile (None when there is any error: bad input launches nothing) and every diagnostic."""

    profile: Profile | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # The located YAML tree (after extends), so later checks (e.g. the binding check) can name a key's line.
    tree: Any = field(default=None, repr=False, compare=False)

    def locate(self, key_path: str) -> tuple[str, int | None, int | None]:
        """(file, line, column) of `key_path` ("cores", "machines[0].cores[3]"), or of its nearest written
        parent when the key itself is not in the file (e.g. a default). Line None when nothing is known."""
        fallback = self.profile.source_path if self.profile is not None else ""
        node = self.tree
        if not isinstance(node, _Node):
            return fallback, None, None
        found: _Node = node
        for token in _key_tokens(key_path):
            if isinstance(token, int) and isinstance(node, _Seq) and 0 <= token < len(node.items):
                node = node.items[token]
            elif isinstance(token, str) and isinstance(node, _Map) and node.get(token) is not None:
                node = node.get(token)
            else:
                break
            found = node
        if found is self.tree:
            return found.file, None, None  # only the file: the top-level mapping is no useful position
        return found.file, found.line, found.column

    def diagnostic(self, severity: Severity, key_path: str, message: str) -> Diagnostic:
        """A Diagnostic located at `key_path` (see locate), for checks made after loading."""
        file, line, column = self.locate(key_path)
        return Diagnostic(severity, message, file, line, column, key_path)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    @property
    def ok(self) -> bool:
        return self.profile is not None and not self.errors


def _key_tokens(key_path: str) -> list[str | int]:
    tokens: list[str | int] = []
    for part in key_path.split("."):
        name, _, rest = part.partition("[")
        if name:
            tokens.append(name)
        for index in re.findall(r"(\d+)\]", "[" + rest if rest else ""):
            tokens.append(int(index))
    return tokens


class ProfileError(Exception):
    """A profile with errors; `diagnostics` holds all of them (warnings too), str() lists the errors."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = list(diagnostics)
        errors = [d for d in self.diagnostics if d.severity == "error"]
        lines = [str(d) for d in errors] or ["the profile could not be loaded"]
        super().__init__("\n".join(lines))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


# --------------------------------------------------------------------------------------------------
# Known xllm flags (xllm_tui/xllm_flags.py, shared with the simulator): name -> gflags type. Used to
# type-check values and to warn about names gflags would reject at start-up.

FlagType = Literal["string", "int32", "uint32", "int64", "double", "bool"]

# The union over every release (types for any flag some xllm knows); per-release checks use flags_of().
XLLM_FLAGS: dict[str, tuple[FlagType, str]] = {name: (spec[0], spec[1]) for name, spec in all_flags(ANY_RELEASE).items()}


def flags_of(release: str) -> dict[str, tuple[FlagType, str]]:
    """name -> (type, default) of every flag an xllm binary of `release` accepts (xllm, glog, brpc, gflags)."""
    return {name: (spec[0], spec[1]) for name, spec in all_flags(release).items()}

# Flags the launch derives for every rank; the profile sets them through top-level keys instead.
DERIVED_FLAGS: dict[str, str] = {
    "model": "set the top-level key 'model'",
    "model_id": "set the top-level key 'model_id'",
    "host": "it is each machine's 'host'",
    "port": "it is base_port + the rank's index on its machine",
    "devices": "it is 'npu:<device>' from each machine's 'devices'",
    "master_node_addr": "set the top-level key 'master_node_addr'",
    "node_rank": "it is the rank's position across 'machines'",
    "draft_model": "set the top-level key 'draft_model'",
    "rank_tablefile": "set the top-level key 'rank_tablefile'",
}

RANK_PLACEHOLDERS = ("rank", "local_rank", "device", "port", "host")
GFLAGS_BOOL_WORDS = {"true", "false", "t", "f", "yes", "no", "y", "n", "1", "0"}

TOP_KEYS = (
    "extends", "name", "description", "binary", "model", "model_id", "draft_model", "machines",
    "master_node_addr", "base_port", "cores", "flags", "env", "path_prepend", "source", "toggles",
    "pre_launch", "logs", "working_dir", "run_dir", "readiness", "restart", "stop", "rank_tablefile",
    "devices", "hooks", "metrics", "xllm_release",
)  # fmt: skip
MACHINE_KEYS = ("host", "devices", "device_ips", "cores", "name", "ssh")
SSH_KEYS = ("host", "user", "port", "identity", "command")
CORES_KEYS = ("rule", "count", "first")
CORE_RULES = ("per_device", "per_rank", "topology", "none")
TOGGLE_KEYS = ("enabled", "description", "env", "unset", "remove")
STEP_KEYS = ("name", "remove", "run", "when", "timeout")
STEP_WHEN = ("always", "after_reboot", "manual")
LOGS_KEYS = ("dir", "file")
READINESS_KEYS = ("ready_pattern", "http_probe", "probe_interval", "silence_warning", "start_timeout")
RESTART_KEYS = ("mode", "scope", "backoff", "max_restarts", "window")
BACKOFF_KEYS = ("initial", "max", "factor")
STOP_KEYS = ("grace",)
DEVICES_KEYS = ("backend", "npu_smi", "nvidia_smi", "poll_interval", "timeout", "on_busy")
DEVICE_BACKENDS = ("auto", "npu-smi", "nvidia-smi")
DEVICE_ON_BUSY = ("wait", "fail", "ignore")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


# --------------------------------------------------------------------------------------------------
# Located YAML tree


@dataclass(eq=False)
class _Node:
    file: str
    line: int  # 1-based
    column: int  # 1-based


@dataclass(eq=False)
class _Scalar(_Node):
    value: Any  # as YAML would construct it (bool, int, float, str, None, ...)
    text: str  # the scalar exactly as written (without quotes)


@dataclass(eq=False)
class _Seq(_Node):
    items: list[_Node]


@dataclass(eq=False)
class _Map(_Node):
    # key text -> (key node, value node), in file order
    items: dict[str, tuple[_Scalar, _Node]]

    def get(self, key: str) -> _Node | None:
        entry = self.items.get(key)
        return entry[1] if entry else None

    def key_node(self, key: str) -> _Scalar | None:
        entry = self.items.get(key)
        return entry[0] if entry else None


def _describe(node: _Node) -> str:
    """How a value is named in 'expected X, got Y'."""
    if isinstance(node, _Map):
        return "a mapping"
    if isinstance(node, _Seq):
        return "a list"
    assert isinstance(node, _Scalar)
    if node.value is None:
        return "nothing (null)"
    return repr(node.text)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class _Reporter:
    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []

    def add(self, severity: Severity, where: _Node | str, key_path: str, message: str) -> None:
        if isinstance(where, _Node):
            self.diagnostics.append(Diagnostic(severity, message, where.file, where.line, where.column, key_path))
        else:
            self.diagnostics.append(Diagnostic(severity, message, where, None, None, key_path))

    def error(self, where: _Node | str, key_path: str, message: str) -> None:
        self.add("error", where, key_path, message)

    def warning(self, where: _Node | str, key_path: str, message: str) -> None:
        self.add("warning", where, key_path, message)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)


def _construct_scalar(node: yaml.ScalarNode) -> Any:
    # A fresh constructor each time: it caches every node it has seen, and loads may run in threads.
    try:
        return yaml.constructor.SafeConstructor().construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError):
        return node.value  # e.g. an impossible date: keep the text


def _locate(node: yaml.Node, file: str, report: _Reporter, path: str, active: set[int]) -> _Node | None:
    line, column = node.start_mark.line + 1, node.start_mark.column + 1
    if isinstance(node, yaml.ScalarNode):
        return _Scalar(file, line, column, _construct_scalar(node), node.value)
    if id(node) in active:
        report.error(_Scalar(file, line, column, None, ""), path, "recursive YAML alias; a value cannot contain itself")
        return None
    active.add(id(node))
    try:
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, child in enumerate(node.value):
                located = _locate(child, file, report, _join(path, index), active)
                if located is not None:
                    items.append(located)
            return _Seq(file, line, column, items)
        assert isinstance(node, yaml.MappingNode)
        result = _Map(file, line, column, {})
        merged_from: list[_Map] = []
        for key_node, value_node in node.value:
            key_line, key_column = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *defaults"
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    located = _locate(source, file, report, path, active)
                    if isinstance(located, _Map):
                        merged_from.append(located)
                    else:
                        report.error(
                            _Scalar(file, key_line, key_column, None, "<<"), path, "'<<' must merge a mapping"
                        )
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                report.error(
                    _Scalar(file, key_line, key_column, None, ""),
                    path,
                    "a key must be a plain name, not a list or mapping",
                )
                continue
            key = key_node.value
            key_located = _Scalar(file, key_line, key_column, key, key)
            if key in result.items:
                first = result.items[key][0]
                report.error(
                    key_located,
                    _join(path, key),
                    f"duplicate key '{key}' (first defined at line {first.line}); YAML would silently keep only "
                    "the last one: remove one of them",
                )
                continue
            value = _locate(value_node, file, report, _join(path, key), active)
            if value is not None:
                result.items[key] = (key_located, value)
        for source in merged_from:  # explicit keys win over merged ones
            for key, entry in source.items.items():
                result.items.setdefault(key, entry)
        return result
    finally:
        active.discard(id(node))


def _parse_text(text: str, file: str, report: _Reporter) -> _Map | None:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        message = f"invalid YAML: {problem}"
        if exc.context and exc.problem and exc.problem.startswith("but "):  # "expected X, but found Y"
            message = f"invalid YAML: {exc.context}, {exc.problem}"
        elif exc.context and exc.problem:
            message = f"invalid YAML: {problem} ({exc.context}"
            if exc.context_mark is not None and exc.context_mark is not mark:
                message += f" at line {exc.context_mark.line + 1}"
            message += ")"
        if mark is not None:
            report.error(_Scalar(file, mark.line + 1, mark.column + 1, None, ""), "", message)
        else:
            report.error(file, "", message)
        return None
    except yaml.YAMLError as exc:
        report.error(file, "", f"invalid YAML: {exc}")
        return None
    if root is None:
        report.error(_Scalar(file, 1, 1, None, ""), "", "the profile is empty; expected a mapping of settings")
        return None
    located = _locate(root, file, report, "", set())
    if not isinstance(located, _Map):
        report.error(
            located or _Scalar(file, 1, 1, None, ""),
            "",
            f"the top level of a profile must be a mapping of settings (key: value), got {_describe(located)}"
            if located
            else "the top level of a profile must be a mapping",
        )
        return None
    return located


def _merge(base: _Map, override: _Map) -> _Map:
    """Deep-merge: mappings merge key by key (the base's order, new keys appended); anything else is
    replaced; an explicit null in the override removes a key the base set."""
    result = _Map(override.file, override.line, override.column, {})
    for key, (key_node, value) in base.items.items():
        if key not in override.items:
            result.items[key] = (key_node, value)
            continue
        new_key, new_value = override.items[key]
        if isinstance(new_value, _Scalar) and new_value.value is None:
            continue  # "key: null" drops an inherited setting
        if isinstance(value, _Map) and isinstance(new_value, _Map):
            result.items[key] = (new_key, _merge(value, new_value))
        else:
            result.items[key] = (new_key, new_value)
    for key, entry in override.items.items():
        if key not in base.items:
            result.items[key] = entry
    return result


def _load_tree(text: str | None, path: str, report: _Reporter, chain: list[str]) -> _Map | None:
    if text is None:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            report.error(path, "", "profile file not found")
            return None
        except IsADirectoryError:
            report.error(path, "", "is a directory, not a profile file")
            return None
        except UnicodeDecodeError as exc:
            report.error(path, "", f"not a UTF-8 text file ({exc.reason} at byte {exc.start})")
            return None
        except OSError as exc:
            report.error(path, "", f"cannot read profile: {exc.strerror or exc}")
            return None
    tree = _parse_text(text, path, report)
    if tree is None:
        return None
    extends = tree.get("extends")
    if extends is None:
        return tree
    del tree.items["extends"]
    if not isinstance(extends, _Scalar) or not isinstance(extends.value, str) or not extends.value.strip():
        report.error(extends, "extends", f"expected the path of a base profile, got {_describe(extends)}")
        return None
    base_path = os.path.normpath(os.path.join(os.path.dirname(path), os.path.expanduser(extends.value.strip())))
    real = os.path.realpath(base_path)
    if real in chain:
        names = [os.path.basename(p) for p in chain] + [os.path.basename(real)]
        report.error(extends, "extends", f"extends cycle: {' -> '.join(names)}; a profile cannot extend itself")
        return None
    if not os.path.isfile(base_path):
        report.error(
            extends,
            "extends",
            f"base profile '{extends.value}' not found (looked for {base_path}; relative paths are relative "
            "to this file's directory)",
        )
        return None
    before = len(report.diagnostics)
    base = _load_tree(None, base_path, report, chain + [real])
    if base is None:
        if len(report.diagnostics) == before:
            report.error(extends, "extends", f"base profile '{extends.value}' could not be loaded")
        return None
    return _merge(base, tree)


# --------------------------------------------------------------------------------------------------
# Small value readers. Each returns None (after reporting) when the value is unusable.


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_duration(value: Any) -> float:
    """Seconds from 15, 1.5, "15s", "2m", "1h30m" or "500ms"; ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 15, '15s' or '2m'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 15, '15s' or '2m'")
    text = value.strip().replace(" ", "")
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is not None:
        if seconds < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return seconds
    position, total = 0, 0.0
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * scale[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise ValueError(f"expected a duration such as 15, '15s', '2m' or '1h30m', got {value!r}")
    return total


def _valid_hostname(host: str) -> bool:
    if len(host) > 253 or not host:
        return False
    labels = host.rstrip(".").split(".")
    if all(label.isdigit() for label in labels):  # looks like a broken IPv4 address, e.g. 11.87.49.300
        return False
    return all(_HOSTNAME_LABEL.match(label) for label in labels)


def check_host(host: str) -> str | None:
    """None when host is an IPv4/IPv6 address or a hostname, else what is wrong."""
    candidate = host.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
    try:
        ipaddress.ip_address(candidate)
        return None
    except ValueError:
        pass
    if _valid_hostname(candidate):
        return None
    return f"'{host}' is not an IPv4/IPv6 address or a hostname"


def split_host_port(addr: str) -> tuple[str, int]:
    """'11.87.49.110:10015' or '[::1]:10015' -> (host, port); ValueError explains a bad address."""
    text = addr.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1 :].startswith(":"):
            raise ValueError(f"'{addr}' is not host:port (IPv6 is written [addr]:port)")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        if text.count(":") != 1:
            hint = " (IPv6 is written [addr]:port)" if text.count(":") > 1 else ""
            raise ValueError(f"'{addr}' is not host:port, e.g. 11.87.49.110:10015{hint}")
        host, port_text = text.split(":")
    if not host:
        raise ValueError(f"'{addr}' has no host before the ':'")
    problem = check_host(host)
    if problem:
        raise ValueError(problem)
    if not port_text.isdigit():
        raise ValueError(f"port '{port_text}' in '{addr}' is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} in '{addr}' is out of range 1-65535")
    return host, port


_PLACEHOLDER_LIKE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _placeholder_problem(text: str, allowed: tuple[str, ...]) -> str | None:
    """launch.py replaces exactly {rank} {local_rank} {device} {port} {host}; any other {name} is a typo.
    Other braces (JSON and the like) are left alone."""
    for match in _PLACEHOLDER_LIKE.finditer(text):
        name = match.group(1)
        if name not in allowed:
            names = ", ".join("{" + a + "}" for a in allowed)
            return f"unknown placeholder {{{name}}} in '{text}'{_suggest(name, allowed)}; known: {names}"
    return None


def _has_placeholder(text: str) -> bool:
    return any(m.group(1) in RANK_PLACEHOLDERS for m in _PLACEHOLDER_LIKE.finditer(text))


_DANGEROUS_REMOVALS = {"/", "/*", "~", "~/", "~/*", "*", ".", "./", "..", "../", "./*", "/root", "/root/", "/home"}


class _Checker:
    def __init__(self, report: _Reporter, simulate: bool):
        self.report = report
        self.simulate = simulate

    # ---- structure

    def mapping(self, node: _Node | None, path: str, what: str = "a mapping") -> _Map | None:
        if node is None:
            return None
        if isinstance(node, _Map):
            return node
        self.report.error(node, path, f"expected {what}, got {_describe(node)}")
        return None

    def keys(self, node: _Map, allowed: Iterable[str], path: str, hint: str = "") -> None:
        allowed = list(allowed)
        for key, (key_node, _) in node.items.items():
            if key not in allowed:
                suggestion = _suggest(key, allowed)
                extra = "" if suggestion else f"; allowed here: {', '.join(allowed)}"
                self.report.error(key_node, _join(path, key), f"unknown key '{key}'{suggestion}{extra}{hint}")

    def required(self, node: _Map, key: str, path: str, example: str) -> _Node | None:
        value = node.get(key)
        if value is None:
            self.report.error(node, _join(path, key), f"missing required key '{key}' (e.g. {example})")
        elif isinstance(value, _Scalar) and value.value is None:
            self.report.error(value, _join(path, key), f"'{key}' has no value (e.g. {example})")
            return None
        return value

    # ---- scalars

    def string(self, node: _Node | None, path: str, *, allow_empty: bool = False) -> str | None:
        """Text as written. Numbers are accepted as their text (a model_id of 4.5 means "4.5")."""
        if node is None:
            return None
        if not isinstance(node, _Scalar) or node.value is None or isinstance(node.value, bool):
            self.report.error(node, path, f"expected a string, got {_describe(node)}")
            return None
        if not allow_empty and not node.text.strip():
            self.report.error(node, path, "must not be empty")
            return None
        return node.text

    def integer(self, node: _Node | None, path: str, low: int | None = None, high: int | None = None) -> int | None:
        if node is None:
            return None
        value = node.value if isinstance(node, _Scalar) else None
        if isinstance(value, bool) or not isinstance(value, int):
            self.report.error(node, path, f"expected an integer, got {_describe(node)}")
            return None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"{low}-{high}" if high is not None else f">= {low}"
            self.report.error(node, path, f"{value} is out of range ({bounds})")
            return None
        return value

    def number(self, node: _Node | None, path: str, low: float | None = None) -> float | None:
        if node is None:
            return None
        value = node.value if isinstance(node, _Scalar) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.report.error(node, path, f"expected a number, got {_describe(node)}")
            return None
        if low is not None and value < low:
            self.report.error(node, path, f"{value} must be at least {low}")
            return None
        return float(value)

    def boolean(self, node: _Node | None, path: str) -> bool | None:
        if node is None:
            return None
        value = node.value if isinstance(node, _Scalar) else None
        if not isinstance(value, bool):
            self.report.error(node, path, f"expected a boolean (true or false), got {_describe(node)}")
            return None
        return value

    def duration(self, node: _Node | None, path: str) -> float | None:
        if node is None:
            return None
        value = node.value if isinstance(node, _Scalar) else None
        try:
            return parse_duration(value)
        except ValueError as exc:
            message = str(exc) if isinstance(node, _Scalar) and value is not None else (
                f"expected a duration such as 15, '15s' or '2m', got {_describe(node)}"
            )
            self.report.error(node, path, message)
            return None

    def choice(self, node: _Node | None, path: str, choices: tuple[str, ...]) -> str | None:
        text = self.string(node, path)
        if text is None:
            return None
        if text not in choices:
            self.report.error(
                node, path, f"'{text}' is not one of {', '.join(choices)}{_suggest(text, choices)}"
            )
            return None
        return text

    def string_list(self, node: _Node | None, path: str, *, allow_single: bool = True) -> list[tuple[str, _Node]]:
        """A list of strings (or one string where a single item is natural). Returns (text, node) pairs."""
        if node is None:
            return []
        if isinstance(node, _Scalar) and allow_single and node.value is not None:
            text = self.string(node, path)
            return [(text, node)] if text is not None else []
        if not isinstance(node, _Seq):
            self.report.error(node, path, f"expected a list of strings, got {_describe(node)}")
            return []
        result = []
        for index, item in enumerate(node.items):
            text = self.string(item, _join(path, index))
            if text is not None:
                result.append((text, item))
        return result


# --------------------------------------------------------------------------------------------------
# Building the Profile


def _flag_value(checker: _Checker, name: str, node: _Node, path: str) -> FlagValue | None:
    report = checker.report
    if not isinstance(node, _Scalar):
        report.error(node, path, f"a flag value must be a single value, got {_describe(node)}")
        return None
    if node.value is None:
        report.error(node, path, "flag has no value; write the value, or remove the flag to use xllm's default")
        return None
    known = XLLM_FLAGS.get(name)
    value = node.value
    if isinstance(value, str) or not isinstance(value, (bool, int, float)):
        problem = _placeholder_problem(node.text, RANK_PLACEHOLDERS)
        if problem:
            report.error(node, path, problem)
            return None
    if known is None:
        return value if isinstance(value, (bool, int, float)) else node.text
    flag_type = known[0]
    if isinstance(value, str) and _has_placeholder(node.text) and flag_type != "string":
        return node.text  # checked when the rank's value is known
    if flag_type == "string":
        return node.text
    if flag_type == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in GFLAGS_BOOL_WORDS:
            return value.strip().lower() in {"true", "t", "yes", "y", "1"}
        report.error(node, path, f"expected a boolean (true or false), got {_describe(node)}")
        return None
    if flag_type in ("int32", "uint32", "int64"):
        number: Any = value
        if isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:
                number = None
        if isinstance(number, bool) or not isinstance(number, int):
            report.error(node, path, f"expected an integer, got {_describe(node)}")
            return None
        low, high = {"int32": (-(2**31), 2**31), "uint32": (0, 2**32), "int64": (-(2**63), 2**63)}[flag_type]
        if not low <= number < high:
            report.error(node, path, f"{number} does not fit gflags' {flag_type}")
            return None
        return number
    # double
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        report.error(node, path, f"expected a number, got {_describe(node)}")
        return None
    return number


def _read_release(checker: _Checker, node: _Node | None) -> tuple[str, bool]:
    """(release, named): the `xllm_release` key resolved (xllm_flags.RELEASES), or the guide's pin."""
    if node is None:
        return DEFAULT_RELEASE, False
    text = checker.string(node, "xllm_release")
    release = resolve_release(text) if text is not None else None
    if release is None:
        if text is not None:
            checker.report.error(node, "xllm_release", f"unknown xllm release '{text}'{_suggest(text, RELEASES)}; "
                                 f"known: {', '.join(RELEASES)} (also 0.7, 0.8, 0.9, 0.10, main, any)")
        return DEFAULT_RELEASE, False
    return release, True


def _read_flags(checker: _Checker, node: _Node | None, rank_count: int, release: str = DEFAULT_RELEASE,
                release_named: bool = False) -> tuple[list[tuple[str, FlagValue]], dict[str, _Node]]:
    report = checker.report
    known_here = flags_of(release)
    flags: list[tuple[str, FlagValue]] = []
    nodes: dict[str, _Node] = {}
    mapping = checker.mapping(node, "flags", "a mapping of flag name to value")
    if mapping is None:
        return flags, nodes
    for name, (key_node, value_node) in mapping.items.items():
        path = _join("flags", name)
        if name.startswith("-"):
            report.error(key_node, path, f"write the flag name without dashes: '{name.lstrip('-')}'")
            continue
        if not _IDENTIFIER.match(name):
            fixed = re.sub(r"[^A-Za-z0-9_]", "_", name)
            report.error(
                key_node,
                path,
                f"'{name}' is not a valid gflags name (letters, digits and underscores only"
                + (f"; did you mean '{fixed}'?)" if _IDENTIFIER.match(fixed) else ")"),
            )
            continue
        if name == "nnodes":
            count = checker.integer(value_node, path, 1)
            if count is not None and count != rank_count and rank_count > 0:
                report.error(
                    value_node,
                    path,
                    f"nnodes is {count} but the machines run {rank_count} rank(s); nnodes is derived from "
                    "'machines': remove it from flags",
                )
            elif count is not None:
                report.warning(key_node, path, "nnodes is derived from 'machines' (the total rank count); remove it")
            continue
        if name in DERIVED_FLAGS:
            report.error(key_node, path, f"'{name}' is set by the launch for every rank: {DERIVED_FLAGS[name]}")
            continue
        if name not in known_here:
            # An error when the profile names its release (that binary exits 1 on it); a warning when it
            # only falls back to the guide's pin, since the binary may well be another release.
            why = explain_unknown(name, release).partition(": ")[2]
            reject = f"gflags rejects unknown flags at start-up (ERROR: unknown command line flag '{name}')"
            if why:
                message = f"{why}; xllm {release} rejects it at start-up (ERROR: unknown command line flag '{name}')"
            else:
                message = f"unknown xllm flag '{name}'{_suggest(name, known_here)}; {reject}"
            if release_named:
                report.error(key_node, path, message)
            else:
                report.warning(key_node, path, f"{message}; checked against {release} (the launch guide's "
                               "commit): set xllm_release if the binary is another release")
        value = _flag_value(checker, name, value_node, path)
        if value is None:
            continue
        if name == "communication_backend" and value not in ("hccl", "lccl"):
            report.warning(value_node, path, f"xllm knows the backends 'hccl' and 'lccl', got {value!r}")
        flags.append((name, value))
        nodes[name] = value_node
    if "device_id" in nodes and "device_id" in known_here:
        report.warning(
            mapping.key_node("device_id") or mapping,
            "flags.device_id",
            "device_id (v0.10.0) replaces --devices, which the launch also passes for every rank",
        )
    if "enable_graph" in nodes and "enable_acl_graph" in nodes:
        report.warning(
            mapping.key_node("enable_graph") or mapping,
            "flags.enable_graph",
            "both enable_graph (xllm v0.8 and later) and enable_acl_graph (v0.7) are set; each version knows only "
            "one of them and gflags rejects the other at start-up",
        )
    return flags, nodes


def _read_env_mapping(checker: _Checker, node: _Node | None, path: str) -> list[tuple[str, str, _Node]]:
    report = checker.report
    result: list[tuple[str, str, _Node]] = []
    mapping = checker.mapping(node, path, "a mapping of variable name to value")
    if mapping is None:
        return result
    for name, (key_node, value_node) in mapping.items.items():
        item_path = _join(path, name)
        if not _IDENTIFIER.match(name):
            report.error(key_node, item_path, f"'{name}' is not a valid environment variable name")
            continue
        if not isinstance(value_node, _Scalar):
            report.error(
                value_node,
                item_path,
                f"an environment value must be a single value (string or number), got {_describe(value_node)}",
            )
            continue
        if value_node.value is None:
            report.error(value_node, item_path, "no value; write '' for an empty value, or remove the variable")
            continue
        result.append((name, value_node.text, value_node))
    return result


def _is_dangerous_removal(pattern: str) -> bool:
    stripped = pattern.strip()
    if stripped in _DANGEROUS_REMOVALS:
        return True
    expanded = os.path.normpath(os.path.expanduser(stripped))
    return expanded in ("/", os.path.expanduser("~"))


def _read_removals(checker: _Checker, node: _Node | None, path: str) -> tuple[str, ...]:
    result = []
    for text, item in checker.string_list(node, path):
        if _is_dangerous_removal(text):
            checker.report.error(item, path, f"refusing to remove '{text}': name the files or directories exactly")
            continue
        result.append(text.strip())
    return tuple(result)


def _resolve_against(node: _Node, text: str) -> str:
    """A path relative to the file that wrote it (so a base profile's paths stay its own)."""
    expanded = os.path.expanduser(text)
    if os.path.isabs(expanded):
        return os.path.normpath(expanded)
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(node.file)), expanded))


def _build(tree: _Map, path: str, checker: _Checker) -> Profile | None:
    report = checker.report
    checker.keys(tree, TOP_KEYS, "")

    name_node = tree.get("name")
    name = checker.string(name_node, "name") if name_node is not None else None
    if name is None:
        name = os.path.splitext(os.path.basename(path))[0]
    elif not _NAME.match(name):
        report.error(name_node, "name", f"'{name}' may only hold letters, digits, '.', '_' and '-' (it names the run directory)")
    description = checker.string(tree.get("description"), "description", allow_empty=True) or ""

    binary_node = checker.required(tree, "binary", "", "binary: ./myxllm/xllm/build/xllm/core/server/xllm")
    binary = checker.string(binary_node, "binary")
    model_node = checker.required(tree, "model", "", "model: /export/home/models/GLM-4.5-w8a8/")
    model = checker.string(model_node, "model")
    model_id = checker.string(tree.get("model_id"), "model_id")
    draft_node = tree.get("draft_model")
    draft_model = checker.string(draft_node, "draft_model")

    # ---- machines
    machines: list[Machine] = []
    machine_nodes: list[tuple[int, _Map]] = []  # (position in the YAML list, node) of each machine read
    machines_node = checker.required(tree, "machines", "", "machines: [{host: 11.87.49.110, devices: 0-7}]")
    if machines_node is not None:
        if not isinstance(machines_node, _Seq):
            report.error(machines_node, "machines", f"expected a list of machines, got {_describe(machines_node)}")
        elif not machines_node.items:
            report.error(machines_node, "machines", "no machines; add at least one: - {host: 11.87.49.110, devices: 0-7}")
        for index, item in enumerate(machines_node.items if isinstance(machines_node, _Seq) else []):
            machine = _read_machine(checker, item, _join("machines", index))
            if machine is not None:
                machines.append(machine)
                machine_nodes.append((index, item))  # type: ignore[arg-type]
    rank_count = sum(len(m.devices) for m in machines)

    # ---- addresses and ports
    master_node = checker.required(tree, "master_node_addr", "", "master_node_addr: 11.87.49.110:10015")
    master = checker.string(master_node, "master_node_addr")
    master_host, master_port = None, None
    if master is not None:
        try:
            master_host, master_port = split_host_port(master)
        except ValueError as exc:
            report.error(master_node, "master_node_addr", str(exc))
            master = None
    base_port_node = checker.required(tree, "base_port", "", "base_port: 18994")
    base_port = checker.integer(base_port_node, "base_port", 1, 65535)

    # ---- cores rule
    core_rule = _read_core_rule(checker, tree.get("cores"))

    # ---- flags
    xllm_release, release_named = _read_release(checker, tree.get("xllm_release"))
    flags, flag_nodes = _read_flags(checker, tree.get("flags"), rank_count, xllm_release, release_named)

    # ---- environment
    env_entries = _read_env_mapping(checker, tree.get("env"), "env")
    env = tuple((n, v) for n, v, _ in env_entries)
    path_prepend = _read_path_prepend(checker, tree.get("path_prepend"))
    source_scripts = []
    for text, item in checker.string_list(tree.get("source"), "source"):
        source_scripts.append((_resolve_against(item, text), item))
    toggles = _read_toggles(checker, tree.get("toggles"), dict((n, v) for n, v in env))
    pre_launch = _read_pre_launch(checker, tree.get("pre_launch"))

    # ---- logs, dirs
    log_dir, log_file = "logs", "node_{rank}.log"
    logs = checker.mapping(tree.get("logs"), "logs")
    if logs is not None:
        checker.keys(logs, LOGS_KEYS, "logs")
        dir_node = logs.get("dir")
        dir_text = checker.string(dir_node, "logs.dir")
        if dir_text is not None and _has_placeholder(dir_text):
            report.error(dir_node, "logs.dir", "one directory for all ranks: put {rank} and the like in logs.file")
        elif dir_text is not None:
            log_dir = dir_text
        file_node = logs.get("file")
        file_text = checker.string(file_node, "logs.file")
        if file_text is not None:
            problem = _placeholder_problem(file_text, RANK_PLACEHOLDERS)
            if problem:
                report.error(file_node, "logs.file", problem)
            elif "/" in file_text:
                report.error(file_node, "logs.file", "a file name, not a path: put directories in logs.dir")
            else:
                if rank_count > 1 and not any(f"{{{p}}}" in file_text for p in ("rank", "local_rank", "device")):
                    report.error(
                        file_node,
                        "logs.file",
                        f"every rank would write the same file '{file_text}'; include {{rank}}, e.g. node_{{rank}}.log",
                    )
                log_file = file_text
    working_dir = None
    working_node = tree.get("working_dir")
    working_text = checker.string(working_node, "working_dir")
    if working_text is not None:
        working_dir = _resolve_against(working_node, working_text)
    run_dir = None
    run_node = tree.get("run_dir")
    run_text = checker.string(run_node, "run_dir")
    if run_text is not None:
        run_dir = _resolve_against(run_node, run_text)

    readiness = _read_readiness(checker, tree.get("readiness"))
    restart = _read_restart(checker, tree.get("restart"), rank_count)
    stop_grace = 15.0
    stop = checker.mapping(tree.get("stop"), "stop")
    if stop is not None:
        checker.keys(stop, STOP_KEYS, "stop")
        grace = checker.duration(stop.get("grace"), "stop.grace")
        if grace is not None:
            stop_grace = grace

    rank_table_node = tree.get("rank_tablefile")
    rank_tablefile = checker.string(rank_table_node, "rank_tablefile")
    device_settings = _read_device_settings(checker, tree.get("devices"))
    hooks = _read_hooks(checker, tree.get("hooks"))
    metrics = _read_metrics(checker, tree.get("metrics"))

    # ---- semantic checks across sections
    _check_machines(checker, machines, machine_nodes, core_rule, tree.get("cores"))
    all_machines_read = isinstance(machines_node, _Seq) and len(machines) == len(machines_node.items) > 0
    if all_machines_read:  # otherwise the broken machine entry is the error to fix first
        _check_ports(checker, machines, master_host, master_port, master_node, base_port, base_port_node)
    if rank_tablefile is not None and len(machines) > 1:
        for machine, (index, node) in zip(machines, machine_nodes):
            if not machine.device_ips:
                report.error(
                    node,
                    f"machines[{index}].device_ips",
                    f"machine {machine.host} has no device_ips; the HCCL rank table needs each NPU's address "
                    "(hccn_tool -i <id> -ip -g prints it)",
                )
    if len(machines) > 1 and rank_tablefile is None:
        report.warning(
            machines_node,
            "rank_tablefile",
            "a multi-machine world usually needs an HCCL rank table: set rank_tablefile (and device_ips)",
        )
    draft_devices = next((v for n, v in flags if n == "draft_devices"), None)
    if isinstance(draft_devices, str) and rank_count > 1 and not _has_placeholder(draft_devices):
        report.warning(
            flag_nodes["draft_devices"],
            "flags.draft_devices",
            f"every rank would run its draft model on {draft_devices}; the guide uses each rank's own NPU: npu:{{device}}",
        )
    if draft_model is None and ("draft_devices" in flag_nodes or "num_speculative_tokens" in flag_nodes):
        key = "draft_devices" if "draft_devices" in flag_nodes else "num_speculative_tokens"
        report.warning(flag_nodes[key], _join("flags", key), "set without a top-level draft_model")

    # ---- paths that must exist on the machine that launches
    base_dir = working_dir or os.path.dirname(os.path.abspath(path))
    if binary is not None:
        _check_binary(checker, binary, binary_node, base_dir)
    if model is not None:
        _check_dir(checker, model, model_node, "model", base_dir, "model directory")
    if draft_model is not None:
        _check_dir(checker, draft_model, draft_node, "draft_model", base_dir, "draft model directory")
    for index, (script, item) in enumerate(source_scripts):
        if not os.path.isfile(script):
            key = _join("source", index) if isinstance(tree.get("source"), _Seq) else "source"
            _missing(checker, item, key, f"script {script} not found")

    if report.has_errors:
        return None
    assert binary is not None and model is not None and master is not None and base_port is not None

    # --draft_model/--draft_devices go where the guide puts them: before --draft_devices or
    # --num_speculative_tokens if the flags give them, else last.
    if draft_model is not None:
        names = [n for n, _ in flags]
        extra: list[tuple[str, FlagValue]] = [("draft_model", draft_model)]
        if "draft_devices" not in names:
            extra.append(("draft_devices", "npu:{device}"))
        anchor = next((names.index(n) for n in ("draft_devices", "num_speculative_tokens") if n in names), len(flags))
        flags[anchor:anchor] = extra
    if rank_tablefile is not None:
        flags.append(("rank_tablefile", rank_tablefile))

    return Profile(
        name=name,
        source_path=os.path.abspath(path),
        binary=binary,
        model=model,
        model_id=model_id,
        draft_model=draft_model,
        machines=tuple(machines),
        master_node_addr=master,
        base_port=base_port,
        core_rule=core_rule,
        flags=tuple(flags),
        env=env,
        path_prepend=path_prepend,
        source_scripts=tuple(s for s, _ in source_scripts),
        toggles=toggles,
        pre_launch=pre_launch,
        log_dir=log_dir,
        log_file=log_file,
        working_dir=working_dir,
        run_dir=run_dir,
        restart=restart,
        readiness=readiness,
        stop_grace_s=stop_grace,
        rank_tablefile=rank_tablefile,
        description=description,
        devices=device_settings,
        hooks=hooks,
        metrics=metrics,
        xllm_release=xllm_release,
    )


def _read_machine(checker: _Checker, node: _Node, path: str) -> Machine | None:
    report = checker.report
    mapping = checker.mapping(node, path, "a machine (a mapping with host and devices)")
    if mapping is None:
        return None
    checker.keys(mapping, MACHINE_KEYS, path)
    ok = True
    host_node = checker.required(mapping, "host", path, "host: 11.87.49.110")
    host = checker.string(host_node, _join(path, "host"))
    if host is not None:
        problem = check_host(host)
        if problem:
            report.error(host_node, _join(path, "host"), problem)
            ok = False
    else:
        ok = False

    devices: tuple[int, ...] = ()
    devices_node = checker.required(mapping, "devices", path, "devices: 0-7, or devices: [0, 1, 2, 3]")
    devices_path = _join(path, "devices")
    if isinstance(devices_node, _Seq):
        seen: dict[int, _Node] = {}
        for index, item in enumerate(devices_node.items):
            device = checker.integer(item, _join(devices_path, index), 0)
            if device is None:
                ok = False
                continue
            if device in seen:
                report.error(
                    item,
                    _join(devices_path, index),
                    f"device {device} is listed twice on machine {host} (first at line {seen[device].line}); "
                    "one rank per NPU",
                )
                ok = False
                continue
            seen[device] = item
        devices = tuple(seen)
        if not devices_node.items:
            report.error(devices_node, devices_path, "no devices; list the NPU logic ids this machine runs, e.g. 0-7")
            ok = False
    elif isinstance(devices_node, _Scalar) and devices_node.value is not None:
        if isinstance(devices_node.value, bool):
            report.error(devices_node, devices_path, f"expected device ids such as 0-7 or [0, 1], got {_describe(devices_node)}")
            ok = False
        else:
            try:
                devices = parse_cores(devices_node.text)
            except ValueError as exc:
                message = str(exc).replace("core list", "device list").replace("core ", "device ")
                report.error(devices_node, devices_path, message.replace("appears twice", "is listed twice"))
                ok = False
    elif devices_node is not None:
        report.error(devices_node, devices_path, f"expected device ids such as 0-7 or [0, 1], got {_describe(devices_node)}")
        ok = False
    else:
        ok = False

    device_ips: list[str] = []
    ips_node = mapping.get("device_ips")
    ips_path = _join(path, "device_ips")
    if ips_node is not None:
        if not isinstance(ips_node, _Seq):
            report.error(ips_node, ips_path, f"expected a list of NPU addresses, one per device, got {_describe(ips_node)}")
            ok = False
        else:
            for index, item in enumerate(ips_node.items):
                text = checker.string(item, _join(ips_path, index))
                if text is None:
                    ok = False
                    continue
                try:
                    ipaddress.ip_address(text.strip())
                except ValueError:
                    report.error(item, _join(ips_path, index), f"'{text}' is not an IP address")
                    ok = False
                    continue
                device_ips.append(text.strip())
            if devices and len(ips_node.items) != len(devices):
                report.error(
                    ips_node,
                    ips_path,
                    f"{len(ips_node.items)} device_ips for {len(devices)} devices; give one address per device, "
                    "in the order of 'devices'",
                )
                ok = False

    cores: list[str] = []
    cores_node = mapping.get("cores")
    cores_path = _join(path, "cores")
    if cores_node is not None:
        if not isinstance(cores_node, _Seq):
            report.error(
                cores_node, cores_path, f"expected a list of core lists, one per device (e.g. ['0-11', '12-23']), got {_describe(cores_node)}"
            )
            ok = False
        else:
            for index, item in enumerate(cores_node.items):
                item_path = _join(cores_path, index)
                if not isinstance(item, _Scalar) or item.value is None or isinstance(item.value, bool):
                    report.error(item, item_path, f"expected a core list such as '0-11', got {_describe(item)}")
                    ok = False
                    continue
                try:
                    cores.append(format_cores(parse_cores(item.text)))
                except ValueError as exc:
                    report.error(item, item_path, str(exc))
                    ok = False
            if devices and len(cores_node.items) != len(devices):
                report.error(
                    cores_node,
                    cores_path,
                    f"{len(cores_node.items)} core lists for {len(devices)} devices; give one per device, in the order of 'devices'",
                )
                ok = False

    name = checker.string(mapping.get("name"), _join(path, "name")) or ""
    ssh: SshTarget | None = None
    if mapping.get("ssh") is not None and host is not None:
        ssh = _read_ssh(checker, mapping.get("ssh"), _join(path, "ssh"), host)
        ok = ok and ssh is not None
    if not ok or host is None:
        return None
    return Machine(host=host, devices=devices, device_ips=tuple(device_ips), cores=tuple(cores), name=name or host,
                   ssh=ssh)


_SSH_WORD = re.compile(r"^[A-Za-z0-9_.@%+:/=~-]+$")  # what may go to ssh as a word: no option, no shell syntax


def _read_ssh(checker: _Checker, node: _Node, path: str, machine_host: str) -> SshTarget | None:
    """`ssh: alias` or `ssh: {host, user, port, identity, command}`: how machine 0 reaches this machine."""
    report = checker.report
    if isinstance(node, _Scalar):
        text = checker.string(node, path)
        if text is None:
            return None
        node_host, fields = node, {}
    else:
        mapping = checker.mapping(node, path, "ssh settings: an alias, or {host, user, port, identity}")
        if mapping is None:
            return None
        checker.keys(mapping, SSH_KEYS, path)
        node_host, fields = mapping.get("host"), mapping.items
        text = checker.string(node_host, _join(path, "host")) if node_host is not None else machine_host
        if text is None:
            return None
    ok = True
    host = text.strip()
    if host.startswith("-") or not _SSH_WORD.match(host):
        report.error(node_host or node, _join(path, "host") if fields else path,
                     f"'{host}' is not an ssh host or alias (a name of ~/.ssh/config, a hostname or an address)")
        ok = False
    user = port = identity = None
    command: tuple[str, ...] = SshTarget.command
    if fields:
        mapping = node  # type: ignore[assignment]
        if mapping.get("user") is not None:
            user = checker.string(mapping.get("user"), _join(path, "user"))
            if user is not None and (user.startswith("-") or not _SSH_WORD.match(user)):
                report.error(mapping.get("user"), _join(path, "user"), f"'{user}' is not a user name")
                ok = False
            ok = ok and user is not None
        if mapping.get("port") is not None:
            port = checker.integer(mapping.get("port"), _join(path, "port"), 1, 65535)
            ok = ok and port is not None
        if mapping.get("identity") is not None:
            identity = checker.string(mapping.get("identity"), _join(path, "identity"))
            ok = ok and identity is not None
        if mapping.get("command") is not None:
            words = [w for w, _ in checker.string_list(mapping.get("command"), _join(path, "command"))]
            if isinstance(mapping.get("command"), _Scalar):
                words = words[0].split() if words else []
            if not words:
                report.error(mapping.get("command"), _join(path, "command"),
                             "expected the xllm-tui command on that machine, e.g. [xllm-tui] or [python3, -m, xllm_tui]")
                ok = False
            command = tuple(words)
    if not ok:
        return None
    return SshTarget(host=host, user=user, port=port, identity=identity, command=command)


def _read_core_rule(checker: _Checker, node: _Node | None) -> CoreRule:
    report = checker.report
    if node is None:
        return CoreRule()
    if isinstance(node, _Scalar):  # shorthand: "cores: none" / "cores: topology"
        kind = checker.choice(node, "cores", CORE_RULES)
        return CoreRule(kind=kind) if kind else CoreRule()  # type: ignore[arg-type]
    mapping = checker.mapping(node, "cores", "a core rule such as {rule: per_device, count: 12, first: 0}")
    if mapping is None:
        return CoreRule()
    checker.keys(mapping, CORES_KEYS, "cores")
    kind = checker.choice(mapping.get("rule"), "cores.rule", CORE_RULES) or "per_device"
    count = checker.integer(mapping.get("count"), "cores.count", 1)
    first = checker.integer(mapping.get("first"), "cores.first", 0)
    # With "topology", count is each NPU's share of its CPU affinity; "first" has no meaning there.
    ignored = {"topology": ("first",), "none": ("count", "first")}.get(kind, ())
    for key in ignored:
        if kind == "topology" and first == 0:
            continue  # "first: 0" is what a base's per_device rule often leaves behind: harmless
        if mapping.get(key) is not None:
            report.warning(mapping.key_node(key) or mapping, _join("cores", key), f"ignored with rule '{kind}'")
    return CoreRule(kind=kind, count=count if count is not None else 12, first=first if first is not None else 0)  # type: ignore[arg-type]


def _read_device_settings(checker: _Checker, node: _Node | None) -> DeviceSettings:
    report = checker.report
    defaults = DeviceSettings()
    if isinstance(node, (_Scalar, _Seq)) and not (isinstance(node, _Scalar) and node.value is None):
        report.error(
            node,
            "devices",
            f"expected a mapping such as {{backend: npu-smi, npu_smi: /usr/local/sbin/npu-smi}}, got {_describe(node)}"
            " (the NPU ids a machine runs go under its own 'devices' in machines)",
        )
        return defaults
    mapping = checker.mapping(node, "devices")
    if mapping is None:
        return defaults
    checker.keys(mapping, DEVICES_KEYS, "devices")
    backend_node = mapping.get("backend")
    backend = checker.choice(backend_node, "devices.backend", DEVICE_BACKENDS) if backend_node is not None else None
    tools: dict[str, str | None] = {}
    for key, tool in (("npu_smi", "npu-smi"), ("nvidia_smi", "nvidia-smi")):
        tool_node = mapping.get(key)
        text = checker.string(tool_node, _join("devices", key))
        if text is None:
            tools[key] = None
            continue
        text = text.strip()
        expanded = os.path.expanduser(text)
        other = "nvidia-smi" if tool == "npu-smi" else "npu-smi"
        # A tool missing here is only a warning: devices are read where the ranks run, and nothing needs them
        # to launch (except cores: topology, which says so itself). Under --simulate the simulated npu-smi is used.
        suffix = "; fine under --simulate (the simulated npu-smi is used)" if checker.simulate else ""
        if "/" in expanded:
            tools[key] = _resolve_against(tool_node, text)  # type: ignore[arg-type]
            missing = None if os.path.isfile(tools[key]) else f"{tool} {tools[key]} not found on this machine"
        else:
            tools[key] = expanded
            missing = None if shutil.which(expanded) else f"'{text}' is not on PATH here"
        if backend == other:
            report.warning(tool_node, _join("devices", key), f"ignored with backend '{other}'")
        elif missing:
            report.warning(tool_node, _join("devices", key), f"{missing}: devices cannot be read here{suffix}")
    intervals: dict[str, float | None] = {}
    for key in ("poll_interval", "timeout"):
        value_node = mapping.get(key)
        value = checker.duration(value_node, _join("devices", key))
        if value is not None and value <= 0:
            report.error(value_node, _join("devices", key), "must be longer than 0 (e.g. 10s)")
            value = None
        intervals[key] = value
    on_busy_node = mapping.get("on_busy")
    on_busy = checker.choice(on_busy_node, "devices.on_busy", DEVICE_ON_BUSY) if on_busy_node is not None else None
    return DeviceSettings(
        backend=backend or defaults.backend,  # type: ignore[arg-type]
        npu_smi=tools["npu_smi"],
        nvidia_smi=tools["nvidia_smi"],
        poll_interval_s=intervals["poll_interval"] if intervals["poll_interval"] is not None else defaults.poll_interval_s,
        timeout_s=intervals["timeout"] if intervals["timeout"] is not None else defaults.timeout_s,
        on_busy=on_busy or defaults.on_busy,  # type: ignore[arg-type]
    )


def _read_path_prepend(checker: _Checker, node: _Node | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    mapping = checker.mapping(node, "path_prepend", "a mapping of variable name to a list of entries")
    if mapping is None:
        return ()
    result = []
    for name, (key_node, value_node) in mapping.items.items():
        path = _join("path_prepend", name)
        if not _IDENTIFIER.match(name):
            checker.report.error(key_node, path, f"'{name}' is not a valid environment variable name")
            continue
        entries = checker.string_list(value_node, path)
        for text, item in entries:
            if ":" in text:
                checker.report.error(item, path, f"'{text}' holds ':'; give one entry per list item")
        result.append((name, tuple(text for text, _ in entries)))
    return tuple(result)


def _read_toggles(checker: _Checker, node: _Node | None, base_env: dict[str, str]) -> tuple[Toggle, ...]:
    report = checker.report
    mapping = checker.mapping(node, "toggles", "a mapping of toggle name to its settings")
    if mapping is None:
        return ()
    toggles = []
    set_by: dict[str, tuple[str, str]] = {}
    for name, (key_node, value_node) in mapping.items.items():
        path = _join("toggles", name)
        if not _NAME.match(name):
            report.error(key_node, path, f"toggle name '{name}' may only hold letters, digits, '.', '_' and '-'")
            continue
        body = checker.mapping(value_node, path, "a toggle (a mapping with enabled, env, unset, remove)")
        if body is None:
            continue
        checker.keys(body, TOGGLE_KEYS, path)
        enabled_node = body.get("enabled")
        enabled = checker.boolean(enabled_node, _join(path, "enabled")) if enabled_node is not None else False
        description = checker.string(body.get("description"), _join(path, "description"), allow_empty=True) or ""
        env_entries = _read_env_mapping(checker, body.get("env"), _join(path, "env"))
        unset = []
        for text, item in checker.string_list(body.get("unset"), _join(path, "unset")):
            if not _IDENTIFIER.match(text):
                report.error(item, _join(path, "unset"), f"'{text}' is not a valid environment variable name")
            elif any(text == n for n, _, _ in env_entries):
                report.error(item, _join(path, "unset"), f"'{text}' is both set (env) and unset by this toggle")
            else:
                unset.append(text)
        for var, value, value_node_env in env_entries:
            var_path = _join(_join(path, "env"), var)
            if var in base_env:
                report.warning(
                    value_node_env,
                    var_path,
                    f"{var} is also in the base env ({base_env[var]!r}); when '{name}' is on, its value {value!r} wins",
                )
            if var in set_by and set_by[var][1] != value:
                report.warning(
                    value_node_env, var_path, f"toggle '{set_by[var][0]}' sets {var} to {set_by[var][1]!r}; both on conflict"
                )
            set_by.setdefault(var, (name, value))
        remove = _read_removals(checker, body.get("remove"), _join(path, "remove"))
        if not env_entries and not unset and not remove and not isinstance(body.get("env"), _Map):
            report.warning(body, path, "this toggle changes nothing (no env, unset or remove)")
        toggles.append(
            Toggle(
                name=name,
                enabled=bool(enabled),
                env=tuple((n, v) for n, v, _ in env_entries),
                remove=remove,
                unset=tuple(unset),
                description=description,
            )
        )
    return tuple(toggles)


def _named_items(checker: _Checker, node: _Node | None, key: str, what: str, shape: str, keys):
    """(path, body, name) of each mapping in the list at `key` (pre_launch steps, hooks): checked keys, a
    default name "<what> N", names unique."""
    report = checker.report
    if node is None:
        return
    if not isinstance(node, _Seq):
        report.error(node, key, f"expected a list of {what}s, got {_describe(node)}")
        return
    names: dict[str, _Node] = {}
    for index, item in enumerate(node.items):
        path = _join(key, index)
        body = checker.mapping(item, path, shape)
        if body is None:
            continue
        checker.keys(body, keys, path)
        name_node = body.get("name")
        name = checker.string(name_node, _join(path, "name")) or f"{what} {index + 1}"
        if name_node is not None and name in names:
            report.error(name_node, _join(path, "name"), f"{what} name '{name}' is used twice (first at line {names[name].line})")
        names.setdefault(name, name_node or body)
        yield path, body, name


def _read_pre_launch(checker: _Checker, node: _Node | None) -> tuple[PreLaunchStep, ...]:
    report = checker.report
    steps = []
    for path, body, name in _named_items(checker, node, "pre_launch", "step",
                                         "a step (a mapping with name, remove and/or run, when)", STEP_KEYS):
        remove = _read_removals(checker, body.get("remove"), _join(path, "remove"))
        run_node = body.get("run")
        run: tuple[str, ...] = ()
        if run_node is not None:
            if isinstance(run_node, _Scalar):
                report.error(
                    run_node,
                    _join(path, "run"),
                    "run must be a list of arguments, never a shell string: e.g. run: [python3, -c, 'print(1)']",
                )
            else:
                run = tuple(t for t, _ in checker.string_list(run_node, _join(path, "run"), allow_single=False))
                if isinstance(run_node, _Seq) and not run_node.items:
                    report.error(run_node, _join(path, "run"), "empty command")
        if run_node is None and body.get("remove") is None:
            report.error(body, path, "a step needs 'remove' (globs to delete) and/or 'run' (an argv list)")
        when_node = body.get("when")
        when = checker.choice(when_node, _join(path, "when"), STEP_WHEN) if when_node is not None else "always"
        timeout = checker.duration(body.get("timeout"), _join(path, "timeout"))
        steps.append(
            PreLaunchStep(
                name=name,
                remove=remove,
                run=run,
                when=when or "always",  # type: ignore[arg-type]
                timeout_s=timeout if timeout is not None else 300.0,
            )
        )
    return tuple(steps)


HOOK_KEYS = ("name", "on", "run", "timeout")
METRICS_KEYS = ("textfile", "listen", "interval")


def _read_hooks(checker: _Checker, node: _Node | None) -> tuple[Hook, ...]:
    """hooks: [{name, on: [event kinds], run: [argv], timeout}]; see xllm_tui/alerts.py."""
    report = checker.report
    hooks = []
    allowed = HOOK_EVENTS + JOURNAL_KINDS
    for path, body, name in _named_items(checker, node, "hooks", "hook",
                                         "a hook (a mapping with on, run and optionally name, timeout)", HOOK_KEYS):
        on_node = checker.required(body, "on", path, "on: [rank_failed, crash_looping]")
        events = []
        for text, event_node in checker.string_list(on_node, _join(path, "on")):
            if text not in allowed:
                report.error(event_node, _join(path, "on"),
                             f"unknown event '{text}'{_suggest(text, allowed)}; events: {', '.join(HOOK_EVENTS)} "
                             f"(or a journal kind: {', '.join(JOURNAL_KINDS)})")
            else:
                events.append(text)
        run_node = checker.required(body, "run", path, "run: [/usr/local/bin/notify, --channel, ops]")
        run: list[str] = []
        if isinstance(run_node, _Scalar) and run_node.value is not None:
            report.error(run_node, _join(path, "run"),
                         "run must be a list of arguments, never a shell string: e.g. run: [/usr/local/bin/page, ops]")
        elif run_node is not None:
            run = [t for t, _ in checker.string_list(run_node, _join(path, "run"), allow_single=False)]
            if isinstance(run_node, _Seq) and not run_node.items:
                report.error(run_node, _join(path, "run"), "empty command")
        if run and "/" in run[0]:
            run[0] = _resolve_against(run_node.items[0], run[0])  # type: ignore[union-attr]
            if not (os.path.isfile(run[0]) and os.access(run[0], os.X_OK)):
                report.warning(run_node.items[0], _join(_join(path, "run"), 0),  # type: ignore[union-attr]
                               f"{run[0]} is not an executable file here; the hook fails when it runs")
        elif run and shutil.which(run[0]) is None:
            report.warning(run_node.items[0], _join(_join(path, "run"), 0),  # type: ignore[union-attr]
                           f"'{run[0]}' is not on PATH here; the hook fails when it runs")
        timeout_node = body.get("timeout")
        timeout = checker.duration(timeout_node, _join(path, "timeout"))
        if timeout is not None and timeout <= 0:
            report.error(timeout_node, _join(path, "timeout"), "must be more than 0: a hook always has a time limit")
            timeout = None
        if events and run:
            hooks.append(Hook(name=name, on=tuple(events), run=tuple(run), timeout_s=timeout or 30.0))
    return tuple(hooks)


def _read_metrics(checker: _Checker, node: _Node | None) -> MetricsSettings | None:
    """metrics: {textfile: PATH, listen: 127.0.0.1:PORT | unix:PATH, interval}; see xllm_tui/metrics.py."""
    report = checker.report
    mapping = checker.mapping(node, "metrics", "a mapping such as {textfile: /var/lib/node_exporter/xllm.prom}")
    if mapping is None:
        return None
    checker.keys(mapping, METRICS_KEYS, "metrics")
    textfile_node = mapping.get("textfile")
    textfile = checker.string(textfile_node, "metrics.textfile")
    if textfile is not None:
        textfile = _resolve_against(textfile_node, textfile)  # type: ignore[arg-type]
        if not textfile.endswith(".prom"):
            report.warning(textfile_node, "metrics.textfile", "node_exporter's textfile collector reads only *.prom files")
    listen_node = mapping.get("listen")
    listen = checker.string(listen_node, "metrics.listen")
    if listen is not None:
        if listen.startswith("unix:"):
            if not listen[5:]:
                report.error(listen_node, "metrics.listen", "unix: needs a socket path, e.g. unix:/run/xllm-metrics.sock")
                listen = None
            else:
                listen = "unix:" + _resolve_against(listen_node, listen[5:])  # type: ignore[arg-type]
        else:
            try:
                host, _port = split_host_port(listen)
                try:
                    loopback = ipaddress.ip_address(host).is_loopback
                except ValueError:  # a name: only localhost is surely loopback
                    loopback = host == "localhost"
            except ValueError as exc:
                report.error(listen_node, "metrics.listen", f"{exc}; e.g. 127.0.0.1:9464 or unix:/path/metrics.sock")
                listen = None
            else:
                if not loopback:
                    report.error(listen_node, "metrics.listen",
                                 f"{host} is not a loopback address: the endpoint has no authentication, so it listens "
                                 "on 127.0.0.1 or a unix socket only (scrape it through node_exporter or a proxy)")
                    listen = None
    interval = checker.duration(mapping.get("interval"), "metrics.interval")
    if interval is not None and interval <= 0:
        report.error(mapping.get("interval"), "metrics.interval", "must be more than 0")
        interval = None
    if textfile is None and listen is None and textfile_node is None and listen_node is None:
        report.error(mapping, "metrics", "give textfile: PATH (node_exporter textfile collector) and/or listen: "
                     "127.0.0.1:PORT | unix:PATH")
        return None
    return MetricsSettings(textfile=textfile, listen=listen, interval_s=interval or 15.0)


def _read_readiness(checker: _Checker, node: _Node | None) -> Readiness:
    mapping = checker.mapping(node, "readiness")
    if mapping is None:
        return Readiness()
    checker.keys(mapping, READINESS_KEYS, "readiness")
    defaults = Readiness()
    pattern_node = mapping.get("ready_pattern")
    pattern = checker.string(pattern_node, "readiness.ready_pattern")
    if pattern is not None:
        try:
            re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            checker.report.error(pattern_node, "readiness.ready_pattern", f"not a valid regular expression: {exc}")
    http_probe_node = mapping.get("http_probe")
    http_probe = checker.boolean(http_probe_node, "readiness.http_probe") if http_probe_node is not None else None

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    return Readiness(
        ready_pattern=pick(pattern, defaults.ready_pattern),
        http_probe=pick(http_probe, defaults.http_probe),
        probe_interval_s=pick(checker.duration(mapping.get("probe_interval"), "readiness.probe_interval"), defaults.probe_interval_s),
        silence_warning_s=pick(checker.duration(mapping.get("silence_warning"), "readiness.silence_warning"), defaults.silence_warning_s),
        start_timeout_s=pick(checker.duration(mapping.get("start_timeout"), "readiness.start_timeout"), defaults.start_timeout_s),
    )


def _read_restart(checker: _Checker, node: _Node | None, rank_count: int) -> RestartPolicy:
    defaults = RestartPolicy(scope="group" if rank_count > 1 else "rank")
    mapping = checker.mapping(node, "restart")
    if mapping is None:
        return defaults
    checker.keys(mapping, RESTART_KEYS, "restart")
    mode = checker.choice(mapping.get("mode"), "restart.mode", ("manual", "on-failure")) if mapping.get("mode") is not None else None
    scope_node = mapping.get("scope")
    scope = checker.choice(scope_node, "restart.scope", ("group", "rank")) if scope_node is not None else None
    if scope == "rank" and rank_count > 1:
        checker.report.warning(
            scope_node,
            "restart.scope",
            "the ranks of one xllm world fail together (a survivor blocks in HCCL); restarting one rank alone "
            "usually leaves the group broken: prefer 'group'",
        )
    initial = maximum = factor = None
    backoff = checker.mapping(mapping.get("backoff"), "restart.backoff")
    if backoff is not None:
        checker.keys(backoff, BACKOFF_KEYS, "restart.backoff")
        initial = checker.duration(backoff.get("initial"), "restart.backoff.initial")
        maximum = checker.duration(backoff.get("max"), "restart.backoff.max")
        factor = checker.number(backoff.get("factor"), "restart.backoff.factor", 1.0)
        first = initial if initial is not None else defaults.backoff_initial_s
        last = maximum if maximum is not None else defaults.backoff_max_s
        if first > last:
            checker.report.error(
                backoff.get("max") or backoff.get("initial") or backoff,
                "restart.backoff",
                f"initial delay {first:g}s is longer than max {last:g}s",
            )
    max_restarts = checker.integer(mapping.get("max_restarts"), "restart.max_restarts", 0)
    window = checker.duration(mapping.get("window"), "restart.window")
    return RestartPolicy(
        mode=mode or defaults.mode,  # type: ignore[arg-type]
        scope=scope or defaults.scope,  # type: ignore[arg-type]
        backoff_initial_s=initial if initial is not None else defaults.backoff_initial_s,
        backoff_max_s=maximum if maximum is not None else defaults.backoff_max_s,
        backoff_factor=factor if factor is not None else defaults.backoff_factor,
        max_restarts=max_restarts if max_restarts is not None else defaults.max_restarts,
        window_s=window if window is not None else defaults.window_s,
    )


def _check_machines(
    checker: _Checker, machines: list[Machine], nodes: list[tuple[int, _Map]], rule: CoreRule, rule_node: _Node | None
) -> None:
    report = checker.report
    hosts: dict[str, int] = {}
    all_ips: dict[str, str] = {}
    for machine, (index, node) in zip(machines, nodes):
        path = f"machines[{index}]"
        host_node = node.get("host") or node
        key = machine.host.strip("[]").lower()
        if key in hosts:
            report.error(
                host_node,
                _join(path, "host"),
                f"machine {machine.host} is listed twice (also machines[{hosts[key]}]); put all its devices in one entry",
            )
        hosts.setdefault(key, index)
        ips_node = node.get("device_ips")
        for ip_index, ip in enumerate(machine.device_ips):
            if ip in all_ips:
                item = ips_node.items[ip_index] if isinstance(ips_node, _Seq) else node
                report.error(item, _join(_join(path, "device_ips"), ip_index), f"device IP {ip} is also used by {all_ips[ip]}")
            all_ips.setdefault(ip, f"{machine.host} device {machine.devices[ip_index]}")
        # cores: explicit or computed must not overlap between ranks of one machine
        taken: dict[int, tuple[int, str]] = {}
        cores_node = node.get("cores")
        for local_rank, device in enumerate(machine.devices):
            if machine.cores:
                text: str | None = machine.cores[local_rank]
                where: _Node = cores_node.items[local_rank] if isinstance(cores_node, _Seq) else node
                where_path = _join(_join(path, "cores"), local_rank)
            else:
                text = cores_for_rank(rule, device, local_rank)
                where = rule_node if rule_node is not None else (node.get("devices") or node)
                where_path = "cores" if rule_node is not None else _join(path, "devices")
            if text is None:
                continue
            for core in parse_cores(text):
                if core in taken:
                    other_rank, other_text = taken[core]
                    report.error(
                        where,
                        where_path,
                        f"cores {text} of device {device} overlap cores {other_text} of device "
                        f"{machine.devices[other_rank]} on {machine.host}; two ranks would share core {core}",
                    )
                    break
            else:
                for core in parse_cores(text):
                    taken[core] = (local_rank, text)


def _check_ports(
    checker: _Checker,
    machines: list[Machine],
    master_host: str | None,
    master_port: int | None,
    master_node: _Node | None,
    base_port: int | None,
    base_port_node: _Node | None,
) -> None:
    report = checker.report
    if base_port is None:
        return
    most = max((len(m.devices) for m in machines), default=0)
    if most and base_port + most - 1 > 65535:
        report.error(
            base_port_node or "",
            "base_port",
            f"base_port {base_port} + {most} ranks runs past port 65535; choose a lower base_port",
        )
        return
    hosts = [m.host.strip("[]").lower() for m in machines]
    if master_host is None or master_port is None:
        return
    if master_host.lower() not in hosts:
        report.warning(
            master_node or "",
            "master_node_addr",
            f"host {master_host} is not one of the machines ({', '.join(m.host for m in machines)}); "
            "it must be the machine that runs rank 0",
        )
    elif machines and master_host.lower() != hosts[0]:
        report.warning(
            master_node or "",
            "master_node_addr",
            f"host {master_host} is not the first machine ({machines[0].host}), which runs rank 0",
        )
    for machine in machines:
        if machine.host.strip("[]").lower() == master_host.lower():
            ports = range(base_port, base_port + len(machine.devices))
            if master_port in ports:
                report.error(
                    master_node or "",
                    "master_node_addr",
                    f"duplicate port {master_port}: it is also the --port of local rank {master_port - base_port} on "
                    f"{machine.host} (base_port {base_port}); the registration server needs a port of its own",
                )


def _missing(checker: _Checker, node: _Node | None, key: str, message: str) -> None:
    if checker.simulate:
        checker.report.warning(node or "", key, message + "; fine under --simulate")
    else:
        checker.report.error(node or "", key, message)


def _check_binary(checker: _Checker, binary: str, node: _Node | None, base_dir: str) -> None:
    expanded = os.path.expanduser(binary)
    if "/" not in expanded:
        if shutil.which(expanded) is None:
            _missing(checker, node, "binary", f"'{binary}' is not on PATH")
        return
    full = expanded if os.path.isabs(expanded) else os.path.join(base_dir, expanded)
    if not os.path.exists(full):
        _missing(checker, node, "binary", f"xllm binary {os.path.normpath(full)} not found")
    elif not os.path.isfile(full) or not os.access(full, os.X_OK):
        _missing(checker, node, "binary", f"{os.path.normpath(full)} is not an executable file")


def _check_dir(checker: _Checker, value: str, node: _Node | None, key: str, base_dir: str, what: str) -> bool:
    expanded = os.path.expanduser(value)
    full = expanded if os.path.isabs(expanded) else os.path.join(base_dir, expanded)
    if not os.path.isdir(full):
        _missing(checker, node, key, f"{what} {os.path.normpath(full)} not found")
        return False
    return True


# --------------------------------------------------------------------------------------------------
# Entry points


def _sort_key(diagnostic: Diagnostic) -> tuple[str, int, int]:
    return (diagnostic.file, diagnostic.line or 0, diagnostic.column or 0)


def _load(text: str | None, path: str, simulate: bool) -> LoadResult:
    """text None: read the file at `path`."""
    path = os.fspath(path)
    report = _Reporter()
    try:
        tree = _load_tree(text, path, report, [os.path.realpath(path)])
        profile = _build(tree, path, _Checker(report, simulate)) if tree is not None else None
    except RecursionError:
        report.error(path, "", "the profile is nested too deeply")
        tree, profile = None, None
    diagnostics = sorted(report.diagnostics, key=_sort_key)
    if any(d.severity == "error" for d in diagnostics):
        profile = None
    return LoadResult(profile, diagnostics, tree)


def load_profile_text(text: str, path: str, simulate: bool = False) -> LoadResult:
    """Load a profile from text as if it were the file `path` (extends is resolved next to `path`)."""
    return _load(text, path, simulate)


def load_profile(path: str, *, simulate: bool = False) -> LoadResult:
    """Read, validate and build a profile. Never raises for bad input: look at `.ok` and `.diagnostics`.

    With simulate=True, a missing binary, model or sourced script is a warning instead of an error.
    """
    return _load(None, path, simulate)


def load_profile_or_raise(path: str, *, simulate: bool = False) -> Profile:
    """The profile, or ProfileError carrying every diagnostic when there is any error."""
    result = load_profile(path, simulate=simulate)
    if result.profile is None:
        raise ProfileError(result.diagnostics)
    return result.profile


def profile_summary(profile: Profile) -> dict[str, Any]:
    """A small JSON-able description (validate --json, status headers)."""
    return {
        "name": profile.name,
        "path": profile.source_path,
        "nnodes": profile.nnodes,
        "master_node_addr": profile.master_node_addr,
        "base_port": profile.base_port,
        "machines": [
            {"host": m.host, "name": m.name, "devices": list(m.devices), "device_ips": list(m.device_ips)}
            for m in profile.machines
        ],
        "toggles": {t.name: t.enabled for t in profile.toggles},
        "xllm_release": profile.xllm_release,
    }


__all__ = [
    "DERIVED_FLAGS",
    "Diagnostic",
    "LoadResult",
    "ProfileError",
    "RANK_PLACEHOLDERS",
    "XLLM_FLAGS",
    "check_host",
    "load_profile",
    "load_profile_or_raise",
    "load_profile_text",
    "parse_duration",
    "profile_summary",
    "split_host_port",
]

