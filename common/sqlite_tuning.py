"""SQLite's memory statistics off for the whole process, before it opens a database.

With them on (SQLite's default, and Debian's build), every allocation SQLite makes takes
one process-wide mutex to count itself. Reads on several threads at once then queue on
that mutex instead of running side by side: a month report's five reads, each on its own
thread, used 1.5 times the CPU they use one after another, and one of them alone ran 3
times slower beside a copy of itself on another thread (0.23 -> 0.65 s), against no
slowdown at all in two processes. SQLite recommends building without them
(https://www.sqlite.org/compile.html, SQLITE_DEFAULT_MEMSTATUS=0; Node.js and
better-sqlite3 build their SQLite so); Python's sqlite3
module has no switch for it, so this calls `sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0)`
in the very library that module uses. Nothing of ours reads the statistics
(`sqlite3_memory_used`, `sqlite3_status`), and nothing sets a soft heap limit, the one
feature that needs them.

`sqlite3_config` only works while SQLite is shut down, and shutting it down is only safe
with no database open. So this runs once per process, from the imports of the modules that
open databases (api.store, the agent's buffer), when nothing else can have opened one yet,
and it changes nothing if one is open all the same.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading

log = logging.getLogger("patrol.sqlite")

_SQLITE_OK = 0
_SQLITE_CONFIG_MEMSTATUS = 9
_lock = threading.Lock()
_off: bool | None = None
"""Whether they are off; None until the first call."""


def without_memory_statistics() -> bool:
    """Turn SQLite's memory statistics off in this process, the first time it is called;
    whether they are off.

    Left on, with a debug line, where it cannot be done safely: the sqlite3 module's
    library is not reachable by its symbols (a static build), the platform passes
    variadic arguments in a way ctypes does not (macOS on ARM), or memory is already in
    use by SQLite (a database is open: shutting SQLite down under it is undefined)."""
    global _off
    with _lock:
        if _off is None:
            _off = _switch_off()
        return _off


def _switch_off() -> bool:
    if sys.platform == "darwin":
        log.debug("SQLite memory statistics left on: variadic calls through ctypes")
        return False
    try:
        import _sqlite3

        # the symbols through the module's own handle: the library it is linked to
        library = ctypes.CDLL(_sqlite3.__file__)
        used, shutdown = library.sqlite3_memory_used, library.sqlite3_shutdown
        config, initialize = library.sqlite3_config, library.sqlite3_initialize
    except (ImportError, OSError, AttributeError) as error:
        log.debug("SQLite memory statistics left on: %s", error)
        return False
    used.restype = ctypes.c_int64
    if used() != 0:  # a connection (or a statement, a blob) is alive somewhere
        log.debug("SQLite memory statistics left on: a database is already open")
        return False
    if shutdown() != _SQLITE_OK:
        return False
    done = config(ctypes.c_int(_SQLITE_CONFIG_MEMSTATUS), ctypes.c_int(0)) == _SQLITE_OK
    if initialize() != _SQLITE_OK:  # sqlite3_open would initialize it again anyway
        log.warning("SQLite did not initialize again after its memory statistics were "
                    "turned off; its first connection will")
    return done
