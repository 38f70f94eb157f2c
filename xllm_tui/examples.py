"""The example profiles shipped in the package (xllm_tui/data/profiles, the repository's profiles/).

`xllm-tui examples` lists them; `xllm-tui examples NAME PATH` copies one together with every file it needs:
the base profiles of its `extends:` chain and the relative `source:` scripts of each, at the same relative
places, so the copy validates exactly like the original.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

EXAMPLES_DIR = Path(__file__).resolve().parent / "data" / "profiles"


@dataclass(frozen=True)
class Example:
    name: str  # file name without .yaml
    path: Path
    description: str


class ExampleError(Exception):
    pass


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def list_examples(directory: Path = EXAMPLES_DIR) -> list[Example]:
    """Top-level profiles only: base/ holds fragments that are not runnable alone."""
    found = []
    for path in sorted(directory.glob("*.yaml")):
        data = _read_yaml(path)
        found.append(Example(path.stem, path, str(data.get("description") or "").strip()))
    return found


def find_example(name: str, directory: Path = EXAMPLES_DIR) -> Example:
    stem = name[:-5] if name.endswith(".yaml") else name
    for example in list_examples(directory):
        if example.name == stem:
            return example
    names = ", ".join(e.name for e in list_examples(directory)) or "none"
    raise ExampleError(f"no example profile named {name!r}; shipped: {names}")


def needed_files(profile: Path) -> list[Path]:
    """The profile, its extends chain and their relative source scripts (all inside the examples dir)."""
    profile = profile.resolve()  # the shipped directory may be a symlink (data/profiles -> profiles/)
    root = profile.parent
    needed: list[Path] = []
    queue = [profile]
    while queue:
        path = queue.pop(0)
        if path in needed:
            continue
        needed.append(path)
        data = _read_yaml(path)
        extends = data.get("extends")
        if isinstance(extends, str) and not os.path.isabs(os.path.expanduser(extends)):
            queue.append((path.parent / extends).resolve())
        sources = data.get("source") or []
        for script in [sources] if isinstance(sources, str) else sources:
            if isinstance(script, str) and not os.path.isabs(os.path.expanduser(script)):
                candidate = (path.parent / script).resolve()
                if candidate.is_file() and candidate not in needed:
                    needed.append(candidate)
    for path in needed:
        if not path.is_relative_to(root):
            raise ExampleError(f"{path} is outside the examples directory; cannot copy it alongside")
    return needed


def copy_example(name: str, destination: str | os.PathLike, *, force: bool = False,
                 directory: Path = EXAMPLES_DIR) -> list[Path]:
    """Copy example `name` to `destination` (a file path, or an existing directory to hold NAME.yaml) and
    the files it needs next to it. Refuses to overwrite a different file unless force. Returns what was written."""
    example = find_example(name, directory)
    dest = Path(destination)
    if dest.is_dir():
        dest = dest / example.path.name
    root = example.path.parent.resolve()
    plan: list[tuple[Path, Path]] = [(example.path, dest)]
    for path in needed_files(example.path)[1:]:
        plan.append((path, dest.parent / path.relative_to(root)))
    for source, target in plan:
        if target.exists() and not force and not filecmp.cmp(source, target, shallow=False):
            raise ExampleError(f"{target} exists and differs; use --force to overwrite it")
    written = []
    for source, target in plan:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and filecmp.cmp(source, target, shallow=False):
            continue
        shutil.copyfile(source, target)
        shutil.copymode(source, target)
        written.append(target)
    return written
