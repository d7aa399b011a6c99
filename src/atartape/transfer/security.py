"""Who may write through a receiver, and who can read the bytes: TLS and a one-time code.

By default a transfer runs over TLS 1.3 and both sides prove that they know a **code** that
the receiver printed (or was given): ``atartape receive`` prints it, the sender is started with
``--code CODE``. ``--insecure`` (``insecure=True``) on both sides turns all of it off: plain TCP,
no code, for trusted networks only.

The code
    16 symbols of Crockford's base32 in four groups (``7kqm-x2fd-9wpa-hr3t``): 80 random bits
    from :mod:`secrets`. Case, hyphens and spaces do not matter; ``i``, ``l`` and ``o`` read as
    ``1``, ``1`` and ``0``. Both sides stretch it into a key ``K = scrypt(code, N=2^14, r=8,
    p=1)`` (:func:`~atartape.format.wire.code_key`).

How a connection is opened
    1. The sender connects and sends the preamble line ``ATARTAPE-TRANSFER/2 tls``; the
       receiver answers with its own. A peer that is not an atartape receiver (an HTTP server,
       an SSH server, an older version) is told from its first bytes: the sender fails at once
       with :class:`~atartape.TransferProtocolError` and does not retry. A side never follows
       the other's mode: a plain sender and a TLS receiver (or the reverse) refuse each other
       with :class:`~atartape.TransferRefusedError` before any frame.
    2. TLS 1.3 handshake. The receiver's certificate is self-signed and made afresh by each
       receiver process (an ECDSA P-256 key that never touches a disk for longer than the
       loading takes, in a private temporary folder); the sender does not check it against
       any authority: it checks it with the code, in step 4.
    3. The receiver sends ``HELLO`` with a fresh 32-byte nonce ``Nr``. The sender answers
       ``AUTH`` with its own nonce ``Ns`` and ``Ps = HMAC(K, "sender" | sha256(cert) | Nr |
       Ns)``, ``cert`` being the certificate the sender saw in the handshake.
    4. The receiver computes the same over its own certificate. A wrong or missing proof is
       refused (a refusal of reason ``wrong-code`` and nothing else: not what the receiver
       holds, nor any other reason; :class:`~atartape.TransferRefusedError` on the sender, CLI
       exit 2): the receiver logs it and goes on waiting for the right sender; it has read
       nothing but the preamble and ``AUTH``, written nothing, and changed nothing on disk.
       That refusal is the one message a sender cannot authenticate (a receiver cannot prove
       anything to a sender whose code differs), so the sender reads any ``ERROR`` in place of
       ``WELCOME`` as "wrong code", in its own words (any other frame is a protocol error,
       and only a valid proof lets it go on): a forged refusal can stop a sender,
       as cutting the line can, but it can neither put words on the sender's screen ("run
       receive --force") nor pass for success. Every later refusal travels inside the
       authenticated TLS session.
       Otherwise it answers ``WELCOME`` with ``Pr = HMAC(K, "receiver" | sha256(cert) | Nr |
       Ns)``, which the sender checks over the certificate it saw, before it sends its offer.

What this protects, and against whom
    - *Someone who can reach the port* (the receiver listens on every address by default)
      cannot write: before its offer is even read, a sender must produce ``Ps``, which needs
      ``K``. Each guess costs a TCP connection and a TLS handshake; with 2^80 codes, online
      guessing is hopeless. The receiver does send ``HELLO`` to anyone, but ``HELLO`` is a
      random nonce: an attacker learns nothing that tests a guess of the code offline.
    - *A man in the middle* (who can read, drop and change traffic: a hostile network, a
      spoofed DNS name) cannot read or change the bytes: to see them he must end the sender's
      TLS session himself, with a certificate of his own, and then the sender's ``Ps`` covers
      *his* certificate: the real receiver refuses it (he cannot relay it), and he cannot make
      the ``Pr`` the sender expects for his certificate without ``K``. A sender that gets no
      valid ``Pr`` stops with :class:`~atartape.TransferRefusedError` ("not the receiver
      that printed the code") and has sent nothing but ``AUTH``. That is the certificate
      pinning: the code vouches for the one certificate the receiver holds (the construction
      of "tls-server-end-point" channel binding, RFC 5929). Once authenticated, TLS keeps the
      stream secret and whole; a changed byte breaks the TLS record, the connection drops, and
      the transfer resumes at the last byte received intact.
    - What a man in the middle *can* do: stop the transfer (drop packets), and collect one
      ``Ps`` bound to his own certificate, against which he can test guesses of the code
      offline. That is why the code has 80 bits and is stretched with scrypt (16 MiB of memory
      per guess): 2^79 guesses on average are out of anyone's reach, and the code is worthless
      once the transfer is complete.
    - The bytes on disk are not encrypted, and the tape's name, size and fingerprint are
      readable by whoever holds the code. The code itself is a password: whoever knows it can
      write through this receiver (only the tape it is receiving, once a sender was accepted)
      or read the stream by posing as the receiver. Do not pass it on a shared command line
      you do not trust (``ps`` shows arguments): the CLI also reads it from ``ATARTAPE_CODE``.
    - Not protected: a receiver or sender machine that is itself compromised; traffic
      analysis (sizes and timing); a code given to the wrong person.

Surviving a restart
    The receiver keeps the code it uses in ``OUT.part.code`` (mode 0600, replaced atomically,
    removed once ``OUT`` is complete), so a receiver restarted on the same ``OUT`` takes the
    same code (the CLI says so) and the same sender, retrying, is accepted again: the code,
    not the certificate, is what the sender checks, so a new certificate per process is fine.
    ``--code CODE`` on the receiver sets the code instead (it must be a well-formed code).
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import ssl
import tempfile
from dataclasses import dataclass

import anyio
import anyio.to_thread
from anyio.abc import ByteStream
from anyio.streams.tls import TLSAttribute, TLSStream

from .._engine.files import write_atomically
from .._extras import require
from ..errors import TransferProtocolError, TransferRefusedError
from ..format.wire import (
    CODE_BYTES,
    PREAMBLE_MAX,
    auth_proof,
    code_key,
    format_code,
    normalize_code,
    parse_preamble,
    preamble,
    preamble_prefix_ok,
    proof_matches,
)

__all__ = ["new_code", "saved_code"]

CODE_FILE_FORMAT = "atartape-transfer-code"


def new_code() -> str:
    """A fresh code: 80 random bits as 16 symbols in four groups, e.g. ``7kqm-x2fd-9wpa-hr3t``."""
    return format_code(secrets.token_bytes(CODE_BYTES))


def code_path(out_path: str) -> str:
    return out_path + ".part.code"


async def saved_code(out_path: str | os.PathLike[str]) -> str | None:
    """The code an interrupted :func:`~atartape.transfer.receive` into ``out_path`` used.

    ``None`` if there is none (no receive was started there, or it completed). Raises
    :class:`~atartape.TransferRefusedError` if the file holding it is damaged.
    """
    return await anyio.to_thread.run_sync(load_code, code_path(os.fspath(out_path)))


def load_code(path: str) -> str | None:
    """In a worker thread: the code kept at ``path``, or ``None`` if there is no such file."""
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
        if value.get("format") != CODE_FILE_FORMAT:
            raise ValueError("not an atartape transfer code file")
        return normalize_code(value["code"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TransferRefusedError(
            f"the code file {path} is unreadable ({exc}); remove it, or pass --code"
        ) from None


def store_code(path: str, code: str) -> None:
    """In a worker thread: keep ``code`` at ``path``, readable by this user only."""
    data = json.dumps({"format": CODE_FILE_FORMAT, "code": normalize_code(code)})
    write_atomically(path, data.encode(), mode=0o600)


# TLS ------------------------------------------------------------------------------------------


def _self_signed() -> tuple[bytes, bytes]:
    """A fresh ECDSA P-256 key and a self-signed certificate for it, both PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "atartape receiver")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def _server_context() -> tuple[ssl.SSLContext, bytes]:
    require(
        "cryptography",
        "transfer",
        "a transfer over TLS",
        hint="or use --insecure on a trusted network",
    )
    cert_pem, key_pem = _self_signed()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # ssl loads keys from files only: a private folder, removed as soon as they are loaded.
    with tempfile.TemporaryDirectory(prefix="atartape-tls-") as folder:
        cert_file, key_file = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
        for path, data in ((cert_file, cert_pem), (key_file, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        context.load_cert_chain(cert_file, key_file)
    return context, ssl.PEM_cert_to_DER_cert(cert_pem.decode())


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # The certificate is checked with the code (AUTH/WELCOME), not by an authority or a name.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True)
class Credentials:
    """What one side needs to open connections: TLS and the code's key, or neither."""

    key: bytes | None  # None: --insecure
    context: ssl.SSLContext | None
    certificate: bytes = b""  # the receiver's own certificate (DER)

    @property
    def mode(self) -> str:
        return "plain" if self.key is None else "tls"

    def proof(self, role: str, certificate: bytes, nonces: tuple[bytes, bytes]) -> bytes:
        assert self.key is not None
        return auth_proof(self.key, role, certificate, nonces)

    def check(
        self, role: str, certificate: bytes, nonces: tuple[bytes, bytes], given: bytes
    ) -> bool:
        return proof_matches(self.proof(role, certificate, nonces), given)


async def receiver_credentials(code: str | None) -> Credentials:
    """A fresh certificate and the code's key (worker threads); nothing if ``code`` is None."""
    if code is None:
        return Credentials(None, None)
    key = await anyio.to_thread.run_sync(code_key, code)
    context, certificate = await anyio.to_thread.run_sync(_server_context)
    return Credentials(key, context, certificate)


async def sender_credentials(code: str | None) -> Credentials:
    """The code's key and a TLS client context (worker threads); nothing if ``code`` is None."""
    if code is None:
        return Credentials(None, None)
    key = await anyio.to_thread.run_sync(code_key, code)
    return Credentials(key, await anyio.to_thread.run_sync(_client_context))


# Opening a channel: the preamble, then TLS ------------------------------------------------------


async def _read_preamble(stream: ByteStream) -> bytes:
    """The peer's preamble line, read byte by byte (nothing after it is consumed).

    Raises :class:`TransferProtocolError` as soon as the bytes cannot be a preamble, and
    :class:`anyio.EndOfStream` if the peer closes first.
    """
    line = b""
    while not line.endswith(b"\n"):
        line += await stream.receive(1)
        if not preamble_prefix_ok(line) or len(line) > PREAMBLE_MAX:
            more = b""
            with anyio.move_on_after(0.2):  # what else it sent at once, to show it
                more = await stream.receive(PREAMBLE_MAX)
            parse_preamble(line + more)  # raises, naming what was sent
            raise TransferProtocolError(f"it sent {line + more!r}, not a preamble")
    return line


async def open_channel(
    stream: ByteStream, credentials: Credentials, where: str
) -> tuple[ByteStream, bytes]:
    """Sender side: the preamble exchange, then TLS; returns the stream and the certificate.

    Raises :class:`TransferProtocolError` if the peer is not an atartape receiver of this
    version, :class:`TransferRefusedError` if its mode is not ours, and the stream's errors
    (:class:`OSError`, :class:`anyio.EndOfStream`...) if the connection fails.
    """
    await stream.send(preamble(credentials.mode))
    try:
        mode = parse_preamble(await _read_preamble(stream))
    except TransferProtocolError as exc:
        raise TransferProtocolError(
            f"the peer at {where} is not an atartape receiver: {exc}"
        ) from None
    if mode != credentials.mode:
        if mode == "tls":
            raise TransferRefusedError(
                f"the receiver at {where} requires TLS and its code: pass --code CODE "
                "(code=...) instead of --insecure"
            )
        raise TransferRefusedError(
            f"the receiver at {where} was started with --insecure (plain TCP); this sender has "
            "a code and does not send in the clear: pass --insecure to both, or neither"
        )
    if credentials.context is None:
        return stream, b""
    tls = await TLSStream.wrap(
        stream, server_side=False, ssl_context=credentials.context, standard_compatible=False
    )
    certificate = tls.extra(TLSAttribute.peer_certificate_binary)
    if not certificate:
        raise TransferProtocolError(f"the receiver at {where} showed no certificate")
    return tls, certificate


async def accept_channel(stream: ByteStream, credentials: Credentials) -> ByteStream:
    """Receiver side: the preamble exchange, then TLS.

    Raises :class:`TransferProtocolError` if the peer is not an atartape sender of this
    version, :class:`TransferRefusedError` if its mode is not ours (it is told ours first), and
    the stream's errors if the connection fails.
    """
    line = await _read_preamble(stream)
    try:
        mode = parse_preamble(line)
    except TransferProtocolError:
        # Another version of this protocol: say which one we speak, so that it can tell.
        await stream.send(preamble(credentials.mode))
        raise
    await stream.send(preamble(credentials.mode))
    if mode != credentials.mode:
        if credentials.mode == "tls":
            raise TransferRefusedError("a plain-TCP (--insecure) sender: this receiver has a code")
        raise TransferRefusedError("a TLS sender: this receiver was started with --insecure")
    if credentials.context is None:
        return stream
    return await TLSStream.wrap(
        stream, server_side=True, ssl_context=credentials.context, standard_compatible=False
    )
