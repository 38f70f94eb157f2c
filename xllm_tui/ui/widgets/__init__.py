"""Textual UI of xllm-tui."""
