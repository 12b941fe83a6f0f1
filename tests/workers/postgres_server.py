"""A throw-away PostgreSQL server for tests: initdb in a temporary folder, listening on 127.0.0.1 only.

Found through ``initdb`` on PATH or Debian's ``/usr/lib/postgresql/*/bin``. PostgreSQL refuses to
run as root, so under root the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER = "qco"
PASSWORD = "qco-test-pw"
DATABASE = "qco"


@dataclass
class PostgresServer:
    bindir: Path
    datadir: Path
    port: int
    run_as: list[str]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        subprocess.run(
            [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def find_bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start() -> PostgresServer:
    """Start a server; raise ``RuntimeError`` with the reason when none can be started here."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("no PostgreSQL server binaries (install Debian's postgresql package)")
    as_root = os.geteuid() == 0
    # As root the server runs as the postgres user, which cannot enter a test's private TMPDIR (mode 0700,
    # owned by root): its folder goes in the shared temporary directory then, and is removed on stop.
    root = Path(tempfile.mkdtemp(prefix="qco-pg-", dir="/tmp" if as_root else None))
    datadir = root / "data"
    run_as: list[str] = []
    if as_root:
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        root.chmod(0o700)
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD)
    if run_as:
        shutil.chown(pwfile, "postgres")
    init = subprocess.run(
        [
            *run_as,
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed: {init.stderr.strip().splitlines()[-1:]}")
    port = _free_port()
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=100 -c fsync=off"
    started = subprocess.run(
        [*run_as, str(bindir / "pg_ctl"), "-D", str(datadir), "-o", options, "-l", str(root / "log"), "-w", "start"],
        capture_output=True,
        text=True,
        check=False,
    )
    if started.returncode != 0:
        raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip() or started.stdout.strip()}")
    server = PostgresServer(bindir, datadir, port, run_as)
    created = subprocess.run(
        [*run_as, str(bindir / "createdb"), "-h", str(root), "-p", str(port), "-U", USER, DATABASE],
        capture_output=True,
        text=True,
        check=False,
    )
    if created.returncode != 0:
        server.stop()
        raise RuntimeError(f"createdb failed: {created.stderr.strip()}")
    return server


def create_database(server: PostgresServer, name: str) -> str:
    subprocess.run(
        [
            *server.run_as,
            str(server.bindir / "createdb"),
            "-h",
            str(server.datadir.parent),
            "-p",
            str(server.port),
            "-U",
            USER,
            name,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return server.url_for(name)
