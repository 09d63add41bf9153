"""Start Azurite from node_modules on loopback ports, with a throwaway location or a data folder of its own.

One Azurite per data folder: two Azurites on one folder each keep their own view of it in
memory, so what one writes is 404 to the other and can be lost at a restart. The process
that starts Azurite on a folder holds ``<folder>/stack.lock`` (an OS lock, released even if
that process is killed) and writes into it who it is and where its Azurite listens; another
stack on the same folder finds it there (:class:`FolderInUse`) and reuses that Azurite, or
refuses, naming the holder.

    python -m local.azurite [--data .azurite]   Azurite alone, on its usual ports, e.g. for `func start`
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from local.servers import free_port, stop_process

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here; one stack per folder is then up to the user
    fcntl = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's published development key (documented by Microsoft; not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class Azurite:
    """A running Azurite: its endpoints, connection string and process."""

    blob_port: int
    queue_port: int
    process: subprocess.Popen[bytes] | None = None  # None: another stack's Azurite, reused (never stopped here)
    location: Path | None = None
    _own_location: bool = field(default=False, repr=False)
    lock: FolderLock | None = field(default=None, repr=False)

    @property
    def blob_url(self) -> str:
        return f"http://127.0.0.1:{self.blob_port}/{ACCOUNT}"

    @property
    def queue_url(self) -> str:
        return f"http://127.0.0.1:{self.queue_port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_url};QueueEndpoint={self.queue_url};"
        )

    def stop(self) -> None:
        """Stop the process this started (a reused Azurite is left running), then free its folder."""
        if self.process:
            stop_process(self.process)
        if self.lock:
            self.lock.release()
        if self._own_location and self.location:
            shutil.rmtree(self.location, ignore_errors=True)


LOCK_NAME = "stack.lock"


class FolderInUse(RuntimeError):
    """Another process holds the data folder: ``holder`` is what it wrote into the lock file."""

    def __init__(self, location: Path, holder: dict[str, Any]) -> None:
        self.location = location
        self.holder = holder
        super().__init__(f"Azurite's data folder {location} is in use by {describe_holder(holder)}")

    def answering(self) -> bool:
        """True when the holder's Azurite answers on both of its ports."""
        ports = [self.holder.get("blob_port"), self.holder.get("queue_port")]
        return all(isinstance(p, int) and _listening(p) for p in ports)

    def reuse(self) -> Azurite:
        """The holder's Azurite, to use without owning it; FolderInUse again when it does not answer."""
        if not self.answering():
            raise self
        return Azurite(int(self.holder["blob_port"]), int(self.holder["queue_port"]), None, self.location)


def describe_holder(holder: dict[str, Any]) -> str:
    """"pid 1234 (python -m local.stack serve), API http://..., Azurite blob port 10000, queue port 10001"."""
    if not holder:
        return "another process (it has not said which yet)"
    parts = [f"pid {holder.get('pid', '?')} ({holder.get('command', '?')})"]
    if holder.get("api"):
        parts.append(f"API {holder['api']}")
    parts.append(f"Azurite blob port {holder.get('blob_port', '?')}, queue port {holder.get('queue_port', '?')}")
    if holder.get("started"):
        parts.append(f"since {holder['started']}")
    return ", ".join(parts)


class FolderLock:
    """The lock on a data folder, held while this process's Azurite serves it; the file says who holds it."""

    def __init__(self, location: Path, handle: IO[str]) -> None:
        self.path = location / LOCK_NAME
        self._handle: IO[str] | None = handle
        self.holder: dict[str, Any] = {}

    @classmethod
    def acquire(cls, location: Path) -> FolderLock:
        """Take the folder, or raise FolderInUse with what its holder wrote."""
        location.mkdir(parents=True, exist_ok=True)
        handle = open(location / LOCK_NAME, "a+", encoding="utf-8")  # held (and so the lock) until release()
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                text = handle.read()
                handle.close()
                raise FolderInUse(location, _holder(text)) from None
        return cls(location, handle)

    def describe(self, **facts: Any) -> None:
        """Write (more of) who holds the folder, for a stack that finds it taken."""
        self.holder.update(facts)
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()
            self._handle.write(json.dumps(self.holder))
            self._handle.flush()

    def release(self) -> None:
        """Free the folder (the file is emptied, so a reader sees nobody holds it)."""
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.seek(0)
                self._handle.truncate()
            self._handle.close()  # closing drops the lock
            self._handle = None


def _holder(text: str) -> dict[str, Any]:
    """What the holder wrote, or {} while it has not written yet (or wrote something else)."""
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _die_with_parent() -> None:
    """In the child, before exec (Linux): get SIGTERM when the process that started it dies, even by SIGKILL."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def azurite_binary() -> str:
    path = ROOT / "node_modules" / ".bin" / "azurite"
    if path.exists():
        return str(path)
    found = shutil.which("azurite")
    if found:
        return found
    raise RuntimeError("Azurite is not installed: run `python3 dev.py test` (it runs npm ci) or `npm ci`")


def start_azurite(
    location: Path | None = None,
    extra_args: list[str] | None = None,
    ports: tuple[int, int] | None = None,
    *,
    command: str = "",
    die_with_parent: bool = False,
) -> Azurite:
    """Start blob and queue services of Azurite on loopback (``ports`` or free ones); wait until both listen.

    A given ``location`` is locked for as long as this Azurite runs (FolderInUse if another process
    holds it); ``command`` says who holds it. ``die_with_parent`` (Linux): Azurite goes when the
    thread that started it does, even when that process is killed; for the local stack's main thread.
    """
    own = location is None
    loc = Path(tempfile.mkdtemp(prefix="azurite-")) if location is None else location
    lock = FolderLock.acquire(loc)
    try:
        blob_port, queue_port = ports or (free_port(), free_port())
        lock.describe(pid=os.getpid(), command=command or " ".join(sys.argv), blob_port=blob_port, queue_port=queue_port,
                      started=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))  # fmt: skip
        proc = _spawn(loc, blob_port, queue_port, extra_args or [], die_with_parent)
    except BaseException:
        lock.release()
        raise
    azurite = Azurite(blob_port, queue_port, proc, loc, own, lock)
    try:
        _wait_listening(azurite, proc, loc)
    except BaseException:
        azurite.stop()
        raise
    return azurite


def _spawn(loc: Path, blob_port: int, queue_port: int, extra_args: list[str], die_with_parent: bool) -> subprocess.Popen[bytes]:
    args = [
        azurite_binary(),
        "--silent",
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--loose",
        "--location", str(loc),
        "--blobHost", "127.0.0.1", "--blobPort", str(blob_port),
        "--queueHost", "127.0.0.1", "--queuePort", str(queue_port),
        "--tableHost", "127.0.0.1", "--tablePort", str(free_port()),
        *extra_args,
    ]  # fmt: skip
    with open(loc / "azurite.log", "ab") as log:  # the child keeps its own copy of the descriptor
        preexec = _die_with_parent if die_with_parent and sys.platform == "linux" else None
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec)


def _wait_listening(azurite: Azurite, proc: subprocess.Popen[bytes], loc: Path) -> None:
    deadline = time.monotonic() + 60
    for port in (azurite.blob_port, azurite.queue_port):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Azurite exited with {proc.returncode}: see {loc / 'azurite.log'}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("Azurite did not start within 60 s") from None
                time.sleep(0.1)


USUAL_PORTS = (10000, 10001)


def main(argv: list[str] | None = None) -> int:
    """``python -m local.azurite``: Azurite alone on its usual ports (for `func start`), until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m local.azurite", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / ".azurite"), help="data folder (default: .azurite/, shared with dev.py run and serve)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", signal.SIGTERM)):
        signal.signal(sig, lambda *_: stop.set())
    try:
        azurite = start_azurite(Path(args.data), ports=USUAL_PORTS, command="python -m local.azurite", die_with_parent=True)
    except FolderInUse as busy:
        print(f"python -m local.azurite: {busy}; stop it first (or use its Azurite)", file=sys.stderr)
        return 1
    try:
        print(f"Azurite on blob port {azurite.blob_port}, queue port {azurite.queue_port}, data in {azurite.location}")
        print('AzureWebJobsStorage="UseDevelopmentStorage=true" (what local.settings.json uses) reaches it. Ctrl-C stops it.', flush=True)
        stop.wait()
    finally:
        azurite.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
