"""The C library, for the few calls the standard library lacks (inotify, strcasestr, mallopt)."""

from __future__ import annotations

import functools


def libc():
    """The process's C library (a ctypes.CDLL with use_errno), or OSError if there is none.

    Loaded by its glibc soname: ctypes.util.find_library runs /sbin/ldconfig -p, tens of milliseconds that
    every start of the supervisor paid twice before its first rank was spawned. The outcome is kept, a failure
    too: a view without inotify asks again at every rank switch."""
    found = _load()
    if isinstance(found, OSError):
        raise OSError(*found.args)  # a new one: raised again, the kept one would gather every caller's frames
    return found


@functools.cache
def _load():
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        import ctypes.util  # another C library (musl): its name has to be searched for

        name = ctypes.util.find_library("c")
        if name is None:
            return OSError("no C library found")
        try:
            return ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            return e
