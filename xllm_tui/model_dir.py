"""Pre-flight of a model directory: what xllm will read from it, checked before ranks spend minutes loading.

Facts from xllm 31b7cafd (and the same code in later releases):
- xllm.cpp get_model_type(): config.json must exist and hold model_type, else LOG(FATAL) (model_index.json
  with _diffusers_version marks a DiT pipeline instead).
- HFModelLoader: the model type needs an args loader in ModelRegistry ("Failed to find model args loader");
  every *.safetensors file in the directory is loaded (the index file is not consulted), and there must be
  at least one ("Failed to find model weights files in").
- load_quant_args(): "quantization_config" (quant_method, bits, ...) and the top-level "quantize" entry
  (quantize_type, e.g. w8a8 as the guide's GLM-4.5-w8a8 carries) come from config.json.
- The chat template comes from tokenizer_config.json's chat_template (or a chat_template.jinja/.json file).
- MTP draft models are registered as <type>_mtp (deepseek_mtp, deepseek_v3_mtp, glm4_moe_mtp).
Nothing here imports Textual; reading is bounded to small JSON files and a directory listing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

_DATA = Path(__file__).parent / "data" / "model_types.json"
_QUANT_TENSOR_MARKS = ("deq_scale", "weight_scale", "input_scale", "quant_bias", "weight_offset")
_LARGEST_JSON = 64 * 1024 * 1024  # an index of a 1000-shard model is a few MB


@dataclass(frozen=True)
class ModelProblem:
    severity: str  # "error" (the launch will fail) | "warning"
    message: str


@dataclass
class ModelFacts:
    """What the pre-flight read (for a summary)."""

    model_type: str | None = None
    quantize: str | None = None
    shards: int = 0


@lru_cache(maxsize=None)
def model_types(release: str) -> dict[str, str]:
    """model_type -> where xllm `release` registers it (file:line). {} for an unknown release."""
    table = json.loads(_DATA.read_text(encoding="utf-8"))
    if release == "any":
        merged: dict[str, str] = {}
        for types in table.values():
            merged.update(types)
        return merged
    return table.get(release, {})


def _read_json(path: str) -> tuple[object | None, str | None]:
    try:
        if os.path.getsize(path) > _LARGEST_JSON:
            return None, f"{os.path.basename(path)} is larger than {_LARGEST_JSON // 2**20} MB: not read"
        with open(path, encoding="utf-8") as fh:
            return json.load(fh), None
    except OSError as error:
        return None, f"{os.path.basename(path)} cannot be read: {error.strerror or error}"
    except ValueError as error:
        return None, f"{os.path.basename(path)} is not valid JSON: {error}"


def check_model_dir(path: str, *, role: str = "model", release: str = "31b7cafd",
                    flags: dict | None = None) -> tuple[list[ModelProblem], ModelFacts]:
    """Problems of the model directory at `path` (role "model" or "draft_model") for xllm `release`."""
    problems: list[ModelProblem] = []
    facts = ModelFacts()
    flags = flags or {}

    def error(text: str) -> None:
        problems.append(ModelProblem("error", text))

    def warning(text: str) -> None:
        problems.append(ModelProblem("warning", text))

    try:
        names = set(os.listdir(path))
    except OSError as err:
        error(f"{path} cannot be listed: {err.strerror or err}")
        return problems, facts

    if "model_index.json" in names and "config.json" not in names:
        index, problem = _read_json(os.path.join(path, "model_index.json"))
        if problem:
            error(problem)
        elif not isinstance(index, dict) or "_diffusers_version" not in index:
            error("model_index.json has no _diffusers_version: xllm stops with \"Please check model_index.json file "
                  "in model path\"")
        return problems, facts  # a DiT pipeline: its parts live in subdirectories
    if "config.json" not in names:
        error("no config.json: xllm stops at start-up with \"Please check config.json or model_index.json file, "
              "one of them should exist in the model path\"")
        return problems, facts
    config, problem = _read_json(os.path.join(path, "config.json"))
    if problem or not isinstance(config, dict):
        error(problem or "config.json is not a JSON object")
        return problems, facts

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        error("config.json has no model_type: xllm stops with \"Please check config.json file in model path\"")
    else:
        facts.model_type = model_type
        known = model_types(release)
        if known and model_type not in known:
            others = [r for r in ("v0.7.2", "31b7cafd", "v0.8.0", "v0.9.1", "v0.10.0") if model_type in model_types(r)]
            where = f"; {', '.join(others)} {'has' if len(others) == 1 else 'have'} it" if others else ""
            error(f"model_type '{model_type}' is not a model xllm {release} registers (\"Failed to find model args "
                  f"loader for model type {model_type}\"){where}")
        if role == "draft_model" and not model_type.endswith("_mtp"):
            warning(f"the draft model's model_type is '{model_type}', not an MTP export (<type>_mtp, e.g. "
                    "glm4_moe_mtp): xllm's MTP speculative decoding expects the exported MTP layer")
        if role == "model" and model_type.endswith("_mtp"):
            warning(f"model_type '{model_type}' is an MTP draft export: give it as draft_model, not model")

    # ---- weights: xllm loads every *.safetensors in the directory
    shards = sorted(n for n in names if n.endswith(".safetensors"))
    facts.shards = len(shards)
    if not shards:
        error("no *.safetensors files: xllm stops with \"Failed to find model weights files in\" the directory")
    empty = [n for n in shards if _size(os.path.join(path, n)) < 8]
    if empty:
        error(f"{len(empty)} weight file(s) too small to hold a safetensors header (e.g. {empty[0]}): "
              "a copy that did not finish?")
    weight_names: set[str] = set()
    index_name = "model.safetensors.index.json"
    if index_name in names:
        index, problem = _read_json(os.path.join(path, index_name))
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if problem or not isinstance(weight_map, dict):
            warning(problem or f"{index_name} has no weight_map")
        else:
            weight_names = set(weight_map)
            wanted = {v for v in weight_map.values() if isinstance(v, str)}
            missing = sorted(wanted - set(shards))
            extra = sorted(set(shards) - wanted)
            if missing:
                error(f"{len(missing)} of the {len(wanted)} shard files named by {index_name} are missing "
                      f"(e.g. {missing[0]}): their tensors are not found when the model is built")
            if extra:
                warning(f"{len(extra)} *.safetensors file(s) not in {index_name} (e.g. {extra[0]}): xllm loads every "
                        "*.safetensors in the directory, these too")
    elif len(shards) > 1:
        warning(f"{len(shards)} shard files but no {index_name}: which shards belong together cannot be checked")

    # ---- quantisation (config.json "quantize" / "quantization_config")
    quantize = config.get("quantize")
    quant_config = config.get("quantization_config")
    method = quant_config.get("quant_method") if isinstance(quant_config, dict) else None
    facts.quantize = quantize if isinstance(quantize, str) else method if isinstance(method, str) else None
    if weight_names:
        scaled = any(name.endswith(_QUANT_TENSOR_MARKS) for name in weight_names)
        if facts.quantize and not scaled:
            warning(f"config.json says {facts.quantize} but the weights hold no quantisation scales "
                    f"({', '.join(_QUANT_TENSOR_MARKS[:2])}, ...): a float model with a quantised config?")
        if scaled and not facts.quantize:
            warning("the weights are quantised (they hold deq_scale/weight_scale tensors) but config.json has no "
                    "\"quantize\" entry: xllm would build float layers for them (the guide's W8A8 models carry "
                    "\"quantize\": \"w8a8\")")
    kv_dtype = str(flags.get("kv_cache_dtype", "") or "")
    if kv_dtype.lower() in ("int8", "fp8") and not facts.quantize:
        warning(f"kv_cache_dtype={kv_dtype} with an unquantised model: the kv cache scales come from the "
                "quantised export")

    # ---- chat template (the model only; a draft never templates)
    if role == "model":
        tokenizer_config, problem = (None, None)
        if "tokenizer_config.json" in names:
            tokenizer_config, problem = _read_json(os.path.join(path, "tokenizer_config.json"))
        has_template = (isinstance(tokenizer_config, dict) and bool(tokenizer_config.get("chat_template"))) or \
            "chat_template.jinja" in names or "chat_template.json" in names
        if problem:
            warning(problem)
        elif not has_template:
            warning("no chat template (tokenizer_config.json chat_template, chat_template.jinja): "
                    "/v1/chat/completions cannot format messages")
        if not ({"tokenizer.json", "tokenizer.model", "vocab.json"} & names):
            warning("no tokenizer files (tokenizer.json, tokenizer.model or vocab.json)")
    return problems, facts


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def check_profile_models(result, *, simulate: bool = False) -> list:
    """Located diagnostics (profile.Diagnostic) for a loaded profile's model and draft model directories.

    validate and up run it on the machine that launches (the directories are read here). Under --simulate
    nothing is loaded from them, so an error is only a warning there.
    """
    from xllm_tui.launch import working_dir_of

    profile = result.profile
    if profile is None:
        return []
    diagnostics = []
    flags = dict(profile.flags)
    for key, value in (("model", profile.model), ("draft_model", profile.draft_model)):
        if not value:
            continue
        expanded = os.path.expanduser(value)
        full = expanded if os.path.isabs(expanded) else os.path.join(working_dir_of(profile), expanded)
        if not os.path.isdir(full):
            continue  # the profile check reports a missing directory already
        problems, _facts = check_model_dir(full, role=key, release=profile.xllm_release, flags=flags)
        for problem in problems:
            severity = problem.severity if not simulate else "warning"
            suffix = "; fine under --simulate" if simulate and problem.severity == "error" else ""
            diagnostics.append(result.diagnostic(severity, key, problem.message + suffix))
    if profile.draft_model and int(flags.get("num_speculative_tokens", 0) or 0) <= 0:
        diagnostics.append(result.diagnostic(
            "warning", "draft_model", "a draft model without num_speculative_tokens > 0: xllm loads it but "
            "proposes no tokens (num_speculative_tokens defaults to 0)"))
    return diagnostics
