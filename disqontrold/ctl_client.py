"""The client side of the control socket, used by `disqontrolctl`."""
from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from disqontrol_client.errors import DisqontrolError

REPLY_TIMEOUT = 30.0  # s: the master answers from its loop; a status is quick
RECV_CHUNK = 65536
REPLY_SNIPPET = 80  # bytes of an unreadable reply quoted in the error


class MasterUnreachable(DisqontrolError):
    """No master answers on the control socket (exit code 3)."""

    exit_code = 3


class MasterRefused(DisqontrolError):
    """The master answered ``{"ok": false}``; the message is its error."""

    exit_code = 1


def request(path: Path, cmd: str, timeout: float = REPLY_TIMEOUT, **fields: Any) -> dict[str, Any]:
    """Send one request and return the master's reply (``ok`` true).

    Whatever goes wrong on the way (no socket, a refused or reset connection,
    a timeout, a reply that is not a JSON object) is a MasterUnreachable with
    one line naming the socket: disqontrolctl never shows a traceback."""
    data = _exchange(path, cmd, json.dumps({"cmd": cmd, **fields}).encode() + b"\n", timeout)
    if not data:
        raise MasterUnreachable(f"the master on {path} closed the connection without answering {cmd!r}")
    reply = parse_reply(data, path, cmd)
    if not reply.get("ok"):
        raise MasterRefused(str(reply.get("error", reply)))
    return reply


def _exchange(path: Path, cmd: str, line: bytes, timeout: float) -> bytes:
    """Write one request line, read one reply line (b"" if closed unanswered)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(line)
            data = bytearray()
            while not data.endswith(b"\n"):
                chunk = sock.recv(RECV_CHUNK)
                if not chunk:
                    break
                data += chunk
            return bytes(data)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise MasterUnreachable(
            f"no master is running: cannot connect to control socket {path} ({exc.strerror}); start it "
            "(systemctl start disqontrold, or disqontrold --config P), or name the running one's config "
            "with --config or its socket with --socket"
        ) from None
    except socket.timeout:
        raise MasterUnreachable(f"the master on {path} did not answer {cmd!r} within {timeout:g} s") from None
    except PermissionError:
        raise MasterUnreachable(
            f"permission denied on control socket {path}: run as the daemon's user or a member of control_socket_group"
        ) from None
    except OSError as exc:  # reset, broken pipe, not a socket, path too long, ...
        raise MasterUnreachable(
            f"talking to the master on control socket {path} failed during {cmd!r}: {exc.strerror or exc}"
        ) from None


def parse_reply(data: bytes, path: Path, cmd: str) -> dict[str, Any]:
    """The reply line as a JSON object; MasterUnreachable (not our master's
    protocol) otherwise."""
    try:
        reply = json.loads(data)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise MasterUnreachable(
            f"the control socket {path} answered {cmd!r} with something that is not JSON "
            f"({exc}): {bytes(data[:REPLY_SNIPPET])!r}"
        ) from None
    if not isinstance(reply, dict):
        raise MasterUnreachable(
            f"the control socket {path} answered {cmd!r} with {type(reply).__name__} JSON, "
            "not an object; is a disqontrold master listening there?"
        )
    return reply
