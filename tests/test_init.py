"""`xllm-tui init`: a starter profile from this machine's devices; it validates and, simulated, runs."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from model_dirs import make_model_dir
from conftest import REPO
from supervisor_helpers import sim_deployment  # noqa: F401
from xllm_tui.starter import Answers, MachineFacts, cores_plan, free_ports, starter_profile, yaml_str


def test_cores_from_topology_share_each_affinity():
    affinity = {d: "0-47" if d < 4 else "48-95" for d in range(8)}
    assert cores_plan(list(range(8)), affinity, list(range(96)))[:2] == ("{rule: topology, count: 12}", None)
    assert cores_plan([0, 1], affinity, list(range(96)))[0] == "{rule: topology, count: 24}"


def test_cores_without_affinity_are_explicit_lists_of_this_machine():
    rule, lists, why = cores_plan([0, 1, 2], {}, list(range(8)))
    assert rule == "none" and lists == ["0-1", "2-3", "4-5"] and "no CPU affinity" in why
    assert cores_plan([0, 1, 2], {}, [0, 1])[:2] == ("none", None)  # too few cores to pin


def test_free_ports_skip_taken_ones():
    taken = {18995, 10015}
    base, master = free_ports(2, is_free=lambda p: p not in taken)
    assert (base, master) == (18996, 10016)
    base, master = free_ports(2, start=100, master_start=100, is_free=lambda p: True)
    assert (base, master) == (100, 102)  # never inside the ranks' block


def test_yaml_strings_read_back_exactly():
    for text in ("/models/GLM-4.5", "yes", "12", "a: b", "#x", "path with space", "-dash", "ok"):
        assert yaml.safe_load(f"k: {yaml_str(text)}")["k"] == text


def test_profile_text_is_valid_yaml_with_the_choices():
    facts = MachineFacts(host="10.0.0.5", devices=[0, 1, 2], cpus=list(range(6)), base_port=20000, master_port=10100)
    data = yaml.safe_load(starter_profile(facts, Answers("box", "/opt/xllm", "/m", "/d")))
    assert data["machines"] == [{"host": "10.0.0.5", "devices": "0-2", "cores": ["0-1", "2-3", "4-5"]}]
    assert data["master_node_addr"] == "10.0.0.5:10100" and data["base_port"] == 20000
    assert data["draft_model"] == "/d" and data["flags"]["num_speculative_tokens"] == 1
    step = data["pre_launch"][1]
    assert step["when"] == "after_reboot" and "(0, 1, 2)" in step["run"][2]


def _init(*args: str, cwd, env=None) -> subprocess.CompletedProcess:
    env = dict(env or os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "xllm_tui", "init", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=120)


def test_init_on_a_machine_without_cpu_affinity_writes_explicit_cores(tmp_path):
    """A real (non-simulated) run of init against an npu-smi that prints no CPU Affinity (A3 on ARM)."""
    npu_smi = tmp_path / "npu-smi"
    npu_smi.write_text(f"#!/bin/sh\nXLLM_SIM_NPU_AFFINITY=0 PYTHONPATH={REPO} exec {sys.executable} "
                       f"-m xllm_tui.sim.npu_smi \"$@\"\n")
    npu_smi.chmod(0o755)
    binary = tmp_path / "xllm"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    make_model_dir(tmp_path / "model")  # validate's model pre-flight reads config.json, the shards, ...
    done = _init("--npu-smi", str(npu_smi), "--binary", str(binary), "--model", str(tmp_path / "model"),
                 "--devices", "0-1", "--host", "127.0.0.1", "--name", "arm", cwd=tmp_path)
    assert done.returncode in (0, 1), done.stdout + done.stderr  # validated: no errors
    data = yaml.safe_load((tmp_path / "arm.yaml").read_text())
    assert data["cores"] == "none" and len(data["machines"][0]["cores"]) == 2
    assert data["devices"] == {"npu_smi": str(npu_smi)}  # the supervisor reads the same npu-smi
    assert "0 errors" in done.stdout
    again = _init("--npu-smi", str(npu_smi), "--name", "arm", cwd=tmp_path)
    assert again.returncode == 2 and "exists" in again.stderr  # never overwritten without --force


def test_init_simulated_profile_validates_and_runs(tmp_path, sim_deployment):  # noqa: F811
    dep = sim_deployment(ranks=2)  # only for its run dir, test tag and teardown; init writes the profile
    env = dep.env()
    env.update(XLLM_SIM_TIME_SCALE="0.01", XLLM_SIM_WEIGHT_FILES="3")
    done = _init("--simulate", "--devices", "0-1", "--name", dep.name, "--output", dep.profile_path, "--force",
                 "--model", "/models/sim", cwd=tmp_path, env=env)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    data = yaml.safe_load(open(dep.profile_path))
    assert data["cores"] == "{rule: topology, count: 24}" or data["cores"] == {"rule": "topology", "count": 24}
    assert data["machines"][0]["devices"] == "0-1"
    checked = dep.cli("validate", dep.profile_path, "--simulate")
    assert checked.returncode in (0, 1) and "0 errors" in checked.stdout, checked.stdout + checked.stderr
    up = subprocess.run([sys.executable, "-m", "xllm_tui", "up", dep.profile_path, "--simulate"], env=env,
                        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert up.returncode == 0, up.stdout + up.stderr
    snap = dep.wait_snapshot(lambda s: all(r["state"] == "ready" for r in s["ranks"]), 120, "both ranks ready")
    assert [r["rank"] for r in snap["ranks"]] == [0, 1]
    assert dep.cli("down", dep.profile_path, "--simulate", timeout=120).returncode == 0
    assert not dep.leftovers()


def test_init_asks_on_a_terminal(tmp_path):
    import pty
    import select
    import time

    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen([sys.executable, "-m", "xllm_tui", "init", "--simulate", "--devices", "0", "--name", "asked"],
                               cwd=tmp_path, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    seen = b""

    def read_until(text: bytes, timeout: float = 60) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while text not in seen:
            assert time.monotonic() < deadline, f"no {text!r} in {seen!r}"
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
        assert text in seen, seen

    try:
        read_until(b"xllm binary [")
        os.write(master, b"/opt/xllm/bin/xllm\n")
        read_until(b"model directory:")
        os.write(master, b"/models/glm\n")
        read_until(b"draft (MTP) model directory")
        os.write(master, b"\n")
        read_until(b"0 errors")
        assert process.wait(60) in (0, 1)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(master)
    data = yaml.safe_load((tmp_path / "asked.yaml").read_text())
    assert data["binary"] == "/opt/xllm/bin/xllm" and data["model"] == "/models/glm" and "draft_model" not in data
    assert data["restart"]["scope"] == "rank"  # a one-rank world
