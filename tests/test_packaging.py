"""The installed package as a new user gets it: the wheel carries the example profiles, the themes and the
TUI demo recording; `--version`, `examples` and `completion` work; all checked from a fresh virtual
environment outside the checkout, and the completion scripts run in real bash and zsh."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from xllm_tui.examples import ExampleError, copy_example, list_examples

pytestmark = pytest.mark.timeout(600)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(extra)
    return env


def _run(argv, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env or _clean_env(), capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------------------------- examples


def test_examples_are_the_repository_profiles():
    names = {e.name for e in list_examples()}
    assert names == {p.stem for p in Path(REPO, "profiles").glob("*.yaml")}
    assert all(e.description for e in list_examples())


def test_copy_example_brings_its_base_and_scripts_and_validates(tmp_path):
    written = copy_example("a3-8card", tmp_path / "mine.yaml")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "base/glm45-a3.yaml", "base/python-paths.sh", "mine.yaml"]
    done = _run([sys.executable, "-m", "xllm_tui", "validate", "mine.yaml", "--simulate"], tmp_path,
                _clean_env(PYTHONPATH=REPO))
    assert done.returncode in (0, 1), done.stderr  # 1 = warnings (paths of the real machine)
    assert "0 errors" in done.stdout + done.stderr
    # Same content again: nothing written; a changed base file is not overwritten without force.
    assert copy_example("a3-8card", tmp_path / "mine.yaml") == []
    (tmp_path / "base" / "glm45-a3.yaml").write_text("# mine\n")
    with pytest.raises(ExampleError, match="exists and differs"):
        copy_example("a3-8card", tmp_path / "mine.yaml")
    assert (tmp_path / "base" / "glm45-a3.yaml").read_text() == "# mine\n"
    copy_example("a3-8card", tmp_path, force=True)  # a directory: NAME.yaml inside
    assert (tmp_path / "a3-8card.yaml").exists() and (tmp_path / "base" / "glm45-a3.yaml").read_text() != "# mine\n"


def test_unknown_example_names_the_shipped_ones(tmp_path):
    done = _run([sys.executable, "-m", "xllm_tui", "examples", "a9", str(tmp_path / "x.yaml")], tmp_path,
                _clean_env(PYTHONPATH=REPO))
    assert done.returncode == 2 and "a3-8card" in done.stderr


# ------------------------------------------------------------------------------------------- completion


@pytest.fixture
def completion_dir(tmp_path):
    """A directory with a profile, a non-profile file, and an `xllm-tui` on PATH that runs this checkout."""
    work = tmp_path / "work"
    work.mkdir()
    copy_example("a3-8card", work / "mine.yaml")
    (work / "notes.txt").write_text("x")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "xllm-tui"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m xllm_tui "$@"\n')
    wrapper.chmod(0o755)
    env = _clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}")
    return work, env


def _script(shell: str) -> str:
    done = _run([sys.executable, "-m", "xllm_tui", "completion", shell], REPO, _clean_env(PYTHONPATH=REPO))
    assert done.returncode == 0, done.stderr
    return done.stdout


BASH_HARNESS = """
source "$1"
shift
COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=()
_xllm_tui
printf '%s\\n' "${COMPREPLY[@]}"
"""


def _bash_complete(script: Path, work: Path, env: dict, *words: str) -> list[str]:
    done = _run(["bash", "-c", BASH_HARNESS, "harness", str(script), "xllm-tui", *words], work, env, timeout=60)
    assert done.returncode == 0, done.stderr
    return [w for w in done.stdout.splitlines() if w]


def test_bash_completion(tmp_path, completion_dir):
    work, env = completion_dir
    script = tmp_path / "xllm-tui.bash"
    script.write_text(_script("bash"))
    assert "status" in _bash_complete(script, work, env, "st") and "stop" in _bash_complete(script, work, env, "st")
    first = _bash_complete(script, work, env, "")
    assert {"up", "status", "examples", "completion", "mine.yaml"} <= set(first) and "notes.txt" not in first
    assert "supervise" not in first  # the hidden daemon command
    assert _bash_complete(script, work, env, "--v") == ["--version"]
    assert set(_bash_complete(script, work, env, "up", "--")) >= {"--simulate", "--foreground", "--run-dir"}
    assert set(_bash_complete(script, work, env, "up", "")) == {"mine.yaml", "base"}  # profiles and directories
    assert _bash_complete(script, work, env, "toggle", "mine.yaml", "determinism", "") == ["on", "off"]
    assert _bash_complete(script, work, env, "toggle", "mine.yaml", "") == ["determinism", "profiling"]
    assert _bash_complete(script, work, env, "completion", "") == ["bash", "zsh"]
    assert set(_bash_complete(script, work, env, "examples", "")) == {e.name for e in list_examples()}
    assert _bash_complete(script, work, env, "mine.yaml", "--th") == ["--theme"]  # the TUI's own options
    # Rank numbers: from the profile while no supervisor ever ran ...
    assert _bash_complete(script, work, env, "logs", "mine.yaml", "--rank", "") == [str(i) for i in range(8)]
    # ... and from the supervisor's state file when there is one (here a simulated run's, with 2 ranks).
    run_dir = Path(os.environ["XDG_STATE_HOME"]) / "xllm-tui" / "a3-8card-sim"
    run_dir.mkdir(parents=True)
    (run_dir / "state.json").write_text(json.dumps({"ranks": [{"rank": 0}, {"rank": 1}]}))
    assert _bash_complete(script, work, env, "logs", "mine.yaml", "--simulate", "--rank", "") == ["0", "1"]
    assert _bash_complete(script, work, env, "restart", "mine.yaml", "--simulate", "--ranks", "") == ["0", "1"]
    assert _bash_complete(script, work, env, "restart", "mine.yaml", "--simulate", "--ranks", "0,") == ["0,0", "0,1"]
    elsewhere = tmp_path / "elsewhere-run"
    elsewhere.mkdir()
    (elsewhere / "state.json").write_text(json.dumps({"ranks": [{"rank": 5}]}))
    assert _bash_complete(script, work, env, "logs", "mine.yaml", "--run-dir", str(elsewhere), "--rank", "") == ["5"]


ZSH_HARNESS = """
compadd() { while [[ $1 == -* && $1 != -- ]]; do shift; done; [[ $1 == -- ]] && shift; print -rl -- "$@"; }
_files() { print -r -- "FILES $*"; }
compdef() { :; }
compset() { :; }
source "$1"
shift
words=("$@"); CURRENT=${#words}
_xllm_tui
"""


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (.ci/run installs it)")
def test_zsh_completion(tmp_path, completion_dir):
    work, env = completion_dir
    script = tmp_path / "_xllm-tui"
    script.write_text(_script("zsh"))
    assert script.read_text().startswith("#compdef xllm-tui")
    assert _run(["zsh", "-n", str(script)], work, env).returncode == 0

    def complete(*words: str) -> list[str]:
        done = _run(["zsh", "-f", "-c", ZSH_HARNESS, "harness", str(script), "xllm-tui", *words], work, env, 60)
        assert done.returncode == 0, done.stderr
        return [w for w in done.stdout.splitlines() if w]

    first = complete("")
    assert {"up", "status", "examples"} <= set(first) and "FILES -g *.(yaml|yml)" in first
    assert {"--simulate", "--foreground"} <= set(complete("up", "--"))
    assert complete("toggle", "mine.yaml", "determinism", "") == ["on", "off"]
    assert complete("toggle", "mine.yaml", "") == ["determinism", "profiling"]
    assert complete("logs", "mine.yaml", "--rank", "") == [str(i) for i in range(8)]
    elsewhere = tmp_path / "elsewhere-run"
    elsewhere.mkdir()
    (elsewhere / "state.json").write_text(json.dumps({"ranks": [{"rank": 5}]}))
    assert complete("logs", "mine.yaml", "--run-dir", str(elsewhere), "--rank", "") == ["5"]
    assert complete("status", "") == ["FILES -g *.(yaml|yml)"]
    assert complete("up", "mine.yaml", "--run-dir", "") == ["FILES -/"]


# ---------------------------------------------------------------------------------- wheel in a fresh venv


def _copy_source(dest: Path) -> Path:
    """The checkout as it is now (uncommitted changes included), without build litter or tests."""
    src = dest / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "tests", "screenshots", ".venv"))
    return src


def _install_wheel(venv_dir: Path, wheel: Path, work: Path) -> str:
    """Install as a user would (dependencies from the package index); if the index cannot be reached, the
    wheel alone with the dependencies this interpreter already has. Returns how it was installed."""
    python = str(venv_dir / "bin" / "python")
    done = _run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--find-links",
                 str(wheel.parent), str(wheel)], work, timeout=400)
    if done.returncode == 0:
        return "index"
    done = _run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index", "--no-deps",
                 str(wheel)], work)
    assert done.returncode == 0, done.stderr
    # Only the dependency directories are added (a .pth of plain paths runs no other .pth files there, so
    # the developer's editable install of xllm-tui stays invisible).
    import psutil, textual, watchfiles, yaml  # noqa: E401

    dirs = sorted({str(Path(m.__file__).resolve().parents[1]) for m in (psutil, textual, watchfiles, yaml)})
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], work).stdout.strip()
    Path(purelib, "zz-host-deps.pth").write_text("\n".join(dirs) + "\n")
    return "offline"


SHIPPED = ("xllm_tui/data/profiles/a3-8card.yaml", "xllm_tui/data/profiles/base/glm45-a3.yaml",
           "xllm_tui/data/profiles/base/python-paths.sh", "xllm_tui/data/tui-demo/snapshot.json",
           "xllm_tui/data/tui-demo/logs/node_3.log.txt", "xllm_tui/themes/xllm-dark.toml", "xllm_tui/ui/app.tcss")


def _build_wheel(src: Path, wheels: Path) -> Path:
    done = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check",
                 "-w", str(wheels), "."], src, timeout=400)
    if done.returncode != 0:  # no index for the build backend: build with what is installed
        done = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                     "-w", str(wheels), "."], src, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = wheels.glob("xllm_tui-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in SHIPPED:
        assert needed in names, needed
    return wheel


def test_sdist_carries_the_data_as_files(tmp_path):
    """data/profiles is a symlink in the checkout: the sdist must hold real files, and its wheel them too."""
    import tarfile

    src = _copy_source(tmp_path)
    done = _run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                 "print(build_meta.build_sdist(sys.argv[1]))", str(tmp_path / "sdist")], src)
    assert done.returncode == 0, done.stderr
    (archive,) = (tmp_path / "sdist").glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name}
        for needed in SHIPPED:
            assert members[needed].isfile(), needed
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.11.4
        tar.extractall(tmp_path / "unpacked", **safe)
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    _build_wheel(unpacked, tmp_path / "wheels")


def test_wheel_in_a_fresh_venv(tmp_path):
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    src = _copy_source(build_dir)
    wheel = _build_wheel(src, tmp_path / "wheels")

    venv_dir = tmp_path / "venv"
    try:
        venv.EnvBuilder(with_pip=True).create(venv_dir)
    except Exception as e:  # e.g. ensurepip missing from a distribution's python
        pytest.skip(f"cannot create a virtual environment here: {e}")
    work = tmp_path / "elsewhere"  # outside the checkout: nothing can come from it
    work.mkdir()
    _install_wheel(venv_dir, wheel, work)
    exe = str(venv_dir / "bin" / "xllm-tui")
    python = str(venv_dir / "bin" / "python")

    where = _run([python, "-c", "import xllm_tui; print(xllm_tui.__file__)"], work)
    assert where.stdout.strip().startswith(str(venv_dir)), where
    version = _run([exe, "--version"], work)
    assert version.returncode == 0 and version.stdout.strip() == "xllm-tui 0.1.0"
    listed = _run([exe, "examples"], work)
    assert listed.returncode == 0 and "a3-8card" in listed.stdout and "a3-16card-2node" in listed.stdout
    copied = _run([exe, "examples", "a3-8card", "mine.yaml"], work)
    assert copied.returncode == 0, copied.stderr
    assert (work / "base" / "glm45-a3.yaml").exists()
    checked = _run([exe, "validate", "mine.yaml", "--simulate"], work)
    assert checked.returncode in (0, 1) and "0 errors" in checked.stdout + checked.stderr, checked
    demo = _run([python, "-c", "import json, os, sys; from xllm_tui.ui.demo import demo_snapshot; "
                 "s = demo_snapshot('logs'); print(json.dumps([os.path.getsize(r['log_path']) for r in s['ranks']]))"],
                work)
    assert demo.returncode == 0, demo.stderr
    assert len(json.loads(demo.stdout)) == 8 and all(json.loads(demo.stdout))
    themes = _run([python, "-c", "from xllm_tui.ui.themes import load_themes; "
                   "print(sorted(t.name for t in load_themes().themes))"], work)
    assert themes.returncode == 0 and "xllm-dark" in themes.stdout, themes.stderr
    init = _run([exe, "init", "--simulate", "--devices", "0-1", "--model", "/models/m", "-o", "here.yaml"], work)
    assert init.returncode in (0, 1) and "0 errors" in init.stdout, init.stdout + init.stderr
    bash = _run([exe, "completion", "bash"], work)
    assert bash.returncode == 0 and "complete -F _xllm_tui xllm-tui" in bash.stdout
