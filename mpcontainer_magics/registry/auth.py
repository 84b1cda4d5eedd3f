"""Registry auth: answer a 401's challenge with the credentials ``docker login`` stored.

A request without credentials gets a 401 carrying ``WWW-Authenticate``. A Bearer challenge
makes us fetch a token from its realm for the scope ``repository:<repo>:<actions>`` (cached
per registry and scopes; a push asks for a wider scope and gets its own token, a pull token is
never used for a push); a Basic challenge makes us send the user's credentials. Credentials
come from the Docker config (``auths``, ``credHelpers``, ``credsStore``), found as the docker
CLI finds them, so a ``docker login`` is all a user needs. They never appear in messages.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RegistryError
from .reference import HUB, display_host

if TYPE_CHECKING:
    import httpx

# Docker stores Hub credentials under this legacy key, not under the registry's host name.
HUB_AUTH_KEY = "https://index.docker.io/v1/"

#: Sends the token request: (realm URL, query parameters, Basic Authorization or None).
TokenRequest = Callable[[str, list[tuple[str, str]], str | None], Awaitable["httpx.Response"]]


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split ``Bearer realm="https://a",scope="repository:x:pull,push"`` into scheme, params.

    Quoted values may contain commas and backslash escapes, so a plain split would break them.
    """
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for m in re.finditer(r'([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))', rest):
        quoted = m.group(2)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else m.group(3)
        params[m.group(1).lower()] = value
    return scheme.lower(), params


def login_command(registry: str) -> str:
    """The command that stores credentials for ``registry``."""
    return "docker login" + ("" if registry == HUB else f" {registry}")


class RegistryAuth:
    """Authorization values per (registry, scopes), and the credentials they are made from."""

    def __init__(self, config_file: Path, timeout: float) -> None:
        self.config_file = config_file
        self._timeout = timeout  # for a credential helper, e.g. one waiting for a keyring
        # (registry, scopes) -> Authorization value: a pull token is never used for a push.
        self._authorization: dict[tuple[str, tuple[str, ...]], str] = {}
        self._credentials: dict[str, tuple[str, str] | None] = {}

    def cached(self, registry: str, scopes: tuple[str, ...]) -> str | None:
        """The Authorization value last granted for exactly these scopes, if any."""
        return self._authorization.get((registry, scopes))

    async def answer(
        self,
        registry: str,
        scopes: tuple[str, ...],
        challenges: list[str],
        request_token: TokenRequest,
    ) -> str | None:
        """Answer a 401's challenges; the Authorization value to retry with, or None."""
        parsed = dict(parse_challenge(c) for c in challenges)
        creds = await self.credentials(registry)
        basic = "Basic " + base64.b64encode(":".join(creds).encode()).decode() if creds else None
        bearer = parsed.get("bearer", {})
        if "realm" in bearer:
            # Distribution reads every `scope` parameter: one token for, e.g., a mount's two.
            params = [("scope", s) for s in scopes]
            if "service" in bearer:
                params.append(("service", bearer["service"]))
            resp = await request_token(bearer["realm"], params, basic)
            authorization = f"Bearer {self._token(registry, resp, basic is not None)}"
        elif "basic" in parsed and basic:
            authorization = basic
        else:
            return None
        self._authorization[registry, scopes] = authorization
        return authorization

    def _token(self, registry: str, resp: httpx.Response, sent_credentials: bool) -> str:
        """The token in a token service's answer; RegistryError (with the fix) if none."""
        host = display_host(registry)
        if resp.status_code in (401, 403):
            if sent_credentials:
                raise self.credentials_refused(registry, resp.status_code)
            raise RegistryError(
                f"registry {host} requires a login (its token service answered "
                f"HTTP {resp.status_code}); run `{login_command(registry)}`"
            )
        try:
            doc = json.loads(resp.content)
        except ValueError:
            doc = None
        token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
        if not resp.is_success or not isinstance(token, str):
            raise RegistryError(
                f"registry {host} gave no token (HTTP {resp.status_code}); "
                "check that it is a working OCI registry and its token service is configured"
            )
        return token

    def credentials_refused(self, registry: str, status: int) -> RegistryError:
        return RegistryError(
            f"registry {display_host(registry)} refused the credentials stored for it in the "
            f"Docker config {self.config_file} (HTTP {status}); "
            f"run `{login_command(registry)}` again"
        )

    async def credentials(self, registry: str) -> tuple[str, str] | None:
        """(user, secret) for ``registry`` from the Docker config, as the docker CLI finds them."""
        if registry in self._credentials:
            return self._credentials[registry]
        config = self._read_config()
        server = HUB_AUTH_KEY if registry == HUB else registry
        helper = _member(config, "credHelpers").get(server) or config.get("credsStore")
        creds = await self._run_helper(str(helper), server) if helper else None
        encoded = _member(_member(config, "auths"), server).get("auth")
        if creds is None and encoded:
            try:
                user, _, secret = base64.b64decode(str(encoded)).decode().partition(":")
            except ValueError:  # binascii.Error, UnicodeDecodeError; never show the value
                raise RegistryError(
                    f"the auth entry for {server} in {self.config_file} is not base64 of "
                    f"user:password; run `{login_command(registry)}` again"
                ) from None
            creds = (user, secret)
        self._credentials[registry] = creds
        return creds

    def _read_config(self) -> dict[str, Any]:
        try:
            config = json.loads(self.config_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RegistryError(
                f"cannot read Docker config {self.config_file}: {type(exc).__name__}; "
                "fix or remove it"
            ) from None
        if not isinstance(config, dict):
            raise RegistryError(
                f"the Docker config {self.config_file} is not a JSON object; fix or remove it"
            )
        return config

    async def _run_helper(self, helper: str, server: str) -> tuple[str, str] | None:
        # The credential-helper protocol: server URL on stdin, JSON {Username, Secret} out.
        try:
            proc = await asyncio.create_subprocess_exec(
                f"docker-credential-{helper}",
                "get",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError:  # helper not installed: Docker too would have no credentials
            return None
        try:
            out, _ = await asyncio.wait_for(proc.communicate(server.encode()), self._timeout)
        except asyncio.TimeoutError:  # e.g. waiting for a keyring unlock prompt
            proc.kill()
            await proc.wait()
            return None
        try:
            doc = json.loads(out) if proc.returncode == 0 else {}
            return (doc["Username"], doc["Secret"]) if doc.get("Secret") else None
        except (ValueError, KeyError, AttributeError):
            return None


def _member(document: dict[str, Any], key: str) -> dict[str, Any]:
    """``document[key]`` if it is an object; else empty, as a config without that section."""
    value = document.get(key)
    return value if isinstance(value, dict) else {}
