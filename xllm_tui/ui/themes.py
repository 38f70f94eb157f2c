"""Themes as data files turned into textual.theme.Theme objects.

Built-in themes ship in the package (xllm_tui/themes/, which the repository's top-level themes/ links to);
users add their own as $XDG_CONFIG_HOME/xllm-tui/themes/*.toml (or .yaml). A theme file holds the fields of
textual.theme.Theme (name, primary, background, ..., dark) and an optional [variables] table; the xllm-state-*
variables colour rank states (missing ones fall back to the theme's success/warning/error colours).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.theme import Theme

BUILTIN_THEME_DIR = Path(__file__).resolve().parent.parent / "themes"
DEFAULT_THEME = "xllm-dark"
THEME_FIELDS = (
    "primary", "secondary", "warning", "error", "success", "accent", "foreground",
    "background", "surface", "panel", "boost",
)  # fmt: skip


class ThemeFileError(ValueError):
    """A theme file that cannot be used; the message names the file and the problem."""


def user_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "xllm-tui"


def user_theme_dir() -> Path:
    return user_config_dir() / "themes"


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ThemeFileError(f"{path}: cannot read: {error.strerror or error}") from error
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, ValueError) as error:
        raise ThemeFileError(f"{path}: not valid {path.suffix[1:].upper()}: {error}") from error
    except Exception as error:  # yaml.YAMLError and friends
        raise ThemeFileError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ThemeFileError(f"{path}: expected a table of theme fields (name, primary, background, ...)")
    return data


def theme_from_mapping(data: dict[str, Any], source: str) -> Theme:
    """Build a Theme from a theme file's content; raise ThemeFileError saying what is wrong and where."""
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ThemeFileError(f"{source}: missing 'name' (e.g. name = \"my-theme\")")
    if not isinstance(data.get("primary"), str):
        raise ThemeFileError(f"{source}: missing 'primary' colour (e.g. primary = \"#4EA1FF\")")
    known = set(THEME_FIELDS) | {"name", "dark", "variables", "luminosity_spread", "text_alpha"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ThemeFileError(f"{source}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    variables = data.get("variables") or {}
    if not isinstance(variables, dict):
        raise ThemeFileError(f"{source}: 'variables' must be a table of name = colour")
    kwargs: dict[str, Any] = {k: str(data[k]) for k in THEME_FIELDS if data.get(k) is not None}
    for number in ("luminosity_spread", "text_alpha"):
        if number in data:
            kwargs[number] = float(data[number])
    theme = Theme(
        name=name.strip(),
        dark=bool(data.get("dark", True)),
        variables={str(k): str(v) for k, v in variables.items()},
        **kwargs,
    )
    try:  # validate the colours now, so a typo is reported with its file instead of failing at render time
        theme.to_color_system().generate()
    except Exception as error:
        raise ThemeFileError(f"{source}: invalid colour: {error}") from error
    return theme


def load_theme_file(path: str | os.PathLike[str]) -> Theme:
    path = Path(path)
    return theme_from_mapping(_read_mapping(path), str(path))


@dataclass
class ThemeSet:
    themes: list[Theme]
    errors: list[str]  # one line per unusable user theme file


def _theme_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".toml", ".yaml", ".yml") and p.is_file())


def load_themes(user_dir: Path | None = None) -> ThemeSet:
    """The built-in themes, then the user's (a user theme with a built-in's name replaces it)."""
    themes: dict[str, Theme] = {}
    errors: list[str] = []
    for path in _theme_files(BUILTIN_THEME_DIR):
        theme = load_theme_file(path)  # shipped files are tested; an error here is a bug worth a traceback
        themes[theme.name] = theme
    for path in _theme_files(user_dir if user_dir is not None else user_theme_dir()):
        try:
            theme = load_theme_file(path)
        except ThemeFileError as error:
            errors.append(str(error))
            continue
        themes[theme.name] = theme
    return ThemeSet(list(themes.values()), errors)


def state_colour_defaults(theme: Theme) -> dict[str, str]:
    """Fallbacks for the xllm-* variables, for themes that do not define them (Textual's own themes)."""
    success = theme.success or "#3FB950"
    warning = theme.warning or "#E3B341"
    error = theme.error or "#F85149"
    primary = theme.primary
    muted = theme.foreground or ("#888888" if theme.dark else "#555555")
    return {
        "xllm-state-ready": success,
        "xllm-state-loading": primary,
        "xllm-state-starting": primary,
        "xllm-state-degraded": warning,
        "xllm-state-failed": error,
        "xllm-state-stopped": muted,
        "xllm-state-stopping": theme.secondary or primary,
        "xllm-first-failure": error,
        "xllm-log-warning": warning,
        "xllm-log-error": error,
    }
