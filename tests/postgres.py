"""A throwaway PostgreSQL server for the tests: Debian's ``postgresql`` binaries, a new cluster in
a temporary folder, on a free loopback port, with a password (scram-sha-256), stopped at the end.

PostgreSQL refuses to run as root: when the tests run as root (CI in a container), the cluster
is made and run as the ``postgres`` user the Debian package creates, in a folder that user owns.
Without the binaries the tests that need a server are skipped on a developer's machine and fail
in CI (``CI`` set), like the browser tests without Chromium.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

USER = "detector"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def find_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """``with PostgresServer() as server: server.url(schema=...)``."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.password = "pw-" + secrets.token_urlsafe(12)
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="detector-pg-"))
        self.data = self.base / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no postgres user to run "
                                   "PostgreSQL as (apt-get install postgresql creates it)") from None
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._schemas = 0

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=120,
                       cwd=self.base)

    def running(self) -> bool:
        if not self.data.exists():
            return False
        status = subprocess.run([*self._as, str(self.bindir / "pg_ctl"), "-D", str(self.data),
                                 "status"], capture_output=True, timeout=60, cwd=self.base)
        return status.returncode == 0

    def start(self) -> PostgresServer:
        """Start the server (making the cluster the first time); nothing when it runs."""
        if self.running():
            return self
        if not self.data.exists():
            pwfile = self.base / "pw"
            pwfile.write_text(self.password + "\n")
            if self._as:
                owner = pwd.getpwnam("postgres")
                os.chown(pwfile, owner.pw_uid, owner.pw_gid)
            self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER,
                      "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                      "--no-sync", "--no-instructions")
        # No durability needed by a throwaway server: fsync off makes it quick.
        options = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1"
                   " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                   " -c max_connections=200")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options,
                  "-l", str(self.base / "log"), "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        subprocess.run([*self._as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode,
                        "-w", "stop"], capture_output=True, timeout=120, cwd=self.base)

    def url(self, *, database: str = "postgres", schema: str | None = None,
            password: str | None = None) -> str:
        secret = urllib.parse.quote(self.password if password is None else password, safe="")
        url = f"postgresql://{USER}:{secret}@127.0.0.1:{self.port}/{database}"
        if schema is not None:
            url += "?options=" + urllib.parse.quote(f"-csearch_path={schema}", safe="")
        return url

    def new_schema(self) -> str:
        """A URL whose tables land in a schema of their own (a clean store per test)."""
        import psycopg

        self._schemas += 1
        name = f"t{os.getpid()}_{self._schemas}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return self.url(schema=name)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
