"""corral.App (a named group of sandboxes) and corral.Secret (environment variables)."""
from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence

from . import _sync
from ._client import Client, resolve
from ._errors import InvalidError, NotFoundError
from .v1 import sandbox_pb2 as pb

APP_TAG = "corral.app"


class App:
    """A named group of sandboxes (Modal's ``modal.App``).

    corral keeps no separate app objects: a sandbox created with ``app=`` carries the tag
    ``corral.app=<name>``, and ``Sandbox.list(app_id=app.app_id)`` finds them.
    Serverless functions (``@app.function``) are not available in this version.
    """

    def __init__(self, name: Optional[str] = None, *, image: Any = None, secrets: Sequence["Secret"] = (),
                 client: Optional[Client] = None, **modal_options: Any) -> None:
        if modal_options:
            raise InvalidError(f"corral.App: {', '.join(sorted(modal_options))} not supported by corral")
        self.name = name or "default"
        self.image = image
        self.secrets = list(secrets)
        self._client = client

    def __repr__(self) -> str:
        return f"corral.App({self.name!r})"

    @property
    def app_id(self) -> str:
        """The app's id (its name: apps are identified by name)."""
        return self.name

    @_sync.static
    @staticmethod
    async def lookup(name: str, *, create_if_missing: bool = False, client: Optional[Client] = None,
                     environment_name: Optional[str] = None) -> "App":
        """The app of that name. Without create_if_missing, NotFoundError unless some sandbox
        (running or retained) belongs to it."""
        if environment_name is not None:
            raise InvalidError("App.lookup(environment_name=...): corral has no environments")
        if not name or len(name) > 1024:
            raise InvalidError("App.lookup: name must be 1 to 1024 characters")
        if not create_if_missing:
            resp = await resolve(client).call("sandbox", "ListSandboxes", pb.ListSandboxesRequest(
                tags={APP_TAG: name}, include_finished=True))
            if not resp.sandboxes:
                raise NotFoundError(f"no app named {name!r} (pass create_if_missing=True to create it)")
        return App(name, client=client)

    @contextlib.contextmanager
    def run(self, **kwargs: Any) -> Iterator["App"]:
        """Modal's ``with app.run():`` — apps need no deployment in corral: yields the app."""
        yield self

    def function(self, *args: Any, **kwargs: Any) -> Any:
        """Not available yet: corral's function platform is not part of this version."""
        raise InvalidError("corral.App.function: serverless functions are not supported by this corral "
                           "version; run code in a corral.Sandbox instead")

    def cls(self, *args: Any, **kwargs: Any) -> Any:
        """Not available yet (see :meth:`function`)."""
        raise InvalidError("corral.App.cls: serverless classes are not supported by this corral version")

    def local_entrypoint(self, *args: Any, **kwargs: Any) -> Any:
        """Not available: corral has no `modal run`; call your function directly."""
        raise InvalidError("corral.App.local_entrypoint: not supported; call the function directly")


class Secret:
    """Environment variables for a sandbox or process (Modal's ``modal.Secret``).

    corral has no secret store: ``Secret.from_dict`` and ``Secret.from_local_environ`` build
    one on the client, and its variables are passed like ``env=``.
    """

    def __init__(self, env: Dict[str, str]) -> None:
        for k, v in env.items():
            if not isinstance(k, str) or not isinstance(v, str) or not k or "=" in k:
                raise InvalidError(f"Secret: bad variable {k!r} (names and values must be strings, "
                                   "names non-empty without '=')")
        self.env = dict(env)

    @classmethod
    def from_dict(cls, env_dict: Dict[str, Optional[str]]) -> "Secret":
        """A secret holding these variables (None values are left out, as in Modal)."""
        return cls({k: v for k, v in env_dict.items() if v is not None})

    @classmethod
    def from_local_environ(cls, env_keys: List[str]) -> "Secret":
        """A secret holding these variables copied from this process's environment."""
        missing = [k for k in env_keys if k not in os.environ]
        if missing:
            raise InvalidError(f"Secret.from_local_environ: not set locally: {', '.join(missing)}")
        return cls({k: os.environ[k] for k in env_keys})

    @classmethod
    def from_name(cls, name: str, **kwargs: Any) -> "Secret":
        """Not supported: corral has no server-side secret store."""
        raise InvalidError(f"Secret.from_name({name!r}): corral has no secret store; use "
                           "corral.Secret.from_dict or corral.Secret.from_local_environ")


def merge_env(env: Optional[Dict[str, str]], secrets: Optional[Sequence[Secret]]) -> Dict[str, str]:
    """env= plus the secrets' variables (secrets last, as in Modal)."""
    out: Dict[str, str] = {}
    for k, v in (env or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidError(f"env: names and values must be strings, got {k!r}={v!r}")
        out[k] = v
    for s in secrets or ():
        if not isinstance(s, Secret):
            raise InvalidError(f"secrets= wants corral.Secret objects, not {type(s).__name__}")
        out.update(s.env)
    return out
