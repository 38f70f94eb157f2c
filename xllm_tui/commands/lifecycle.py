"""Placeholder until this command is built; replaced by its owner."""


def add_arguments(parser, name):
    parser.add_argument("rest", nargs="*")


def run(args):
    raise SystemExit("xllm-tui: this command is not built yet")
