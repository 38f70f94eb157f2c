"""The binary's own truth: run `xllm --helpxml`, read every flag's type and default, and check argv against it.

gflags binaries print an XML list of their flags on --helpxml and then exit 1 (gflags_reporting.cc,
HandleCommandLineHelpFlags). Reading it is the one check that catches a renamed flag before sixteen
ranks spend ten minutes loading weights. The result is cached by the binary's path, size and mtime in
the user's cache directory, so a validate (and every `up`) costs one run per build of the binary. A binary that
exits 0 without a flag list (not a gflags program) is cached too: it says the same until it changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Callable, Iterable, Mapping

from xllm_tui.xllm_flags import RELEASES, explain_unknown, parse_value, xllm_facts

HELPXML_TIMEOUT_S = 30.0
_CACHE_VERSION = 1


class HelpxmlError(Exception):
    """The binary could not be asked for its flags (not runnable, timed out, printed no XML).

    lasting: the binary's own answer (it exited 0 without a flag list), the same until the binary changes; a
    failure (a missing library, a timeout) may depend on the environment and is asked again next time."""

    def __init__(self, message: str, *, lasting: bool = False):
        super().__init__(message)
        self.lasting = lasting


@dataclass(frozen=True)
class BinaryFlag:
    name: str
    type: str
    default: str
    file: str = ""
    meaning: str = ""


@dataclass
class BinaryFlags:
    """What one binary says about its flags."""

    binary: str
    flags: dict[str, BinaryFlag] = field(default_factory=dict)
    from_cache: bool = False
    _guess: tuple[str | None, float] | None = field(default=None, repr=False, compare=False)

    def release_guess(self) -> tuple[str | None, float]:
        """The known xllm release whose flag set is closest to the binary's (Jaccard), and that score."""
        if self._guess is None:
            self._guess = self._closest_release()
        return self._guess

    def _closest_release(self) -> tuple[str | None, float]:
        names = set(self.flags)
        best, score = None, 0.0
        for release in RELEASES:
            known = set(xllm_facts(release))
            common = len(known & names)
            value = common / len(known | (names & _all_xllm_names()))
            if value > score:
                best, score = release, value
        return best, score


@lru_cache(maxsize=1)
def _all_xllm_names() -> frozenset[str]:
    return frozenset(name for release in RELEASES for name in xllm_facts(release))


def parse_helpxml(text: str) -> dict[str, BinaryFlag]:
    """name -> BinaryFlag from gflags' --helpxml output (anything before <?xml is ignored)."""
    import xml.etree.ElementTree as ET  # only when the binary is run: `up` and validate mostly hit the cache

    start = text.find("<AllFlags>")
    end = text.rfind("</AllFlags>")
    if start < 0 or end < 0:
        raise HelpxmlError("printed no <AllFlags> document")
    try:
        root = ET.fromstring(text[start:end + len("</AllFlags>")])
    except ET.ParseError as error:
        raise HelpxmlError(f"printed XML that does not parse: {error}") from None
    flags = {}
    for node in root.iter("flag"):
        name = node.findtext("name") or ""
        if name:
            flags[name] = BinaryFlag(name, node.findtext("type") or "", node.findtext("default") or "",
                                     node.findtext("file") or "", node.findtext("meaning") or "")
    if not flags:
        raise HelpxmlError("printed no flags")
    return flags


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "xllm-tui", "helpxml")


def _cache_path(cache_dir: str, binary: str) -> str:
    return os.path.join(cache_dir, hashlib.sha256(binary.encode()).hexdigest()[:24] + ".json")


def _identity(binary: str) -> dict:
    st = os.stat(binary)
    return {"version": _CACHE_VERSION, "binary": binary, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _run_helpxml(argv: list[str], env: Mapping[str, str] | None, timeout: float) -> str:
    try:
        proc = subprocess.Popen(argv + ["--helpxml"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=dict(env) if env is not None else None,
                                start_new_session=True, close_fds=True)
    except OSError as error:
        raise HelpxmlError(f"cannot be run: {error.strerror or error}") from None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: nothing it started outlives the check
        except ProcessLookupError:
            pass
        proc.communicate()
        raise HelpxmlError(f"did not finish --helpxml within {timeout:g} s") from None
    text = out.decode("utf-8", "replace")
    if "<AllFlags>" not in text:
        last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise HelpxmlError(f"printed no flag list on --helpxml ({last[0][:200]})", lasting=proc.returncode == 0)
    return text


def _read_cache(path: str, identity: dict) -> dict | None:
    """The cache entry at `path` if it is for this very binary (path, size, mtime), else None."""
    try:
        with open(path, encoding="utf-8") as fh:
            cached = json.load(fh)
    except (OSError, ValueError):
        return None
    return cached if isinstance(cached, dict) and cached.get("identity") == identity else None


def _write_cache(cache_dir: str, path: str, entry: dict) -> None:
    try:
        os.makedirs(cache_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".helpxml-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(entry, fh)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs the next run


def _cached_flags(entry: dict) -> dict[str, BinaryFlag] | None:
    try:
        return {f["name"]: BinaryFlag(**f) for f in entry["flags"]}
    except (KeyError, TypeError):
        return None


def read_binary_flags(binary: str, *, env: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
                      timeout: float = HELPXML_TIMEOUT_S, cache_dir: str | None = None,
                      argv: list[str] | None = None) -> BinaryFlags:
    """The flags of `binary`, from the cache when its path, size and mtime are unchanged, else by running it.

    env may be a function, called only when the binary has to run (composing it may source scripts).
    argv replaces [binary] as the command (the simulator is `python -m ...`); the cache key stays `binary`.
    """
    binary = os.path.abspath(binary)
    try:
        identity = _identity(binary)
    except OSError as error:
        raise HelpxmlError(f"cannot be read: {error.strerror or error}") from None
    cache_dir = cache_dir or default_cache_dir()
    path = _cache_path(cache_dir, binary)
    cached = _read_cache(path, identity)
    if cached is not None:
        if isinstance(cached.get("no_flag_list"), str):
            raise HelpxmlError(cached["no_flag_list"], lasting=True)
        flags = _cached_flags(cached)
        if flags is not None:
            return BinaryFlags(binary, flags, from_cache=True)
    try:
        flags = parse_helpxml(_run_helpxml(argv or [binary], env() if callable(env) else env, timeout))
    except HelpxmlError as error:
        if error.lasting:
            _write_cache(cache_dir, path, {"identity": identity, "no_flag_list": str(error)})
        raise
    _write_cache(cache_dir, path, {"identity": identity, "flags": [asdict(f) for f in flags.values()]})
    return BinaryFlags(binary, flags)


@dataclass(frozen=True)
class FlagProblem:
    name: str
    severity: str  # "error" | "warning"
    message: str


def check_flag_pairs(pairs: Iterable[tuple[str, str]], binary: BinaryFlags, release: str) -> list[FlagProblem]:
    """Each --name=value against the binary: the name exists, the value parses as the flag's type."""
    problems: list[FlagProblem] = []
    seen: set[str] = set()
    for name, value in pairs:
        if name in seen:
            continue
        seen.add(name)
        flag = binary.flags.get(name)
        if flag is None:
            guess, score = binary.release_guess()  # the binary's own release explains best
            why = explain_unknown(name, guess).partition(": ")[2] if guess and score >= 0.9 else ""
            why = why or explain_unknown(name, release).partition(": ")[2]
            problems.append(FlagProblem(name, "error", (f"{why}; " if why else "") +
                                        f"the binary {binary.binary} has no flag '{name}' (its --helpxml); "
                                        f"it exits at start-up with: ERROR: unknown command line flag '{name}'"))
            continue
        if "{" in value:
            continue  # a placeholder, checked per rank
        if flag.type and parse_value(flag.type, value) is None:
            problems.append(FlagProblem(name, "error", f"'{value}' is not a valid {flag.type} for the binary "
                                        f"{binary.binary}: ERROR: illegal value '{value}' specified for "
                                        f"{flag.type} flag '{name}'"))
    return problems


def check_profile_binary(result, *, simulate: bool = False, env: Mapping[str, str] | None = None,
                         cache_dir: str | None = None, timeout: float = HELPXML_TIMEOUT_S) -> tuple[list, list[str]]:
    """(diagnostics, notes) from checking a loaded profile's flags against its binary's --helpxml.

    Every flag rank 0 is launched with (the derived ones too) is checked; a problem is located at the
    profile key that set it (flags.<name>, else binary). Under --simulate the binary is not run: the
    simulator imitates the profile's xllm_release, whose table validate has used already.
    """
    from xllm_tui.launch import LaunchError, compose_env, flag_pairs, profile_dir, rank_argv, ranks_of

    profile = result.profile
    if profile is None:
        return [], []
    if simulate:
        return [], [f"binary flags not read under --simulate: the simulator imitates xllm {profile.xllm_release}"]
    binary = os.path.expanduser(profile.binary)
    if "/" not in binary:
        import shutil

        found = shutil.which(binary)
        if found is None:
            return [], []
        binary = found
    elif not os.path.isabs(binary):
        binary = os.path.join(profile_dir(profile), binary)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        return [], []  # the profile check reports a missing binary already
    def launch_env() -> Mapping[str, str]:
        # The ranks' environment: xllm needs the CANN/ATB libraries that set_env.sh puts on the path.
        from xllm_tui.envcapture import capture_sourced_env

        captured = capture_sourced_env(profile.source_scripts)[0] if profile.source_scripts else {}
        return compose_env(profile, captured_env=captured)

    try:
        flags = read_binary_flags(binary, env=env if env is not None else launch_env, timeout=timeout,
                                  cache_dir=cache_dir)
    except HelpxmlError as error:
        # A note, not a warning: a binary that cannot start here (no CANN libraries on this host) is no fault.
        return [], [f"flags not checked against the binary: {binary} {error}"]
    notes = [f"flags checked against {binary} --helpxml ({len(flags.flags)} flags{', cached' if flags.from_cache else ''})"]
    diagnostics = []
    guess, score = flags.release_guess()
    if guess and score >= 0.9 and guess != profile.xllm_release:
        named = result.locate("xllm_release")[1] is not None
        diagnostics.append(result.diagnostic(
            "warning", "xllm_release" if named else "binary",
            f"the binary's flags are those of xllm {guess}, the profile targets {profile.xllm_release}"
            f"{'' if named else ' (the default)'}: set xllm_release: {guess}"))
    try:
        spec = ranks_of(profile)[0]
        pairs = flag_pairs(rank_argv(profile, spec)[1:])
    except (LaunchError, IndexError):
        return diagnostics, notes
    written = {name for name, _ in profile.flags}
    for problem in check_flag_pairs(pairs, flags, profile.xllm_release):
        key = f"flags.{problem.name}" if problem.name in written else ("model" if problem.name == "model" else "binary")
        diagnostics.append(result.diagnostic(problem.severity, key, problem.message))
    return diagnostics, notes


def cached_binary_flags(binary: str, cache_dir: str | None = None) -> BinaryFlags | None:
    """The cached --helpxml of `binary` if it is still current; never runs anything (cheap enough for a UI)."""
    binary = os.path.abspath(binary)
    try:
        identity = _identity(binary)
    except OSError:
        return None
    cached = _read_cache(_cache_path(cache_dir or default_cache_dir(), binary), identity)
    flags = _cached_flags(cached) if cached is not None else None
    return BinaryFlags(binary, flags, from_cache=True) if flags is not None else None


def flag_defaults_for(argv: list[str], env: Mapping[str, str] | None = None,
                      cwd: str | None = None) -> tuple[dict[str, str], str]:
    """(name -> default, where the defaults come from) for a rank's argv: the binary's cached --helpxml,
    else the table of the release the simulator imitates (XLLM_SIM_XLLM_VERSION) or the guide's commit."""
    from xllm_tui.xllm_flags import DEFAULT_RELEASE, all_flags, resolve_release

    program = list(argv)
    if program[:1] == ["numactl"]:
        program = program[3:] if len(program) > 2 and program[1] == "-C" else program[1:]
    binary = os.path.join(cwd, program[0]) if program and cwd and not os.path.isabs(program[0]) else (program or [""])[0]
    if binary and os.path.isfile(binary) and not binary.endswith(("python", "python3")):
        found = cached_binary_flags(binary)
        if found is not None:
            return {n: f.default for n, f in found.flags.items()}, f"{found.binary} --helpxml"
    release = resolve_release((env or {}).get("XLLM_SIM_XLLM_VERSION")) or DEFAULT_RELEASE
    return {n: spec[1] for n, spec in all_flags(release).items()}, f"the table of xllm {release}"
