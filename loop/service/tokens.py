"""The service's secrets: the bearer token of the write API, the webhook secret that Label
Studio sends back in a header, and the password of the ML backend's HTTP basic auth (Label
Studio sends it on every call to ``/ml``). Given in the settings, or generated once into
``<home>/service.json`` (mode 600) and reused by every later start. Never printed: the object's
``repr`` masks them."""

from __future__ import annotations

import hmac
import json
import os
import secrets as _random
import stat
from dataclasses import dataclass, field
from pathlib import Path

from loop.errors import ConfigError

FILE_NAME = "service.json"
KEYS = ("api_token", "webhook_secret", "ml_password")
DEFAULT_ML_USER = "alloop"
_MIN_LENGTH = 16


@dataclass(frozen=True)
class ServiceSecrets:
    api_token: str = field(repr=False)
    webhook_secret: str = field(repr=False)
    ml_password: str = field(repr=False)
    ml_user: str = DEFAULT_ML_USER
    source: str = "settings"  # "settings" | the path of the file they were read from

    def __repr__(self) -> str:
        return (
            "ServiceSecrets(api_token='***', webhook_secret='***', ml_password='***', "
            f"ml_user={self.ml_user!r}, source={self.source!r})"
        )

    def token_ok(self, presented: str | None) -> bool:
        """Constant-time comparison with the API token."""
        return _same(presented, self.api_token)

    def webhook_ok(self, presented: str | None) -> bool:
        """Constant-time comparison with the webhook secret."""
        return _same(presented, self.webhook_secret)

    def ml_ok(self, user: str, password: str) -> bool:
        """Constant-time comparison of basic-auth credentials with the ML backend's."""
        user_ok = _same(user, self.ml_user)
        return user_ok & _same(password, self.ml_password)


def _same(presented: str | None, expected: str) -> bool:
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def _check(name: str, value: str, where: str) -> str:
    if not isinstance(value, str) or len(value) < _MIN_LENGTH or value != value.strip():
        raise ConfigError(
            f"service {name} from {where} must be a string of >= {_MIN_LENGTH} characters "
            f"without surrounding spaces (found one of {len(value) if isinstance(value, str) else type(value).__name__} characters).",
            f"set a long random value (python -c 'import secrets; print(secrets.token_urlsafe(32))') "
            f"or unset it to have one generated into <home>/{FILE_NAME}.",
        )
    return value


def load_or_create_secrets(
    home: Path,
    api_token: str | None = None,
    webhook_secret: str | None = None,
    ml_password: str | None = None,
    *,
    ml_user: str = DEFAULT_ML_USER,
) -> ServiceSecrets:
    """The secrets to use: values given (settings) win; the others come from
    ``<home>/service.json``, which is created (mode 600, atomically) with random values when it
    does not exist or lacks one. A file readable by others is made private again."""
    given = {"api_token": api_token, "webhook_secret": webhook_secret, "ml_password": ml_password}
    if all(v is not None for v in given.values()):
        checked = {k: _check(k, v, "the settings") for k, v in given.items() if v is not None}
        return ServiceSecrets(**checked, ml_user=ml_user)
    path = Path(home) / FILE_NAME
    stored: dict[str, str] = {}
    existed = path.exists()
    if existed:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"{path} should hold the service secrets as JSON; it cannot be read ({type(err).__name__}).",
                f"delete {path} to have new secrets generated (then restart; Label Studio's "
                "webhook and ML backend connection are registered again with the new secrets).",
            ) from None
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{path} should hold a JSON object with {', '.join(KEYS)}; found {type(raw).__name__}.",
                f"delete {path} to have new secrets generated.",
            )
        stored = {k: v for k, v in raw.items() if isinstance(v, str)}
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            os.chmod(path, 0o600)
    changed = False
    for key in KEYS:
        if key not in stored:
            stored[key] = _random.token_urlsafe(32)
            changed = True
    if changed and not _write_private(path, stored, replace=existed):
        # another process created the file first: use its values
        return load_or_create_secrets(home, api_token, webhook_secret, ml_password, ml_user=ml_user)
    values = {
        k: _check(
            k, v if v is not None else stored[k], "the settings" if v is not None else str(path)
        )
        for k, v in given.items()
    }
    return ServiceSecrets(**values, ml_user=ml_user, source=str(path))


def _write_private(path: Path, data: dict[str, str], *, replace: bool) -> bool:
    """Write ``data`` as JSON readable by the owner only; the file appears complete or not at
    all. Without ``replace`` an existing file is kept and False returned."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # fails when the file exists: two first starts do not race
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)
