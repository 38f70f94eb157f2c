"""The C library is loaded by its soname, without ctypes.util.find_library (which runs /sbin/ldconfig -p)."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest

from xllm_tui import libc as libc_module


@pytest.fixture(autouse=True)
def fresh_cache():
    libc_module._load.cache_clear()
    yield
    libc_module._load.cache_clear()


def test_libc_is_loaded_without_searching(monkeypatch):
    def no_search(name):
        raise AssertionError("find_library was called (it runs ldconfig)")

    monkeypatch.setattr(ctypes.util, "find_library", no_search)
    c = libc_module.libc()
    assert c.strlen(b"four") == 4
    assert libc_module.libc() is c  # loaded once


def test_another_c_library_is_searched_for(monkeypatch):
    real_cdll = ctypes.CDLL
    opened = []

    def cdll(name, *args, **kwargs):
        opened.append(name)
        if name == "libc.so.6":
            raise OSError("not glibc")
        return real_cdll("libc.so.6", *args, **kwargs)  # stands in for the C library that was found

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libc.musl-x86_64.so.1")
    assert libc_module.libc().strlen(b"ab") == 2
    assert opened == ["libc.so.6", "libc.musl-x86_64.so.1"]

    libc_module._load.cache_clear()
    searches = []
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: searches.append(name))
    for _ in range(3):  # the failure is kept: the search (ldconfig) runs once
        with pytest.raises(OSError, match="no C library"):
            libc_module.libc()
    assert searches == ["c"]


def test_a_kept_failure_is_raised_afresh_each_time(monkeypatch):
    """The one exception kept and raised again would gather every caller's frames into its traceback (a
    view without inotify asks at each rank switch), keeping them alive for the life of the process."""
    monkeypatch.setattr(ctypes, "CDLL", lambda name, *a, **k: (_ for _ in ()).throw(OSError("not glibc")))
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    raised = []
    for _ in range(3):
        with pytest.raises(OSError, match="no C library") as info:
            libc_module.libc()
        raised.append(info.value)
    assert raised[0] is not raised[2]
    assert len(list(_frames(raised[2].__traceback__))) == len(list(_frames(raised[0].__traceback__)))


def _frames(tb):
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next
