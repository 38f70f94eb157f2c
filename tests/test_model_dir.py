"""The model-directory pre-flight on small synthetic model directories (tests/model_dirs.py), and its place in
validate: located at the profile's model/draft_model key, an error that is a warning under --simulate."""

from __future__ import annotations

import json
import os

from model_dirs import make_model_dir
from xllm_tui.cli import main
from xllm_tui.model_dir import check_model_dir, model_types


def messages(path, **kwargs) -> list[tuple[str, str]]:
    problems, _facts = check_model_dir(str(path), **kwargs)
    return [(p.severity, p.message) for p in problems]


def test_a_complete_w8a8_directory_passes(tmp_path):
    model = make_model_dir(tmp_path / "GLM-4.5-w8a8", quantize="w8a8", shards=3)
    problems, facts = check_model_dir(model)
    assert problems == [] and (facts.model_type, facts.quantize, facts.shards) == ("glm4_moe", "w8a8", 3)


def test_config_json_missing_unparseable_or_without_model_type(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert messages(empty)[0][0] == "error" and "no config.json" in messages(empty)[0][1]
    broken = make_model_dir(tmp_path / "broken")
    with open(os.path.join(broken, "config.json"), "w") as fh:
        fh.write("{not json")
    assert messages(broken) == [("error", messages(broken)[0][1])] and "not valid JSON" in messages(broken)[0][1]
    typeless = make_model_dir(tmp_path / "typeless", model_type="")
    assert any("has no model_type" in m for _, m in messages(typeless))


def test_model_type_is_checked_against_the_release(tmp_path):
    # deepseek_v32 is registered at 31b7cafd (xllm/models; data/model_types.json), not in v0.7.2.
    assert "deepseek_v32" in model_types("31b7cafd") and "deepseek_v32" not in model_types("v0.7.2")
    model = make_model_dir(tmp_path / "dsv32", model_type="deepseek_v32", shards=1)
    assert messages(model, release="31b7cafd") == []
    [(severity, text)] = messages(model, release="v0.7.2")
    assert severity == "error" and "model_type 'deepseek_v32' is not a model xllm v0.7.2 registers" in text
    assert "31b7cafd" in text  # where it exists


def test_shards_against_the_index(tmp_path):
    partial = make_model_dir(tmp_path / "partial", shards=4, write_shards=[1, 2, 4])
    [(severity, text)] = messages(partial)
    assert severity == "error" and "1 of the 4 shard files named by model.safetensors.index.json are missing" in text
    assert "model-00003-of-00004.safetensors" in text
    extra = make_model_dir(tmp_path / "extra", shards=2)
    open(os.path.join(extra, "model-old.safetensors"), "wb").write(b"\x02" + b"\0" * 7 + b"{}")
    assert [s for s, m in messages(extra) if "not in model.safetensors.index.json" in m] == ["warning"]
    empty_shard = make_model_dir(tmp_path / "empty-shard", shards=2)
    open(os.path.join(empty_shard, "model-00002-of-00002.safetensors"), "wb").close()
    assert any(s == "error" and "too small to hold a safetensors header" in m for s, m in messages(empty_shard))
    none = make_model_dir(tmp_path / "none", shards=1, write_shards=[])
    assert any("no *.safetensors files" in m for _, m in messages(none))


def test_quantisation_in_config_against_the_weights(tmp_path):
    says_but_float = make_model_dir(tmp_path / "a", quantize="w8a8", quant_tensors=False)
    assert [m for _, m in messages(says_but_float)] == [
        "config.json says w8a8 but the weights hold no quantisation scales (deq_scale, weight_scale, ...): "
        "a float model with a quantised config?"]
    quantised_but_silent = make_model_dir(tmp_path / "b", quant_tensors=True)
    assert any("config.json has no \"quantize\" entry" in m for _, m in messages(quantised_but_silent))


def test_draft_must_be_an_mtp_export_and_the_model_must_not(tmp_path):
    plain = make_model_dir(tmp_path / "plain", model_type="glm4_moe")
    assert any("not an MTP export" in m for _, m in messages(plain, role="draft_model"))
    mtp = make_model_dir(tmp_path / "mtp", model_type="glm4_moe_mtp")
    assert any("give it as draft_model" in m for _, m in messages(mtp, role="model"))


def test_chat_template_and_tokenizer(tmp_path):
    bare = make_model_dir(tmp_path / "bare", chat_template=False)
    assert [m for _, m in messages(bare)][0].startswith("no chat template")
    os.remove(os.path.join(bare, "tokenizer.json"))
    assert any(m.startswith("no tokenizer files") for _, m in messages(bare))


def _profile(tmp_path, model: str, draft: str | None = None, extra: str = "") -> str:
    path = tmp_path / "p.yaml"
    binary = tmp_path / "xllm"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    lines = [f"binary: {binary}", f"model: {model}"] + ([f"draft_model: {draft}"] if draft else []) + [
        "master_node_addr: 127.0.0.1:9000", "base_port: 9100", "machines: [{host: 127.0.0.1, devices: 0-1}]"]
    path.write_text("\n".join(lines) + "\n" + extra)
    return str(path)


def test_validate_locates_model_problems_and_softens_them_under_simulate(tmp_path, capsys):
    model = make_model_dir(tmp_path / "model", shards=2, write_shards=[1])
    draft = make_model_dir(tmp_path / "draft", model_type="glm4_moe")
    profile = _profile(tmp_path, model, draft, "flags:\n  num_speculative_tokens: 1\n")
    assert main(["validate", profile, "--no-devices"]) == 2
    out = capsys.readouterr().out
    assert f"{profile}:2:8: error: model: 1 of the 2 shard files named by model.safetensors.index.json" in out
    assert f"{profile}:3:14: warning: draft_model: the draft model's model_type is 'glm4_moe', not an MTP" in out
    assert main(["validate", profile, "--no-devices", "--simulate", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)["results"][0]
    [shard] = [d for d in result["diagnostics"] if "shard files" in d["message"]]
    assert shard["severity"] == "warning" and shard["message"].endswith("; fine under --simulate")


def test_a_draft_without_speculative_tokens_is_pointed_out(tmp_path, capsys):
    model = make_model_dir(tmp_path / "model")
    draft = make_model_dir(tmp_path / "draft", model_type="glm4_moe_mtp")
    assert main(["validate", _profile(tmp_path, model, draft), "--no-devices"]) == 1
    assert "draft_model: a draft model without num_speculative_tokens > 0" in capsys.readouterr().out
