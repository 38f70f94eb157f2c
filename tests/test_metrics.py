"""Prometheus text from the supervisor's snapshot (xllm_tui.metrics), parsed with the official client's parser;
written atomically for node_exporter's textfile collector, and served on loopback / a unix socket."""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port
from supervisor_helpers import sim_deployment  # noqa: F401
from xllm_tui.metrics import MetricsExporter, render, write_textfile
from xllm_tui.profile import load_profile_text
from xllm_tui.spec import MetricsSettings

DEMO = Path(__file__).resolve().parents[1] / "xllm_tui" / "data" / "tui-demo" / "snapshot.json"


def parse(text: str) -> dict[str, list]:
    """family name -> [(sample name, labels, value)]"""
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def values(families, name, **labels) -> list[float]:
    return [v for _n, lab, v in families[name] if all(lab.get(k) == str(x) for k, x in labels.items())]


def test_recorded_snapshot_as_prometheus_text():
    snap = json.loads(DEMO.read_text())  # rank 3 failed, the other 7 stopped as collateral, restart scheduled
    families = parse(render(snap))
    assert values(families, "xllm_tui_up", profile="a3-8card") == [1]
    assert values(families, "xllm_tui_ranks", state="failed") == [1]
    assert values(families, "xllm_tui_ranks", state="stopped") == [7]
    assert sum(v for _n, _l, v in families["xllm_tui_ranks"]) == 8
    assert values(families, "xllm_tui_group_state", state="failed") == [1]
    assert sum(v for _n, _l, v in families["xllm_tui_group_state"]) == 1
    assert values(families, "xllm_tui_group_restart_pending") == [1]
    assert families["xllm_tui_group_restarts"][0][0] == "xllm_tui_group_restarts_total"  # a real counter
    assert values(families, "xllm_tui_rank_state", rank=3) == [1]
    assert [lab["state"] for _n, lab, _v in families["xllm_tui_rank_state"] if lab["rank"] == "3"] == ["failed"]
    assert values(families, "xllm_tui_group_ready_seconds") == [0]
    health = {lab["health"]: v for _n, lab, v in families["xllm_tui_devices"]}
    assert sum(health.values()) == len(snap["devices"]["devices"]) and health["OK"] >= 1
    assert len(families["xllm_tui_device_healthy"]) == len(snap["devices"]["devices"])
    # Stopped ranks have no process: no uptime sample rather than a made-up one.
    assert {lab["rank"] for _n, lab, _v in families["xllm_tui_rank_uptime_seconds"]} <= {"3"}


def test_ready_group_time_since_ready_and_label_escaping():
    snap = json.loads(DEMO.read_text())
    snap["profile"]["name"] = 'od"d\\name'
    snap["group"].update(state="ready", since=snap["time"] - 90.5, next_restart_at=None)
    for r in snap["ranks"]:
        r["state"] = "ready"
    families = parse(render(snap))
    assert values(families, "xllm_tui_group_ready_seconds") == [90.5]
    assert values(families, "xllm_tui_ranks", state="ready") == [8]
    assert {lab["profile"] for _n, lab, _v in families["xllm_tui_up"]} == {'od"d\\name'}
    stopped = parse(render(snap, supervisor_up=False))
    assert values(stopped, "xllm_tui_up") == [0]


def test_textfile_is_replaced_atomically(tmp_path):
    path = tmp_path / "collector" / "xllm.prom"
    write_textfile(str(path), "a 1\n")
    inode = path.stat().st_ino
    write_textfile(str(path), render(json.loads(DEMO.read_text())))
    assert path.stat().st_ino != inode  # a new file renamed over the old one, never rewritten in place
    assert os.listdir(path.parent) == ["xllm.prom"]  # no temp file left, none named *.prom
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert "xllm_tui_ranks" in parse(path.read_text())


def _get_unix(path: str) -> tuple[int, str, str]:
    class UnixConnection(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(10)
            self.sock.connect(path)

    connection = UnixConnection("localhost")
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    body = response.read().decode()
    connection.close()
    return response.status, response.getheader("Content-Type"), body


def test_exporter_serves_loopback_and_unix_socket_and_says_down_at_close(tmp_path):
    snap = json.loads(DEMO.read_text())
    port = free_port()
    textfile = tmp_path / "xllm.prom"
    tcp = MetricsExporter(MetricsSettings(textfile=str(textfile), listen=f"127.0.0.1:{port}"))
    unix = MetricsExporter(MetricsSettings(listen=f"unix:{tmp_path / 'm.sock'}"))
    tcp.start()
    unix.start()
    try:
        tcp.update(snap)
        unix.update(snap)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert values(parse(response.read().decode()), "xllm_tui_ranks", state="failed") == [1]
        status, content_type, body = _get_unix(str(tmp_path / "m.sock"))
        assert status == 200 and values(parse(body), "xllm_tui_ranks", state="stopped") == [7]
        assert values(parse(textfile.read_text()), "xllm_tui_up") == [1]
    finally:
        tcp.close()
        unix.close()
    assert values(parse(textfile.read_text()), "xllm_tui_up") == [0]
    assert not (tmp_path / "m.sock").exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_metrics_schema(tmp_path):
    base = ("name: t\nbinary: /opt/xllm\nmodel: /m\nmaster_node_addr: 127.0.0.1:10015\nbase_port: 18994\n"
            "machines: [{host: 127.0.0.1, devices: 0-1}]\n")
    path = str(tmp_path / "p.yaml")
    good = load_profile_text(base + "metrics: {textfile: out/x.prom, listen: 'unix:m.sock', interval: 30s}\n", path,
                             simulate=True)
    assert not good.errors
    assert good.profile.metrics == MetricsSettings(str(tmp_path / "out" / "x.prom"), f"unix:{tmp_path / 'm.sock'}", 30.0)
    bad = load_profile_text(base + "metrics:\n  listen: 0.0.0.0:9464\n  textfile: x.txt\n", path, simulate=True)
    messages = [str(d) for d in bad.diagnostics]
    assert any(m.startswith(f"{path}:8:11: error: metrics.listen: 0.0.0.0 is not a loopback address") for m in messages)
    assert any("metrics.textfile: node_exporter's textfile collector reads only *.prom" in m for m in messages)
    assert load_profile_text(base + "metrics: {}\n", path, simulate=True).errors
    assert load_profile_text(base, path, simulate=True).profile.metrics is None


def test_live_supervisor_snapshot(tmp_path, sim_deployment):  # noqa: F811
    """The snapshot of a real (simulated) supervisor, as the supervisor will hand it over."""
    dep = sim_deployment(ranks=2)
    dep.start()
    snap = dep.wait_group("ready")
    exporter = MetricsExporter(MetricsSettings(textfile=str(tmp_path / "live.prom")))
    exporter.update(snap)
    families = parse((tmp_path / "live.prom").read_text())
    assert values(families, "xllm_tui_ranks", state="ready") == [2]
    assert values(families, "xllm_tui_group_state", state="ready") == [1]
    assert values(families, "xllm_tui_group_ready_seconds")[0] >= 0
    assert len(families["xllm_tui_rank_uptime_seconds"]) == 2
    exporter.close()


async def test_run_task_refreshes_the_textfile_until_cancelled(tmp_path):
    import asyncio

    snap = json.loads(DEMO.read_text())
    calls = []

    def snapshot():
        calls.append(1)
        return {**snap, "group": {**snap["group"], "restarts": len(calls)}}

    errors = []
    exporter = MetricsExporter(MetricsSettings(textfile=str(tmp_path / "x.prom"), interval_s=0.01))
    task = asyncio.ensure_future(exporter.run(snapshot, errors.append))
    for _ in range(2000):  # bounded: until the third refresh is on disk
        await asyncio.sleep(0.01)
        text = (tmp_path / "x.prom").read_text() if (tmp_path / "x.prom").exists() else ""
        if text and values(parse(text), "xllm_tui_group_restarts")[0] >= 3:
            break
    assert values(parse((tmp_path / "x.prom").read_text()), "xllm_tui_group_restarts")[0] >= 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    bad = MetricsExporter(MetricsSettings(textfile=str(tmp_path / "x.prom" / "under-a-file.prom"), interval_s=0.01))
    task = asyncio.ensure_future(bad.run(snapshot, errors.append))
    for _ in range(2000):
        await asyncio.sleep(0.01)
        if errors:
            break
    assert errors and not task.done()  # reported, still running
    task.cancel()


def test_a_typed_snapshot_object_is_accepted():
    snap = json.loads(DEMO.read_text())

    class TypedSnapshot:  # the protocol's Snapshot: to_dict() gives the documented dict
        def to_dict(self):
            return snap

    assert render(TypedSnapshot()) == render(snap)
