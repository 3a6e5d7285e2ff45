"""The model of a whole playbook: its droplets, variables and steps; it raises the
problems across them that :mod:`.checks` finds, whoever builds it.

Imports :mod:`.models`, :mod:`.checks`, :mod:`.fields`, :mod:`.locations` and
:mod:`.references`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from poseidon.spec import checks
from poseidon.spec.attachments import AttachmentError, Attachments
from poseidon.spec.fields import Identifier, Line, fail
from poseidon.spec.locations import step_strings
from poseidon.spec.models import DropletRef, FileStep, Model, NamedDroplet, Report, SecretVar, Step, VarValue
from poseidon.spec.references import to_text, tokens


class Playbook(Model):
    """A poseidon playbook, version 1: which droplets, which steps, what to report."""

    version: Literal[1] = Field(description="The playbook format's version; always 1.")
    name: Line | None = Field(default=None, description="A name shown in reports.")
    droplets: list[DropletRef] = Field(
        min_length=1,
        description="The droplets: names, {name: ...} or {tag: ...}, resolved through the API.",
    )
    vars: dict[Identifier, VarValue] = Field(
        default_factory=dict,
        description="Values for ${name} in steps; ${env:NAME} and ${droplet.attribute} also work.",
    )
    steps: list[Step] = Field(
        min_length=1,
        description="What to do, in order, on every droplet: one-key mappings {kind: ...}.",
    )
    report: Report = Field(default_factory=Report, description="Snapshots taken after the steps.")

    #: The files beside the playbook its ``file:`` steps take (``load()`` sets their folder: the playbook's).
    _attachments: Attachments | None = PrivateAttr(default=None)

    @property
    def attachments(self) -> Attachments:
        """The files ``src:`` and ``template:`` name, read once each; relative to the playbook's
        folder, or to the current directory for a playbook that was not read from a file."""
        if self._attachments is None:
            self._attachments = Attachments(Path.cwd())
        return self._attachments

    def templates(self) -> list[str]:
        """The text of every template the steps use that can be read (a problem with one is ``load()``'s to say)."""
        found = []
        for step in self.steps:
            if isinstance(step, FileStep) and step.template is not None:
                try:
                    found.append(self.attachments.text(step.template))
                except AttachmentError:
                    continue
        return found

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_a_number(cls, value: Any) -> Any:
        # 1 == True == 1.0 in Python; only the integer 1 is version 1.
        if type(value) is not int:
            fail("Input should be 1")
        return value

    @field_validator("droplets", mode="after")
    @classmethod
    def _creates_are_named(cls, value: list[Any], info: ValidationInfo) -> list[Any]:
        # What a playbook creates carries its owner tag, and destroy deletes by that tag alone: one
        # taken from the file's name could be another playbook's (two site.yaml), so destroy refuses it.
        if info.data.get("name") is None:
            creating = [ref.name for ref in value if isinstance(ref, NamedDroplet) and ref.create is not None]
            if creating:
                fail(
                    f"{', '.join(creating)} would be created: give the playbook a name: (it tags what"
                    " it creates, and 'poseidon destroy' deletes only droplets carrying that tag)"
                )
        return value

    @model_validator(mode="after")
    def _parts_agree(self) -> Playbook:
        # The same droplet twice would run every step twice on it; a reference to nothing
        # would fail on every droplet; two nohup steps of one process would fight over it.
        found = checks.problems(self.model_dump(warnings=False))
        if found:
            raise checks.error(found)
        return self

    def var_values(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """``vars`` as text, the way they are substituted (booleans as ``true``/``false``).

        A secret read from the environment (``env:``) takes its value from
        ``environ`` (default ``os.environ``); an unset one is left out.
        """
        environment = os.environ if environ is None else environ
        values: dict[str, str] = {}
        for name, value in self.vars.items():
            if isinstance(value, SecretVar):
                text = value.value if value.env is None else environment.get(value.env)
                if text is not None:
                    values[name] = text
            else:
                values[name] = to_text(value)
        return values

    def owner_tag(self, path: str | os.PathLike[str]) -> str:
        """The tag on every droplet this playbook creates (``poseidon:hello-flask``): its ``name``,
        else its file's name, as a tag may spell it. ``destroy`` deletes only droplets carrying it.

        A name a tag cannot spell as it is (``web app``) is followed by a digest of
        it (``poseidon:web-app-1a2b3c4d``), so two names never share a tag."""
        base = self.name or Path(path).stem
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("-")[:200] or "playbook"
        if slug == base:
            return f"poseidon:{slug}"
        # Spelled otherwise than written: a digest of the name keeps "web app" and "web/app!" apart.
        return f"poseidon:{slug}-{hashlib.sha256(base.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"

    def secret_names(self) -> list[str]:
        """The variables marked secret."""
        return [name for name, value in self.vars.items() if isinstance(value, SecretVar)]

    def env_names(self) -> list[str]:
        """The environment variables the steps and vars refer to with ``${env:NAME}``, and the
        secrets read from the environment, in order."""
        texts = [
            text
            for index, step in enumerate(self.steps)
            for _, text in step_strings(step.model_dump(), ("steps", index))
        ]
        texts += [value for value in self.vars.values() if isinstance(value, str)]
        texts += self.templates()
        names = [
            token.text.removeprefix("env:")
            for text in texts
            for token in tokens(text)
            if token.kind == "reference" and token.text.startswith("env:")
        ]
        names += [v.env for v in self.vars.values() if isinstance(v, SecretVar) and v.env]
        return list(dict.fromkeys(names))
