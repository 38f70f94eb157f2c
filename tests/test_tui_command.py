"""`xllm-tui PROFILE`: bad input is refused before anything starts (exit 2, a clear message)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xllm_tui", *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, cwd=REPO)


def test_missing_profile_file():
    done = run_cli("no/such/profile.yaml", "--simulate")
    assert done.returncode == 2
    assert "no profile file 'no/such/profile.yaml'" in done.stderr and "Traceback" not in done.stderr


def test_profile_with_errors_prints_diagnostics_with_lines(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nmachines: 12\n")
    done = run_cli(str(bad), "--simulate")
    assert done.returncode == 2
    assert f"{bad}:" in done.stderr and "error" in done.stderr and "Traceback" not in done.stderr


def test_unknown_theme_lists_the_available_ones():
    done = run_cli(str(REPO / "profiles" / "a3-8card.yaml"), "--simulate", "--theme", "nope")
    assert done.returncode == 2
    assert "unknown theme 'nope'" in done.stderr and "xllm-high-contrast" in done.stderr


def test_port_offset_needs_simulate():
    done = run_cli(str(REPO / "profiles" / "a3-8card.yaml"), "--port-offset", "5")
    assert done.returncode == 2 and "--port-offset only applies with --simulate" in done.stderr


def test_a_crash_of_the_tui_ends_with_a_non_zero_status_and_a_message(monkeypatch, capsys):
    """Textual's App.run() returns normally after an unhandled exception: the command must not say 0."""
    import argparse

    from textual.app import App

    from xllm_tui import client
    from xllm_tui.commands import tui
    from xllm_tui.ui import app as app_module
    from xllm_tui.ui import source as source_module

    class CrashingApp(App):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__()

        def on_mount(self) -> None:
            raise IndexError("array index out of range")

        def run(self, **kwargs):
            return super().run(headless=True)

    monkeypatch.setattr(client, "supervisor_answers", lambda run_dir: {"ok": True})
    monkeypatch.setattr(client, "ensure_supervisor", lambda *args, **kwargs: None)
    monkeypatch.setattr(app_module, "XllmApp", CrashingApp)
    monkeypatch.setattr(source_module, "SupervisorSource", lambda *args, **kwargs: None)
    args = argparse.Namespace(profile=str(REPO / "profiles" / "a3-8card.yaml"), simulate=True, theme=None,
                              run_dir="/nonexistent-run-dir", bell=False, port_offset=0)
    assert tui.run(args) == 1
    err = capsys.readouterr().err
    assert "IndexError" in err and "the TUI stopped on an error (exit status 1)" in err
