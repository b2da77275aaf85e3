"""A recording SQLite VFS for power-loss tests: what was on stable storage at any moment.

It wraps the default VFS inside the libsqlite3 the ``sqlite3`` module is linked against (the same
shared library, loaded again by ctypes) and becomes the default, so every connection the code under
test opens goes through it. Each ``xSync`` snapshots the synced file's bytes and each ``xDelete``
records the deletion; ``os.fsync`` is wrapped too, for files written from Python (the spool's
sidecar via ``write_atomic``). ``cut(step)`` then rewrites the directory to the state a power cut
before ``step`` leaves: every file as of its last sync before it, unsynced writes lost in full.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import stat
from collections.abc import Callable
from pathlib import Path

_lib_name = ctypes.util.find_library("sqlite3") or "libsqlite3.so.0"
_lib = ctypes.CDLL(_lib_name)

_i64 = ctypes.c_int64
_p = ctypes.c_void_p


class _File(ctypes.Structure):
    _fields_ = [("pMethods", _p)]


_xClose = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_File))
_xSync = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_File), ctypes.c_int)


class _IoMethods(ctypes.Structure):
    _fields_ = [
        ("iVersion", ctypes.c_int),
        ("xClose", _xClose),
        ("xRead", _p),
        ("xWrite", _p),
        ("xTruncate", _p),
        ("xSync", _xSync),
        ("xFileSize", _p),
        ("xLock", _p),
        ("xUnlock", _p),
        ("xCheckReservedLock", _p),
        ("xFileControl", _p),
        ("xSectorSize", _p),
        ("xDeviceCharacteristics", _p),
        ("xShmMap", _p),
        ("xShmLock", _p),
        ("xShmBarrier", _p),
        ("xShmUnmap", _p),
        ("xFetch", _p),
        ("xUnfetch", _p),
    ]


class _Vfs(ctypes.Structure):
    pass


# The name is passed as a raw pointer: SQLite keeps using it for the file's lifetime (the -shm name is
# derived from it), so the wrapper must hand the very same buffer on, never a temporary copy.
_xOpen = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(_Vfs), ctypes.c_void_p, ctypes.POINTER(_File), ctypes.c_int,
    ctypes.POINTER(ctypes.c_int),
)
_xDelete = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_Vfs), ctypes.c_char_p, ctypes.c_int)

_Vfs._fields_ = [
    ("iVersion", ctypes.c_int),
    ("szOsFile", ctypes.c_int),
    ("mxPathname", ctypes.c_int),
    ("pNext", _p),
    ("zName", ctypes.c_char_p),
    ("pAppData", _p),
    ("xOpen", _xOpen),
    ("xDelete", _xDelete),
    ("xAccess", _p),
    ("xFullPathname", _p),
    ("xDlOpen", _p),
    ("xDlError", _p),
    ("xDlSym", _p),
    ("xDlClose", _p),
    ("xRandomness", _p),
    ("xSleep", _p),
    ("xCurrentTime", _p),
    ("xGetLastError", _p),
    ("xCurrentTimeInt64", _p),
    ("xSetSystemCall", _p),
    ("xGetSystemCall", _p),
    ("xNextSystemCall", _p),
]

_lib.sqlite3_vfs_find.restype = ctypes.POINTER(_Vfs)
_lib.sqlite3_vfs_find.argtypes = [ctypes.c_char_p]
_lib.sqlite3_vfs_register.argtypes = [ctypes.POINTER(_Vfs), ctypes.c_int]
_lib.sqlite3_vfs_unregister.argtypes = [ctypes.POINTER(_Vfs)]

Durable = bytes | None  # None: the file does not exist


class SyncRecorder:
    """Records, per file under ``directory``, the bytes on stable storage after each sync."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.step = 0
        self._events: list[tuple[int, str, Durable]] = []  # (step, path, bytes after a sync | None)
        self._start: dict[str, bytes] = {}
        self._paths: dict[int, str] = {}  # sqlite3_file address -> path
        self._methods: dict[int, tuple[ctypes.Structure, _IoMethods]] = {}
        self._keep: list[object] = []
        self._real_fsync = os.fsync
        self._real_fdatasync = os.fdatasync

    # --- install ------------------------------------------------------------------------------
    def __enter__(self) -> SyncRecorder:
        self.directory.mkdir(parents=True, exist_ok=True)
        base = _lib.sqlite3_vfs_find(None)
        self._base = base
        orig = base.contents
        vfs = _Vfs()
        ctypes.memmove(ctypes.byref(vfs), base, ctypes.sizeof(_Vfs))  # copy every field, override some
        vfs.zName = b"syncrec"
        vfs.pNext = None
        orig_open, orig_delete = orig.xOpen, orig.xDelete

        def x_open(_vfs, name, file, flags, out_flags):  # type: ignore[no-untyped-def]
            rc = orig_open(base, name, file, flags, out_flags)
            if rc == 0 and name and file.contents.pMethods:
                self._wrap(file, ctypes.string_at(name).decode())
            return rc

        def x_delete(_vfs, name, sync_dir):  # type: ignore[no-untyped-def]
            rc = orig_delete(base, name, sync_dir)
            if rc == 0:
                self._record(name.decode(), None)
            return rc

        vfs.xOpen = _xOpen(x_open)
        vfs.xDelete = _xDelete(x_delete)
        self._keep += [vfs, vfs.xOpen, vfs.xDelete]
        self._vfs = vfs
        assert _lib.sqlite3_vfs_register(ctypes.byref(vfs), 1) == 0
        os.fsync = self._fsync  # type: ignore[assignment]
        os.fdatasync = self._fdatasync  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        os.fsync = self._real_fsync  # type: ignore[assignment]
        os.fdatasync = self._real_fdatasync  # type: ignore[assignment]
        _lib.sqlite3_vfs_register(self._base, 1)  # the original default again
        _lib.sqlite3_vfs_unregister(ctypes.byref(self._vfs))

    def _wrap(self, file: ctypes._Pointer, path: str) -> None:  # type: ignore[type-arg]
        orig_ptr = file.contents.pMethods
        if orig_ptr not in self._methods:
            orig = _IoMethods.from_address(orig_ptr)
            ours = _IoMethods()
            ctypes.memmove(ctypes.byref(ours), orig_ptr, ctypes.sizeof(_IoMethods))
            orig_sync, orig_close = orig.xSync, orig.xClose

            def x_sync(f, flags):  # type: ignore[no-untyped-def]
                rc = orig_sync(f, flags)
                name = self._paths.get(ctypes.addressof(f.contents))
                if rc == 0 and name is not None:
                    self._snapshot(name)
                return rc

            def x_close(f):  # type: ignore[no-untyped-def]
                self._paths.pop(ctypes.addressof(f.contents), None)
                return orig_close(f)

            ours.xSync = _xSync(x_sync)
            ours.xClose = _xClose(x_close)
            self._keep += [ours.xSync, ours.xClose]
            self._methods[orig_ptr] = (orig, ours)
        self._paths[ctypes.addressof(file.contents)] = path
        file.contents.pMethods = ctypes.addressof(self._methods[orig_ptr][1])

    def _fdatasync(self, fd: int) -> None:
        self._real_fdatasync(fd)
        self._synced(fd)

    def _fsync(self, fd: int) -> None:
        self._real_fsync(fd)
        self._synced(fd)

    def _synced(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            if Path(path) == self.directory.resolve():
                # Directory entries are durable now: a file renamed into place (the sidecar) counts
                # with its current bytes (write_atomic synced them before the rename). Other files
                # count from their own syncs only.
                for p in self.directory.iterdir():
                    if p.is_file() and p.suffix == ".json":
                        self._snapshot(str(p))
        elif not Path(path).name.startswith("."):  # write_atomic's temp file counts at the rename
            self._snapshot(path)

    def _snapshot(self, path: str) -> None:
        try:
            data: Durable = Path(path).read_bytes()
        except FileNotFoundError:
            data = None
        self._record(path, data)

    def _record(self, path: str, data: Durable) -> None:
        if Path(path).parent.resolve() == self.directory.resolve():
            self._events.append((self.step, str(Path(path).resolve()), data))

    # --- the harness ----------------------------------------------------------------------------
    def begin_segment(self) -> None:
        """A boot starts: what is on disk now is the durable starting point."""
        self.step = 0
        self._events.clear()
        self._start = {str(p.resolve()): p.read_bytes() for p in self.directory.iterdir() if p.is_file()}

    def next_step(self) -> None:
        self.step += 1

    def cut(self, before_step: int, crash: Callable[[], object]) -> None:
        """Power is lost before ``before_step``: ``crash`` drops the process's handles, then every
        file goes back to its last synced state (files never synced are lost, except the spool's
        database file, which ``precreate`` made durable empty)."""
        self.step = 1 << 60  # whatever the crash writes happens "after" the cut
        crash()
        durable: dict[str, Durable] = dict(self._start)
        for step, path, data in self._events:
            if step < before_step:
                durable[path] = data
        for p in list(self.directory.iterdir()):
            key = str(p.resolve())
            if key not in durable:
                keep_empty = p.suffix == ".db" and not p.name.startswith(".")
                if keep_empty:
                    p.write_bytes(b"")
                else:
                    p.unlink()
        for path, data in durable.items():
            if data is None:
                Path(path).unlink(missing_ok=True)
            else:
                Path(path).write_bytes(data)
        self._events.clear()

