"""Token auth for Ray clusters that this process starts itself (tests, benchmarks, scripts).

Ray 2.60 turns token auth on for new local clusters by default; ``ray.init()`` provisions a
token itself, but a ``ray.cluster_utils.Cluster`` started with ``RAY_AUTH_MODE=token`` and no
token waits for one until it times out. :func:`ensure_ray_auth` makes sure a token exists.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

__all__ = ["ensure_ray_auth"]


def ensure_ray_auth() -> None:
    """Turn token auth on and provide a token, unless ``RAY_AUTH_MODE=disabled`` is set.

    An existing token (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) is
    used as it is; otherwise a fresh random one is written to a private temporary file
    (mode 0600) and ``RAY_AUTH_TOKEN_PATH`` points to it, for this process and its children.
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    have = (os.environ.get("RAY_AUTH_TOKEN")
            or Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "/nonexistent")).is_file()
            or (Path.home() / ".ray" / "auth_token").is_file())
    if not have:
        path = Path(tempfile.mkdtemp(prefix="pf-ray-auth-")) / "auth_token"
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
