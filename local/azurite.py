"""Start Azurite from node_modules on loopback ports with a throwaway location."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from local.servers import free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's published development key (documented by Microsoft; not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class Azurite:
    """A running Azurite: its endpoints, connection string and process."""

    blob_port: int
    queue_port: int
    process: subprocess.Popen[bytes] | None = None
    location: Path | None = None
    _own_location: bool = field(default=False, repr=False)

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
        if self.process:
            stop_process(self.process)
        if self._own_location and self.location:
            shutil.rmtree(self.location, ignore_errors=True)


def azurite_binary() -> str:
    path = ROOT / "node_modules" / ".bin" / "azurite"
    if path.exists():
        return str(path)
    found = shutil.which("azurite")
    if found:
        return found
    raise RuntimeError("Azurite is not installed: run `python3 dev.py test` (it runs npm ci) or `npm ci`")


def start_azurite(location: Path | None = None, extra_args: list[str] | None = None, ports: tuple[int, int] | None = None) -> Azurite:
    """Start blob and queue services of Azurite on loopback (``ports`` or free ones); wait until both listen."""
    own = location is None
    loc = Path(tempfile.mkdtemp(prefix="azurite-")) if location is None else location
    loc.mkdir(parents=True, exist_ok=True)
    blob_port, queue_port = ports or (free_port(), free_port())
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
        *(extra_args or []),
    ]
    log = open(loc / "azurite.log", "wb")  # kept open for the child's lifetime
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    azurite = Azurite(blob_port, queue_port, proc, loc, own)
    deadline = time.monotonic() + 60
    for port in (blob_port, queue_port):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Azurite exited with {proc.returncode}: see {loc / 'azurite.log'}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    azurite.stop()
                    raise RuntimeError("Azurite did not start within 60 s") from None
                time.sleep(0.1)
    return azurite
