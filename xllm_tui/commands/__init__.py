"""One module per headless command: each defines add_arguments(parser) and run(args) -> exit code.

cli.py imports a command's module only when that command runs, so `xllm-tui status` never pays for
Textual or for modules it does not use.
"""
