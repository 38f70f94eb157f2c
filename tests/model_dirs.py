"""Small synthetic model directories (configs, an index, tiny shard files): never real weights."""

from __future__ import annotations

import json
import os
import struct

# A minimal valid safetensors file: an 8-byte little-endian header length, then a JSON header, no tensors.
TINY_SHARD = struct.pack("<Q", 2) + b"{}"


def make_model_dir(path, *, model_type: str = "glm4_moe", shards: int = 2, quantize: str | None = None,
                   quant_tensors: bool | None = None, chat_template: bool = True, config: dict | None = None,
                   write_shards: list[int] | None = None) -> str:
    """A model directory as the guide's GLM-4.5-w8a8 looks to the pre-flight, with `shards` tiny shard files.
    quant_tensors: whether the index names quantisation scale tensors (default: when quantize is set).
    write_shards: which shard numbers (1-based) exist on disk (default: all)."""
    os.makedirs(path, exist_ok=True)
    body = {"model_type": model_type, "num_hidden_layers": 2}
    if quantize:
        body["quantize"] = quantize
    body.update(config or {})
    with open(os.path.join(path, "config.json"), "w") as fh:
        json.dump(body, fh)
    names = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
    weight_map = {}
    for index, name in enumerate(names):
        weight_map[f"model.layers.{index}.mlp.down_proj.weight"] = name
        if quant_tensors if quant_tensors is not None else bool(quantize):
            weight_map[f"model.layers.{index}.mlp.down_proj.deq_scale"] = name
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, fh)
    for number, name in enumerate(names, start=1):
        if write_shards is None or number in write_shards:
            with open(os.path.join(path, name), "wb") as fh:
                fh.write(TINY_SHARD)
    tokenizer_config = {"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"} if chat_template else {}
    with open(os.path.join(path, "tokenizer_config.json"), "w") as fh:
        json.dump(tokenizer_config, fh)
    with open(os.path.join(path, "tokenizer.json"), "w") as fh:
        fh.write("{}")
    return str(path)
