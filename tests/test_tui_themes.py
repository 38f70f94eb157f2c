"""Themes are data files: the three shipped ones load, user files add or replace themes, and a broken
user file is reported with its path instead of stopping the TUI."""

from __future__ import annotations

from pathlib import Path

import pytest

from xllm_tui.ui import themes
from xllm_tui.ui.app import XllmApp
from xllm_tui.ui.demo import demo_snapshot
from xllm_tui.ui.source import StaticSource

REPO = Path(__file__).resolve().parent.parent


def test_shipped_themes_load_and_define_state_colours():
    loaded = themes.load_themes(Path("/nonexistent"))
    names = {t.name for t in loaded.themes}
    assert {"xllm-dark", "xllm-light", "xllm-high-contrast"} <= names
    assert loaded.errors == []
    by_name = {t.name: t for t in loaded.themes}
    assert by_name["xllm-light"].dark is False
    for theme in by_name.values():
        assert set(themes.state_colour_defaults(theme)) <= set(theme.variables), theme.name


def test_top_level_themes_dir_is_the_packaged_one():
    # One copy of the truth: themes/ (documented location) is the directory the wheel ships.
    assert (REPO / "themes").resolve() == themes.BUILTIN_THEME_DIR


def test_user_theme_files_add_and_report(tmp_path):
    user = tmp_path / "themes"
    user.mkdir()
    (user / "ocean.toml").write_text('name = "ocean"\nprimary = "#0088cc"\ndark = true\n')
    (user / "mine.yaml").write_text("name: mine\nprimary: '#aa5500'\ndark: false\nvariables:\n  xllm-state-failed: '#ff0000'\n")
    (user / "broken.toml").write_text('name = "broken"\nprimary = "not-a-colour"\n')
    (user / "typo.toml").write_text('name = "typo"\nprimary = "#000000"\nbackgruond = "#111111"\n')
    loaded = themes.load_themes(user)
    names = {t.name for t in loaded.themes}
    assert {"ocean", "mine"} <= names and "broken" not in names
    assert any("broken.toml" in e and "invalid colour" in e for e in loaded.errors)
    assert any("typo.toml" in e and "backgruond" in e for e in loaded.errors)


@pytest.mark.parametrize(
    "data, message",
    [({"primary": "#000"}, "missing 'name'"), ({"name": "x"}, "missing 'primary'"),
     ({"name": "x", "primary": "#000", "variables": [1]}, "'variables' must be a table")],
)
def test_theme_file_errors_say_what_to_fix(data, message):
    with pytest.raises(themes.ThemeFileError, match=message):
        themes.theme_from_mapping(data, "my.toml")


async def test_user_theme_is_selectable_and_bad_file_is_notified(tmp_path):
    user = tmp_path / "xdg-config" / "xllm-tui" / "themes"
    user.mkdir(parents=True)
    (user / "ocean.toml").write_text('name = "ocean"\nprimary = "#0088cc"\n')
    (user / "bad.toml").write_text("name = [")
    app = XllmApp(StaticSource(demo_snapshot(tmp_path / "logs")), theme="ocean", watch_profile=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert app.theme == "ocean"
        assert any("bad.toml" in n.message for n in app._notifications)
        # A Textual theme without xllm variables still gets state colours (fallbacks).
        app.theme = "nord"
        await pilot.pause()
        assert app.theme_variables["xllm-state-failed"]
        await pilot.press("colon", *"theme xllm-light", "enter")
        await pilot.pause()
        assert app.theme == "xllm-light"
