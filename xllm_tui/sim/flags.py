"""xllm's command-line flags as data, and a parser that behaves like gflags.

The table is the single place that knows which flags an xllm binary accepts, their gflags type and
default. The simulator parses its argv with it; the profile validator and tests read it.

Sources (facts, not code): the per-release tables of xllm_tui/xllm_flags.py (xllm, glog and brpc
DEFINEs); gflags' `src/gflags.cc` and `src/gflags_reporting.cc` for parsing rules, error texts and
the --helpxml layout; brpc's `src/brpc/reloadable_flags.cpp` for its validators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.sax.saxutils import escape as _xml_escape

from xllm_tui.xllm_flags import (  # noqa: F401 (re-exported for the simulator's users)
    BRPC_FLAGS,
    DEFAULT_RELEASE,
    GFLAGS_FLAGS,
    GLOG_FLAGS,
    XLLM_FLAGS,
    FlagSpec,
    all_flags,
    defined_in,
    format_value,
    parse_value,
    resolve_release,
    validator_of,
)

# brpc's BRPC_VALIDATE_GFLAG validators (reloadable_flags.cpp): value -> accepted.
_VALIDATORS = {
    "brpc::PassValidate": lambda v: True,
    "brpc::PositiveInteger": lambda v: v > 0,
    "brpc::NonNegativeInteger": lambda v: v >= 0,
    "brpc::RegisterFlagValidatorOrDie": lambda v: True,
}

@dataclass
class ParsedFlags:
    """Result of parsing an argv the way gflags::ParseCommandLineFlags does."""

    values: dict[str, bool | int | float | str]  # every known flag, defaults filled in
    explicit: set[str] = field(default_factory=set)  # flags given on the command line
    errors: list[str] = field(default_factory=list)  # gflags' messages, without trailing newline
    positional: list[str] = field(default_factory=list)
    table: dict[str, FlagSpec] = field(default_factory=dict)

    def __getitem__(self, name: str):
        return self.values[name]


def parse_gflags(argv: list[str], version: str = DEFAULT_RELEASE) -> ParsedFlags:
    """Parse argv (without the program name) with gflags' rules.

    `--name=value`, `--name value` (non-bool), `-name`, `--bool`, `--nobool`, `--bool=false`;
    dashes in names match underscores; `--` ends flags; anything not starting with `-` is positional.
    Errors carry gflags' exact wording; they are sorted by flag name as gflags reports them.
    """
    table = all_flags(version)
    values: dict[str, bool | int | float | str] = {}
    for name, (flag_type, default, _meaning) in table.items():
        parsed = parse_value(flag_type, default)
        values[name] = parsed if parsed is not None else default
    result = ParsedFlags(values=values, table=table)
    errors: dict[str, str] = {}

    def find(name: str) -> str | None:
        if name in table:
            return name
        if "-" in name and name.replace("-", "_") in table:
            return name.replace("-", "_")
        return None

    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            result.positional.append(arg)
            continue
        body = arg[2:] if arg.startswith("--") else arg[1:]
        if body == "":
            result.positional.extend(argv[i:])
            break
        key, sep, value = body.partition("=")
        has_value = bool(sep)
        name = find(key)
        if name is None:
            base = find(key[2:]) if key.startswith("no") else None
            if base is None:
                errors[key] = f"ERROR: unknown command line flag '{key}'"
                continue
            if table[base][0] != "bool":
                errors[key] = f"ERROR: boolean value ({key}) specified for {table[base][0]} command line flag"
                continue
            name, value, has_value = base, "0", True
            key = base
        flag_type = table[name][0]
        if not has_value:
            if flag_type == "bool":
                value = "1"
            elif i >= len(argv):
                errors[key] = f"ERROR: flag '{arg}' is missing its argument; flag description: {table[name][2]}"
                break
            else:
                value = argv[i]
                i += 1
        parsed = parse_value(flag_type, value)
        if parsed is None:
            errors[name] = f"ERROR: illegal value '{value}' specified for {flag_type} flag '{name}'"
            continue
        check = _VALIDATORS.get(validator_of(name, version))
        if check is not None and not isinstance(parsed, bool) and isinstance(parsed, (int, float)) and not check(parsed):
            errors[name] = f"ERROR: failed validation of new value '{value}' for flag '{name}'"
            continue
        values[name] = parsed
        result.explicit.add(name)
    result.errors = [errors[k] for k in sorted(errors)]
    return result


def helpxml(program: str = "xllm", version: str = DEFAULT_RELEASE, current: dict | None = None) -> str:
    """gflags' --helpxml document for the flags of `version`, sorted by defining file then name."""
    table = all_flags(version)
    lines = ['<?xml version="1.0"?>', "<AllFlags>", f"<program>{_xml_escape(program)}</program>",
             "<usage>Warning: SetUsageMessage() never called</usage>"]
    files = {name: defined_in(name, version) for name in table}
    for name in sorted(table, key=lambda n: (files[n], n)):
        flag_type, default, meaning = table[name]
        now = default if current is None or name not in current else format_value(flag_type, current[name])
        lines.append(
            f"<flag><file>{files[name]}</file><name>{name}</name><meaning>{_xml_escape(meaning)}</meaning>"
            f"<default>{_xml_escape(default)}</default><current>{_xml_escape(now)}</current>"
            f"<type>{flag_type}</type></flag>"
        )
    lines.append("</AllFlags>")
    return "\n".join(lines) + "\n"
