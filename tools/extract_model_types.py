"""Write xllm_tui/data/model_types.json: the model types each xllm release registers (REGISTER_*MODEL*(name, ...)
in xllm/models), i.e. the config.json model_type values its ModelRegistry knows. Facts only, with file:line.

    python3 tools/extract_model_types.py GIT_DIR OUT.json REV...
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

_REGISTER = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):\s*REGISTER_[A-Z_]*MODEL[A-Z_]*\(\s*(?P<name>\w+)\s*,")


def main() -> int:
    git_dir, out, *revs = sys.argv[1:]
    result = {}
    for rev in revs:
        grep = subprocess.run(["git", "-C", git_dir, "grep", "-n", "-E", r"^\s*REGISTER_[A-Z_]*MODEL[A-Z_]*\(", rev, "--",
                               "xllm/models"], capture_output=True, text=True).stdout
        types: dict[str, str] = {}
        for line in grep.splitlines():
            m = _REGISTER.match(line.split(":", 1)[1])
            if m and m["name"] not in ("ModelType", "VarName", "name"):
                types.setdefault(m["name"], f"{m['file']}:{m['line']}")
        result[rev] = dict(sorted(types.items()))
    with open(out, "w") as fh:
        json.dump(result, fh, indent=1)
        fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
