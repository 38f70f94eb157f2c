"""The supervisor and the devices: the snapshot's device reading, binding warnings, health and HBM events,
stray processes on a rank's NPU (devices.on_busy) and `cores: topology`, against the simulated npu-smi."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from supervisor_helpers import sim_deployment  # noqa: F401

from xllm_tui.client import snapshot_devices
from xllm_tui.commands.lifecycle import format_devices
from xllm_tui.profile import load_profile_text

POLL = {"poll_interval": "0.3s"}


def write_json(path, data) -> None:
    """Atomically (the simulated npu-smi must never read half a file: it would see no stray)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


@pytest.fixture
def stray():
    """A real process that is not part of any deployment, to sit on an NPU; killed at the end."""
    proc = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"], stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def device_of(snap: dict, logic_id: int) -> dict:
    return next(d for d in snap["devices"]["devices"] if d["logic_id"] == logic_id)


def test_snapshot_devices_binding_health_and_hbm_left(sim_deployment, tmp_path):
    health_file = tmp_path / "health"
    health_file.write_text("")
    extra_file = tmp_path / "extra-procs.json"
    dep = sim_deployment(
        ranks=2,
        env={"XLLM_SIM_NPU_HEALTH_FILE": str(health_file), "XLLM_SIM_NPU_EXTRA_PROCS": str(extra_file)},
        # rank 0 -> core 47 (inside NPU 0's affinity 0-47), rank 1 -> core 48 (outside NPU 1's 0-47)
        extra={"cores": {"rule": "per_device", "count": 1, "first": 47}, "devices": POLL},
    )
    dep.start()
    dep.wait_group("ready")
    pids = dep.rank_pids()

    def ranks_on_their_npus(snap):
        if not snap.get("devices") or not snap["devices"]["devices"]:
            return False
        return all(
            [(p["pid"], p["name"]) for p in device_of(snap, rank)["processes"]] == [(pid, "xllm")]
            for rank, pid in pids.items()
        )

    snap = dep.wait_snapshot(ranks_on_their_npus, 30, "each rank on its NPU in the device reading")
    devices = snap["devices"]
    assert devices["backend"] == "npu-smi" and len(devices["devices"]) == 16 and devices["errors"] == []
    assert devices["polled_at"] >= snap["supervisor"]["started_at"]
    assert devices["on_busy"] == "wait" and devices["topology_cores"] is None
    assert device_of(snap, 0)["hbm_used_mb"] > 3400 + 500  # idle HBM plus a loading rank
    assert devices["summary"]["count"] == 16 and devices["summary"]["health"] == {"OK": 16}
    report = snapshot_devices(snap)
    assert report is not None and report.device(1).processes[0].pid == pids[1]
    assert report.device(1).cpu_affinity == "0-47" and report.links[0][1] == "SIO"
    with open(dep.sim_procs_path) as f:
        assert sorted((e["pid"], e["logic_id"]) for e in json.load(f)) == sorted((p, r) for r, p in pids.items())
    ranks = {r["rank"]: r for r in snap["ranks"]}
    assert ranks[0]["binding"] is None
    assert ranks[1]["binding"]["affinity"] == "0-47" and ranks[1]["binding"]["outside"] == "48"
    assert "outside NPU 1's CPU affinity 0-47" in ranks[1]["binding"]["message"]
    assert [b["rank"] for b in devices["binding"]] == [1]
    assert any(e["rank"] == 1 and e["reason"].startswith("binding: rank 1") for e in dep.device_events())

    text = dep.cli("status", dep.profile_path, "--simulate", "--events", "0", check=True).stdout
    assert "devices: 16 NPUs (npu-smi" in text and "16 OK" in text and "hottest NPU" in text
    assert "! binding warning (the profile's cores): rank 1 runs on cores 48" in text
    table = {line.split()[0]: line.split() for line in text.splitlines() if line[:1].isdigit()}
    assert table["1"][3].endswith("!") and not table["0"][3].endswith("!")
    as_json = json.loads(dep.cli("status", dep.profile_path, "--simulate", "--json", check=True).stdout)
    assert as_json["devices"]["binding"][0]["rank"] == 1
    assert as_json["ranks"][1]["binding"]["device"] == 1

    # Health leaves OK while the supervisor polls.
    health_file.write_text("1=Warning")
    event = dep.wait_event(lambda e: e["kind"] == "device" and e.get("device") == 1 and e.get("to") == "Warning",
                           30, "health event for NPU 1")
    assert event["from"] == "OK" and event["rank"] == 1 and "NPU 1 health OK -> Warning" in event["reason"]
    dep.wait_snapshot(lambda s: device_of(s, 1)["health"] == "Warning", 30, "Warning in the snapshot")

    # HBM left behind on NPU 1 (held by no process) after rank 1 exits.
    write_json(extra_file, [{"logic_id": 1, "memory_mb": 30000}])
    dep.request("stop", ranks=[1])
    event = dep.wait_event(lambda e: e["kind"] == "device" and "HBM still in use" in e["reason"], 30,
                           "HBM left behind event")
    assert event["rank"] == 1 and event["device"] == 1
    assert event["reason"].startswith("HBM still in use on NPU 1 after rank 1 exited")
    assert not [e for e in dep.device_events() if "HBM still in use" in e["reason"] and e["rank"] != 1]


def test_stray_holder_waits_until_started_or_gone(sim_deployment, tmp_path, stray):
    extra_file = tmp_path / "extra-procs.json"
    write_json(extra_file, [{"pid": stray.pid, "logic_id": 1, "name": "python", "memory_mb": 2000}])
    dep = sim_deployment(ranks=2, env={"XLLM_SIM_NPU_EXTRA_PROCS": str(extra_file)}, extra={"devices": POLL})
    dep.start()
    waiting = f"waiting: NPU 1 held by pid {stray.pid} (python)"
    snap = dep.wait_snapshot(lambda s: s["ranks"][1]["reason"] == waiting and s["ranks"][0]["pid"], 30,
                             "rank 1 waiting for its NPU")
    r1 = snap["ranks"][1]
    assert r1["state"] == "starting" and r1["pid"] is None
    assert r1["waiting"]["device"] == 1 and r1["waiting"]["holders"][0]["pid"] == stray.pid
    assert waiting in snap["group"]["reason"]
    event = next(e for e in dep.device_events() if e.get("holders"))
    assert event["rank"] == 1 and event["on_busy"] == "wait" and f"pid {stray.pid} (python)" in event["reason"]
    text = dep.cli("status", dep.profile_path, "--simulate", "--events", "0", check=True).stdout
    assert waiting in text

    # The operator's start is the choice to launch anyway.
    dep.cli("start", dep.profile_path, "--simulate", "--ranks", "1", check=True)
    snap = dep.wait_snapshot(lambda s: s["ranks"][1]["pid"] is not None, 30, "rank 1 launched by start")
    assert snap["ranks"][1]["waiting"] is None
    pid = snap["ranks"][1]["pid"]
    assert any(e["rank"] == 1 and "launching rank 1 anyway: the operator started it" in e["reason"]
               for e in dep.device_events())
    assert any(e["kind"] == "state" and e["rank"] == 1 and e["reason"].startswith(f"spawned pid {pid} ")
               for e in dep.events_file())

    # A restart checks again; once the stray is gone the rank launches by itself.
    dep.request("restart", ranks=[1])
    dep.wait_snapshot(lambda s: s["ranks"][1]["reason"] == waiting, 30, "rank 1 waiting again after restart")
    stray.kill()
    stray.wait(10)
    snap = dep.wait_group("ready", 60)
    assert snap["ranks"][1]["pid"] and snap["ranks"][1]["waiting"] is None
    assert any("NPU 1 is free now; launching rank 1" in e["reason"] for e in dep.device_events())


def test_stray_holder_fail_policy(sim_deployment, tmp_path, stray):
    extra_file = tmp_path / "extra-procs.json"
    write_json(extra_file, [{"pid": stray.pid, "logic_id": 1, "name": "python", "memory_mb": 2000}])
    dep = sim_deployment(ranks=2, env={"XLLM_SIM_NPU_EXTRA_PROCS": str(extra_file)},
                         restart={"mode": "manual", "scope": "group"},
                         extra={"devices": {**POLL, "on_busy": "fail"}})
    dep.start()
    snap = dep.wait_group("failed", 30)
    r0, r1 = snap["ranks"]
    assert r1["state"] == "failed" and r1["last_exit"]["cause"] == "npu_busy"
    assert r1["reason"] == f"NPU 1 held by pid {stray.pid} (python) (devices.on_busy: fail)"
    assert snap["group"]["first_failure"]["cause"] == "npu_busy" and snap["group"]["first_failure"]["rank"] == 1
    assert r0["state"] == "stopped" and r0["pid"] is None and r0["reason"].startswith("not launched: NPU 1 held")
    assert any(e["kind"] == "state" and e.get("cause") == "npu_busy" for e in dep.events_file())


def test_stray_holder_ignore_policy(sim_deployment, tmp_path, stray):
    extra_file = tmp_path / "extra-procs.json"
    write_json(extra_file, [{"pid": stray.pid, "logic_id": 0, "name": "python", "memory_mb": 2000}])
    dep = sim_deployment(ranks=2, env={"XLLM_SIM_NPU_EXTRA_PROCS": str(extra_file)},
                         extra={"devices": {**POLL, "on_busy": "ignore"}})
    dep.start()
    dep.wait_group("ready", 60)
    event = next(e for e in dep.device_events() if e.get("holders"))
    assert event["rank"] == 0 and "launching rank 0 anyway (devices.on_busy: ignore)" in event["reason"]


def test_cores_from_topology(sim_deployment):
    dep = sim_deployment(ranks=2, extra={"cores": {"rule": "topology", "count": 4}, "devices": POLL})
    dep.start()
    snap = dep.wait_group("ready", 60)
    snap = dep.wait_snapshot(lambda s: s["devices"] is not None, 30, "a device reading")
    assert snap["devices"]["topology_cores"] == {"0": "0-3", "1": "4-7"}
    assert snap["devices"]["binding"] == [] and snap["devices"]["topology_problem"] is None


def test_cores_from_topology_without_affinity_fails_the_launch(sim_deployment):
    # As A3 machines on ARM print it: no CPU Affinity column.
    dep = sim_deployment(ranks=2, env={"XLLM_SIM_NPU_AFFINITY": "0"},
                         extra={"cores": {"rule": "topology", "count": 4}, "devices": POLL})
    dep.start()
    # The launch fails at once; the first periodic device reading (which `status` prints) may come a little later.
    snap = dep.wait_snapshot(lambda s: all(r["state"] == "failed" for r in s["ranks"]) and s["devices"], 30,
                             "ranks failed and a device reading")
    for r in snap["ranks"]:
        assert r["pid"] is None and r["reason"].startswith("cannot launch: ")
        assert "cores: topology" in r["reason"] and "CPU Affinity" in r["reason"]
    assert any(e["kind"] == "state" and e.get("cause") == "topology_unavailable" for e in dep.events_file())
    assert any(e["kind"] == "device" and e["reason"].startswith("cannot launch:") for e in dep.events_file())
    assert snap["group"]["state"] == "failed" and snap["group"]["reason"].startswith("cannot launch: ")
    assert not [e for e in dep.events_file() if e["kind"] == "group" and "launching" in e["reason"]]
    assert dep.answers()  # the supervisor stays up: fix the profile, then `reload` and `start`
    text = dep.cli("status", dep.profile_path, "--simulate", "--events", "0", check=True).stdout
    assert "cores: topology:" in text


def test_status_lines_for_unreadable_devices():
    lines = format_devices({"backend": "npu-smi", "devices": [], "links": {}, "polled_at": 100.0,
                            "errors": ["dcmi module initialize failed. ret is -8005"], "binding": []}, now=103.0)
    assert lines == ["devices: unavailable, read 3s ago: dcmi module initialize failed. ret is -8005"]
    assert format_devices(None) == []


def test_profile_on_busy_must_be_a_known_policy(tmp_path):
    text = (
        "binary: /opt/xllm/bin/xllm\nmodel: /models/glm\nmaster_node_addr: 10.0.0.1:10015\nbase_port: 18994\n"
        "machines:\n  - host: 10.0.0.1\n    devices: 0-3\ndevices:\n  on_busy: later\n"
    )
    result = load_profile_text(text, str(tmp_path / "p.yaml"), simulate=True)
    errors = [str(d) for d in result.errors]
    assert len(errors) == 1, errors
    assert "p.yaml:9:" in errors[0] and "devices.on_busy" in errors[0]
    assert "'later' is not one of wait, fail, ignore" in errors[0]
    ok = load_profile_text(text.replace("later", "fail"), str(tmp_path / "p.yaml"), simulate=True)
    assert not ok.errors and ok.profile.devices.on_busy == "fail"
    default = load_profile_text(text.replace("devices:\n  on_busy: later\n", ""), str(tmp_path / "p.yaml"), simulate=True)
    assert default.profile.devices.on_busy == "wait"


def test_the_process_walk_is_only_made_when_the_npus_could_be_read(monkeypatch, tmp_path):
    """Which NPU processes are the deployment's needs the walk over every process; without a reading (no
    npu-smi on this machine) it was most of an idle supervisor's CPU, for nothing."""
    from xllm_tui.supervisor import device_watch
    from xllm_tui.supervisor import devices as devwatch

    walked = []
    monkeypatch.setattr(devwatch, "process_family", lambda pids: walked.append(list(pids)) or set(pids))
    text = ("binary: /opt/xllm/bin/xllm\nmodel: /models/glm\nmaster_node_addr: 127.0.0.1:10015\nbase_port: 18994\n"
            "machines:\n  - host: 127.0.0.1\n    devices: 0-1\n")
    watch = device_watch.DeviceWatch()
    monkeypatch.setenv("PATH", str(tmp_path))  # no npu-smi, no nvidia-smi
    watch.simulate = False
    report, own = watch._read_devices_blocking(load_profile_text(text, str(tmp_path / "p.yaml")).profile, None, [42])
    assert not report.available and own == set() and walked == []
    monkeypatch.undo()
    monkeypatch.setattr(devwatch, "process_family", lambda pids: walked.append(list(pids)) or set(pids))
    watch.simulate = True  # the simulated npu-smi answers
    profile = load_profile_text(text, str(tmp_path / "p.yaml"), simulate=True).profile
    report, own = watch._read_devices_blocking(profile, None, [42])
    assert report.available and own == {42} and walked == [[42]]
