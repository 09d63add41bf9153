#!/usr/bin/env python3
"""One entry point for people and CI: sets up what is missing, then runs the command.

    python3 dev.py run      start the local stack, generate an image (and a background job), show where they
                            are archived, stop; --latency S, --out DIR, --data DIR
    python3 dev.py serve    serve the local stack on http://127.0.0.1:7071 until Ctrl-C or SIGTERM;
                            --port P (default 7071), --latency S (simulated model seconds, default 2),
                            --data DIR (Azurite's data, default .azurite/), --azurite-ports usual|free
    python3 dev.py token    print a bearer token of the running local stack for a caller: --principal NAME
                            --roles Images.Caller[,Images.Operator] (the stack runs in entra mode, docs/callers.md)
    python3 dev.py test     run the test suite (starts Azurite and the simulator itself); tests marked
                            slow (the benchmark's smoke run) only with -m slow, or all with -m ""
    python3 dev.py lint     ruff and mypy
    python3 dev.py bench    run the benchmarks (see BENCHMARKS.md)

Needs only Python 3.11+ and Node.js 20+. Creates .venv (runtime + dev packages),
.venv-checkov (checkov pins versions that clash with pytest) and node_modules
(Azurite), and reinstalls only when a requirements file or package.json changes.
DEV_PY_SKIP_SETUP=1 uses them as they are (offline machines, prepared CI images).

SIGTERM, SIGINT and SIGHUP are passed on to the command, and dev.py waits for it, so a
supervisor that stops dev.py stops the whole stack.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
CHECKOV_VENV = ROOT / ".venv-checkov"
BIN = "Scripts" if os.name == "nt" else "bin"


def _python(env_dir: Path) -> Path:
    return env_dir / BIN / ("python.exe" if os.name == "nt" else "python")


def _ensure_venv(env_dir: Path, requirements: list[str]) -> None:
    """Create env_dir and install requirements unless they are unchanged since the last install."""
    digest = hashlib.sha256()
    for name in requirements:
        digest.update((ROOT / name).read_bytes())
    if env_dir.name == ".venv":
        digest.update((ROOT / "requirements.txt").read_bytes())  # -r from requirements-dev.txt
    stamp = env_dir / ".dev-stamp"
    if stamp.exists() and stamp.read_text() == digest.hexdigest() and _python(env_dir).exists():
        return
    if not _python(env_dir).exists():
        print(f"dev.py: creating {env_dir.name}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    print(f"dev.py: installing {', '.join(requirements)} into {env_dir.name}", flush=True)
    pip = [str(_python(env_dir)), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", *[arg for r in requirements for arg in ("-r", str(ROOT / r))]], check=True)
    stamp.write_text(digest.hexdigest())


def _ensure_node_modules() -> None:
    """Install Azurite from npm (package.json / package-lock.json) when it is missing or stale."""
    azurite = ROOT / "node_modules" / ".bin" / "azurite"
    lock = ROOT / "package-lock.json"
    stamp = ROOT / "node_modules" / ".dev-stamp"
    digest = hashlib.sha256((ROOT / "package.json").read_bytes() + (lock.read_bytes() if lock.exists() else b"")).hexdigest()
    if azurite.exists() and stamp.exists() and stamp.read_text() == digest:
        return
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("dev.py: npm not found; install Node.js 20+ (it brings npm) to run Azurite")
    print("dev.py: installing Azurite from npm", flush=True)
    subprocess.run([npm, "ci" if lock.exists() else "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ROOT, check=True)
    stamp.write_text(digest)


def pytest_args(args: list[str]) -> list[str]:
    """pytest's arguments for ``dev.py test``: without the slow tests unless ``-m`` chooses (CI: ``-m slow``)."""
    chosen = any(arg == "-m" or (arg.startswith("-m") and not arg.startswith("--")) for arg in args)
    return args if chosen else ["-m", "not slow", *args]


FORWARDED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))


def _die_with_parent() -> None:
    """In the child, before exec (Linux): get SIGTERM if dev.py dies without passing a signal on (SIGKILL)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _in_terminal_foreground() -> bool:
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


def run_forwarding_signals(cmd: list[str], env: dict[str, str]) -> int:
    """Run ``cmd``, pass SIGTERM/SIGINT/SIGHUP on to it, and wait until it has ended; its exit code (128+n for signal n)."""
    preexec = _die_with_parent if sys.platform == "linux" else None
    child = subprocess.Popen(cmd, cwd=ROOT, env=env, preexec_fn=preexec)
    # Ctrl-C in a terminal reaches the child as well (the foreground process group): passing it on
    # too would interrupt the child's clean-up with a second one.
    terminal_delivers_sigint = _in_terminal_foreground()

    def forward(signum: int, _: Any) -> None:
        if signum == signal.SIGINT and terminal_delivers_sigint:
            return
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        code = child.wait()  # a handled signal does not end the wait (PEP 475): the child decides when it is done
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036  # dev.py is run by whatever python3 is on PATH
        sys.exit("dev.py: Python 3.11 or newer is needed")
    command, args = (argv[0], argv[1:]) if argv else ("help", [])
    if command not in ("run", "test", "serve", "token", "bench", "lint"):
        print(__doc__)
        return 0 if command in ("help", "-h", "--help") else 2
    if os.environ.get("DEV_PY_SKIP_SETUP") != "1":
        _ensure_venv(VENV, ["requirements-dev.txt"])
        _ensure_node_modules()
        if command == "test":
            _ensure_venv(CHECKOV_VENV, ["requirements-checkov.txt"])
    python = str(_python(VENV))
    if command == "test" and os.environ.get("DEV_PY_SKIP_SETUP") != "1":
        # The gallery's browser tests drive Debian's chromium; install it where this user may (root or sudo).
        subprocess.run([python, "-m", "tests.browser"], cwd=ROOT, check=False)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    if command == "test":
        cmd = [python, "-m", "pytest", *pytest_args(args)]
    elif command == "lint":
        subprocess.run([python, "-m", "ruff", "check", "."], cwd=ROOT, check=False)
        cmd = [python, "-m", "mypy"]
    elif command == "bench":
        cmd = [python, "-m", "bench.run", *args]
    elif command == "token":
        cmd = [python, "-m", "local.token", *args]  # not the stack module: a token is asked for in every $(...)
    else:
        cmd = [python, "-m", "local.stack", command, *args]
    return run_forwarding_signals(cmd, env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
