"""xllm-tui: launch, supervise and watch the ranks of an xllm deployment on Ascend NPU machines."""

__version__ = "0.1.0"
