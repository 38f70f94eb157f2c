"""`xllm-tui examples [NAME PATH]`: list the example profiles shipped in the package, or copy one (with the
base profiles and scripts it needs) to PATH, then say how to check and try it."""

from __future__ import annotations

import argparse
import os
import shlex
import sys


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="an example's name (see the list); alone: print it")
    parser.add_argument("path", nargs="?", metavar="PATH", help="where to copy it: a file, or an existing directory")
    parser.add_argument("--force", action="store_true", help="overwrite files that exist and differ")


def run(args: argparse.Namespace) -> int:
    from xllm_tui.examples import ExampleError, copy_example, find_example, list_examples

    if args.name is None:
        examples = list_examples()
        width = max((len(e.name) for e in examples), default=0)
        for example in examples:
            print(f"{example.name.ljust(width)}  {example.description}")
        print("\ncopy one:  xllm-tui examples NAME PATH")
        return 0
    try:
        if args.path is None:
            print(find_example(args.name).path.read_text(encoding="utf-8"), end="")
            return 0
        written = copy_example(args.name, args.path, force=args.force)
    except ExampleError as e:
        print(f"xllm-tui examples: {e}", file=sys.stderr)
        return 2
    target = args.path
    if os.path.isdir(target):
        target = os.path.join(target, find_example(args.name).path.name)
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"{target} and the files it needs are already there, unchanged")
    quoted = shlex.quote(target)
    print(f"next: edit binary, model and machines in {target}, then\n"
          f"  xllm-tui validate {quoted}\n  xllm-tui {quoted} --simulate   # try it without NPUs")
    return 0
