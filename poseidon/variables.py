"""What a run takes from this machine's environment for a playbook, and what it must hide.

The ``${env:NAME}`` values the steps read (every one set, or the run does not
start), the git tokens the ``git`` steps name (``token_env``), and the
:class:`Masker` over every secret among them, the secret variables and the
API tokens. These variables are the playbook's; poseidon's own are
:mod:`poseidon.settings`'.

Imports the playbook's models, the masker, settings and errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from poseidon import spec
from poseidon.errors import UsageError
from poseidon.masker import Masker
from poseidon.settings import Settings

__all__ = ["environment", "git_tokens", "masker"]


def environment(playbook: spec.Playbook, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables the steps read with ``${env:NAME}`` (from ``environ``, default this
    process's environment); an unset one stops the run before it starts."""
    environ = os.environ if environ is None else environ
    names = playbook.env_names()
    missing = [n for n in names if n not in environ]
    if missing:
        raise UsageError(f"the playbook reads environment variables that are not set: {', '.join(missing)}")
    return {n: environ[n] for n in names}


def git_tokens(playbook: spec.Playbook, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The git tokens the steps may need, by variable name: those set in ``environ``."""
    environ = os.environ if environ is None else environ
    names = {s.token_env for s in playbook.steps if isinstance(s, spec.GitStep)}
    return {n: environ[n] for n in names if environ.get(n)}


def masker(
    playbook: spec.Playbook,
    environ: Mapping[str, str],
    tokens: Mapping[str, str],
    settings: Settings,
    client: Any = None,
) -> Masker:
    """The masker of a run: the secret variables' values, the git ``tokens``, the API tokens of
    ``settings`` and what ``client`` masks (its own token, on a sandbox another one)."""
    secret_values = [v for n, v in playbook.var_values(environ).items() if n in playbook.secret_names()]
    return Masker([*secret_values, *tokens.values(), *settings.tokens], also=getattr(client, "mask", None))
