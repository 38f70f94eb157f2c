"""The core stays free of Textual: headless commands must not pay for the UI (DESIGN.md)."""

import shutil
import subprocess
import sys

import pytest

from conftest import REPO


def test_import_contracts_hold():
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("import-linter is a test dependency: pip install -e '.[test]'")
    proc = subprocess.run([exe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_headless_cli_does_not_load_textual():
    code = (
        "import sys\n"
        "from xllm_tui.cli import _build_parser\n"
        "_build_parser()\n"
        "loaded = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "print(len(loaded))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0", "building the CLI parser imported Textual"
