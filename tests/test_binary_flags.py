"""validate asks the profile's binary for its flags (--helpxml), caches them, and checks the launch's flags."""

from __future__ import annotations

import os
import sys

from model_dirs import make_model_dir
from xllm_tui.binary_flags import BinaryFlags, check_flag_pairs, parse_helpxml, read_binary_flags
from xllm_tui.cli import main
from xllm_tui.sim.flags import helpxml


def fake_xllm(tmp_path, release: str, name: str = "xllm"):
    """An executable that answers like a gflags binary of `release` (the simulator), counting its runs."""
    binary = tmp_path / name
    counter = tmp_path / f"{name}.runs"
    binary.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        f"sys.path.insert(0, {os.getcwd()!r})\n"
        f"open({str(counter)!r}, 'a').write('x')\n"
        f"os.environ['XLLM_SIM_XLLM_VERSION'] = {release!r}\n"
        "from xllm_tui.sim.xllm import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    binary.chmod(0o755)
    return binary, counter


def test_helpxml_of_the_simulator_parses_and_is_cached_by_path_size_mtime(tmp_path):
    binary, counter = fake_xllm(tmp_path, "v0.8.0")
    cache = str(tmp_path / "cache")
    first = read_binary_flags(str(binary), cache_dir=cache)
    assert not first.from_cache and first.flags["enable_graph"].type == "bool"
    assert first.flags["max_memory_utilization"].default == "0.80000000000000004"
    assert first.release_guess() == ("v0.8.0", 1.0)
    again = read_binary_flags(str(binary), cache_dir=cache)
    assert again.from_cache and again.flags == first.flags and counter.read_text() == "x"
    binary.write_text(binary.read_text() + "# rebuilt\n")  # a new size: asked again
    assert not read_binary_flags(str(binary), cache_dir=cache).from_cache and counter.read_text() == "xx"


def counting_script(tmp_path, name: str, body: str):
    """A shell script that records each run in NAME.runs, then runs `body`."""
    binary = tmp_path / name
    counter = tmp_path / f"{name}.runs"
    binary.write_text(f"#!/bin/sh\nprintf x >> {counter}\n{body}\n")
    binary.chmod(0o755)
    return binary, counter


def helpxml_error(binary, cache: str) -> str:
    from xllm_tui.binary_flags import HelpxmlError

    try:
        read_binary_flags(str(binary), cache_dir=cache)
    except HelpxmlError as error:
        return str(error)
    raise AssertionError("no error")


def test_a_binary_without_a_flag_list_is_asked_once_per_build(tmp_path):
    # It exits 0 without a flag list (not a gflags program, like bench/sleeper.c): every `up` would run it again.
    binary, counter = counting_script(tmp_path, "plain", "exit 0")
    cache = str(tmp_path / "cache")
    said = "printed no flag list on --helpxml (exit status 0)"
    assert helpxml_error(binary, cache) == said and counter.read_text() == "x"
    assert helpxml_error(binary, cache) == said and counter.read_text() == "x"  # the same words, from the cache
    st = binary.stat()
    os.utime(binary, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # rebuilt in place: a new mtime
    assert helpxml_error(binary, cache) == said and counter.read_text() == "xx"
    binary.write_text(binary.read_text() + "# rebuilt\n")  # a new size
    assert helpxml_error(binary, cache) == said and counter.read_text() == "xxx"
    assert helpxml_error(binary, cache) == said and counter.read_text() == "xxx"


def test_a_binary_that_fails_without_a_flag_list_is_asked_again(tmp_path):
    # A failure may be the environment's (a library missing until set_env.sh is sourced): not cached.
    binary, counter = counting_script(tmp_path, "broken", "echo 'error while loading shared libraries' >&2; exit 127")
    cache = str(tmp_path / "cache")
    said = "printed no flag list on --helpxml (error while loading shared libraries)"
    assert helpxml_error(binary, cache) == said and helpxml_error(binary, cache) == said
    assert counter.read_text() == "xx"


def test_a_binary_that_hangs_is_given_up_on(tmp_path):
    binary = tmp_path / "hang"
    binary.write_text("#!/bin/sh\nexec sleep 60\n")
    binary.chmod(0o755)
    from xllm_tui.binary_flags import HelpxmlError

    try:
        read_binary_flags(str(binary), cache_dir=str(tmp_path / "c"), timeout=0.5)
    except HelpxmlError as error:
        assert "within 0.5 s" in str(error)
    else:
        raise AssertionError("no error")


def test_flag_names_and_values_are_checked_against_the_binary():
    flags = BinaryFlags("/opt/xllm", parse_helpxml(helpxml("xllm", "v0.8.0")))
    problems = check_flag_pairs([("enable_acl_graph", "true"), ("port", "abc"), ("enable_graph", "true"),
                                 ("log_dir", "/tmp")], flags, "31b7cafd")
    assert [(p.name, p.severity) for p in problems] == [("enable_acl_graph", "error"), ("port", "error")]
    assert problems[0].message.startswith("renamed enable_graph in v0.8.0; the binary /opt/xllm has no flag")
    assert "ERROR: illegal value 'abc' specified for int32 flag 'port'" in problems[1].message


def test_validate_names_the_release_of_the_binary_and_the_renamed_flag(tmp_path, capsys):
    binary, _ = fake_xllm(tmp_path, "v0.8.0")
    path = tmp_path / "p.yaml"
    path.write_text(f"binary: {binary}\nmodel: {make_model_dir(tmp_path / 'm')}\nmaster_node_addr: 127.0.0.1:9000\nbase_port: 9100\n"
                    "machines: [{host: 127.0.0.1, devices: 0-1}]\nflags:\n  enable_acl_graph: true\n")
    assert main(["validate", str(path), "--no-devices"]) == 2
    out = capsys.readouterr().out
    assert (f"{path}:1:9: warning: binary: the binary's flags are those of xllm v0.8.0, the profile targets "
            "31b7cafd (the default): set xllm_release: v0.8.0") in out
    assert f"{path}:7:21: error: flags.enable_acl_graph: renamed enable_graph in v0.8.0; the binary" in out
    assert f"note: flags checked against {binary} --helpxml" in out


def test_up_refuses_before_starting_anything_when_the_binary_rejects_a_flag(tmp_path, capsys):
    binary, _ = fake_xllm(tmp_path, "v0.8.0")
    path = tmp_path / "p.yaml"
    path.write_text(f"binary: {binary}\nmodel: {make_model_dir(tmp_path / 'm')}\nmaster_node_addr: 127.0.0.1:9000\nbase_port: 9100\n"
                    "machines: [{host: 127.0.0.1, devices: 0-1}]\nflags:\n  enable_acl_graph: true\n",
                    encoding="utf-8")
    run_dir = tmp_path / "run"
    assert main(["up", str(path), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    # The profile alone is fine for the guide's commit; the binary (a v0.8.0) has renamed the flag.
    assert "error: flags.enable_acl_graph: renamed enable_graph in v0.8.0; the binary" in err
    assert not run_dir.exists()


def test_rank_detail_defaults_come_from_the_cached_helpxml_of_a_relative_binary(tmp_path):
    from xllm_tui.binary_flags import default_cache_dir, flag_defaults_for

    binary, _ = fake_xllm(tmp_path, "v0.8.0")
    read_binary_flags(str(binary), cache_dir=default_cache_dir())  # what validate leaves behind
    defaults, origin = flag_defaults_for(["numactl", "-C", "0-11", "./xllm", "--port=1"], {}, str(tmp_path))
    assert origin == f"{binary} --helpxml" and defaults["enable_graph"] == "false"
    # Not cached (never validated): the table of the release the simulator imitates, else the guide's.
    defaults, origin = flag_defaults_for(["python3", "-m", "xllm_tui.sim.xllm"], {"XLLM_SIM_XLLM_VERSION": "0.9"})
    assert origin == "the table of xllm v0.9.1" and "max_tokens_for_graph_mode" in defaults
