"""Devices: parse npu-smi / nvidia-smi output into a model (model.py), run the tools (probe.py), and check
CPU binding against the topology (affinity.py). No Textual here."""

from xllm_tui.devices.model import Device, DeviceProcess, DeviceReport, Topology

__all__ = ["Device", "DeviceProcess", "DeviceReport", "Topology"]
