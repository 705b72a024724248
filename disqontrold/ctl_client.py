"""The client side of the control socket, used by `disqontrolctl`."""
from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from disqontrol_client.errors import DisqontrolError

REPLY_TIMEOUT = 30.0  # s: the master answers from its loop; a status is quick
RECV_CHUNK = 65536


class MasterUnreachable(DisqontrolError):
    """No master answers on the control socket (exit code 3)."""

    exit_code = 3


class MasterRefused(DisqontrolError):
    """The master answered ``{"ok": false}``; the message is its error."""

    exit_code = 1


def request(path: Path, cmd: str, timeout: float = REPLY_TIMEOUT, **fields: Any) -> dict[str, Any]:
    """Send one request and return the master's reply (``ok`` true)."""
    line = json.dumps({"cmd": cmd, **fields}).encode() + b"\n"
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
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise MasterUnreachable(f"no master is running: cannot connect to control socket {path} ({exc.strerror})") from None
    except socket.timeout:
        raise MasterUnreachable(f"the master on {path} did not answer {cmd!r} within {timeout:g} s") from None
    except PermissionError:
        raise MasterUnreachable(
            f"permission denied on control socket {path}: run as the daemon's user or a member of control_socket_group"
        ) from None
    if not data:
        raise MasterUnreachable(f"the master on {path} closed the connection without answering {cmd!r}")
    reply = json.loads(data)
    if not reply.get("ok"):
        raise MasterRefused(str(reply.get("error", reply)))
    return reply
