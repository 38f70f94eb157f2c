"""Simulators that stand in for xllm and npu-smi on machines without NPUs.

`python -m xllm_tui.sim.xllm` is a fake xllm rank (see docs/simulator.md); `xllm_tui.sim.flags.XLLM_FLAGS`
is the table of xllm's flags that the simulator and the profile validator share.
"""
