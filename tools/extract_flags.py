"""Read gflags definitions (DEFINE_<type>(name, default, help)) out of a git tree and write them as data.

Used to build xllm_tui/data/flags/*.json from jd-opensource/xllm (per release), google/glog and
apache/brpc. It records facts only: name, type, default value, file and line. Help texts are not kept.

    python3 tools/extract_flags.py GIT_DIR REV OUT.json [--label NAME] [--paths xllm/ ...]
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import subprocess
import sys

_DEFINE = re.compile(r"\b(?:GLOG_)?DEFINE_(bool|int32|int64|uint32|uint64|double|string)\s*\(")
_VALIDATOR = re.compile(r"\b(?:BRPC_VALIDATE_GFLAG|DEFINE_validator|RegisterFlagValidator)\s*\(\s*&?\s*(?:FLAGS_)?(\w+)\s*,\s*([\w:]+)")
_NUMERIC_LIMITS = {
    "int32_t": (-(2**31), 2**31 - 1), "int": (-(2**31), 2**31 - 1), "int64_t": (-(2**63), 2**63 - 1),
    "uint32_t": (0, 2**32 - 1), "uint64_t": (0, 2**64 - 1),
}


def _split_args(text: str, start: int) -> tuple[list[str], int]:
    """Top-level comma-separated arguments of the call whose '(' is at text[start-1]."""
    args, depth, i, current = [], 0, start, []
    quote = None  # the quote of the string or character literal being read
    while i < len(text):
        ch = text[i]
        if quote:
            current.append(ch)
            if ch == "\\":
                current.append(text[i + 1])
                i += 1
            elif ch == quote:
                quote = None
        elif text.startswith("//", i):
            i = text.index("\n", i)
            continue
        elif ch in "\"'":
            quote = ch
            current.append(ch)
        elif ch in "([{<" and not (ch == "<" and text[i + 1] in " ="):
            depth += 1
            current.append(ch)
        elif ch in ")]}>" and not (ch == ">" and text[i - 1] in " -"):
            if depth == 0 and ch == ")":
                args.append("".join(current).strip())
                return args, i
            depth -= 1
            current.append(ch)
        elif ch == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    raise ValueError("unbalanced DEFINE")


def _string_literal(expr: str) -> str | None:
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', expr)
    rest = re.sub(r'"((?:[^"\\]|\\.)*)"', "", expr).strip()
    if not parts or rest:
        return None
    return bytes("".join(parts), "utf-8").decode("unicode_escape")


def _unwrap_env(expr: str) -> str:
    """glog's GLOG_DEFINE_x(name, EnvToBool("GLOG_name", value)) and BoolFromEnv("ENV", value): the value."""
    m = re.fullmatch(r"\s*(?:EnvTo\w+|BoolFromEnv)\s*\(\s*\"[^\"]*\"\s*,\s*(.*)\)\s*", expr, re.S)
    return _unwrap_env(m.group(1)) if m else expr


def evaluate_default(flag_type: str, expr: str):
    """The default value of a DEFINE, or the expression text when it is computed at run time."""
    expr = _unwrap_env(" ".join(expr.split()))
    if expr == "DefaultLogDir()":  # glog: $GOOGLE_LOG_DIR, else $TEST_TMPDIR, else ""
        return ""
    if flag_type == "string":
        literal = _string_literal(expr)
        return literal if literal is not None else {"expr": expr}
    if flag_type == "bool":
        return {"true": True, "false": False}.get(expr, {"expr": expr})
    known = {"GOOGLE_NAMESPACE::GLOG_ERROR": 2, "google::GLOG_ERROR": 2, "DefaultLogDir()": ""}
    if expr in known:  # glog: ERROR is level 2; DefaultLogDir() is "" unless GOOGLE_LOG_DIR/TEST_TMPDIR are set
        return known[expr]
    m = re.fullmatch(r"std::numeric_limits<(\w+)>::(max|min)\(\)", expr)
    if m and m.group(1) in _NUMERIC_LIMITS:
        low, high = _NUMERIC_LIMITS[m.group(1)]
        return high if m.group(2) == "max" else low
    # A C float literal (0.09f) reaches the double flag rounded to single precision.
    if flag_type == "double" and re.fullmatch(r"[\d.eE+\-]+[fF]", expr):
        return struct.unpack("f", struct.pack("f", float(expr[:-1])))[0]
    body = re.sub(r"(?<=\d)[uUlL]+\b", "", expr)
    body = re.sub(r"(?<![\d.eE])0([0-7]+)\b", lambda k: str(int(k.group(1), 8)), body)  # C octal (glog's 0664)
    if re.fullmatch(r"[\d\s.eE+\-*/()x]+", body):
        try:
            value = eval(body, {"__builtins__": {}})  # arithmetic on literals only (checked above)
        except Exception:
            return {"expr": expr}
        if flag_type == "double":
            return float(value)
        return int(value)
    return {"expr": expr}


def extract(git_dir: str, rev: str, paths: list[str]) -> list[dict]:
    files = subprocess.run(["git", "-C", git_dir, "grep", "-l", "-E", r"DEFINE_(bool|int32|int64|uint32|uint64|double|string)\b",
                            rev, "--", *paths], capture_output=True, text=True).stdout.split()
    flags: dict[str, dict] = {}
    for entry in files:
        path = entry.split(":", 1)[1]
        if re.search(r"(^|/)(test|tests|example|examples|tools)/", path) or "test" in path.rsplit("/", 1)[-1]:
            continue
        if path.endswith((".h", ".hpp")) and "commandlineflags" in path:
            continue
        text = subprocess.run(["git", "-C", git_dir, "show", f"{rev}:{path}"], capture_output=True, text=True).stdout
        validators = {m.group(1): m.group(2) for m in _VALIDATOR.finditer(text)}
        constants = dict(re.findall(r"\bconstexpr\s+[\w:]+\s+(\w+)\s*=\s*([^;]+);", text))
        for m in _DEFINE.finditer(text):
            line_start = text.rfind("\n", 0, m.start()) + 1
            if text[line_start:m.start()].lstrip().startswith(("//", "#define", "*")):
                continue
            try:
                args, _end = _split_args(text, m.end())
            except (ValueError, IndexError):
                continue
            if len(args) < 3 or not re.fullmatch(r"\w+", args[0]):
                continue
            name, flag_type = args[0], m.group(1)
            entry_ = {"name": name, "type": flag_type, "default": evaluate_default(flag_type, constants.get(args[1], args[1])),
                      "file": path, "line": text.count("\n", 0, m.start()) + 1}
            if name in validators:
                entry_["validator"] = validators[name]
            flags.setdefault(name, entry_)
    return sorted(flags.values(), key=lambda f: (f["file"], f["line"]))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("git_dir")
    parser.add_argument("rev")
    parser.add_argument("out")
    parser.add_argument("--label", default="")
    parser.add_argument("--repo", default="")
    parser.add_argument("--paths", nargs="*", default=["."])
    ns = parser.parse_args()
    commit = subprocess.run(["git", "-C", ns.git_dir, "rev-parse", ns.rev + "^{commit}"], capture_output=True,
                            text=True, check=True).stdout.strip()
    date = subprocess.run(["git", "-C", ns.git_dir, "log", "-1", "--format=%cs", commit], capture_output=True,
                          text=True, check=True).stdout.strip()
    flags = extract(ns.git_dir, ns.rev, ns.paths)
    doc = {"release": ns.label or ns.rev, "repo": ns.repo, "rev": ns.rev, "commit": commit, "date": date,
           "flags": flags}
    with open(ns.out, "w") as fh:
        # One flag per line: small diffs between releases, easy to grep.
        head = json.dumps({k: v for k, v in doc.items() if k != "flags"})[:-1]
        fh.write(head + ', "flags": [\n')
        fh.write(",\n".join(json.dumps(f) for f in flags))
        fh.write("\n]}\n")
    unresolved = [f["name"] for f in flags if isinstance(f["default"], dict)]
    print(f"{ns.out}: {len(flags)} flags; computed defaults: {unresolved}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
