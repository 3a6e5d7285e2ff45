"""Playbook version 1: the models, a loader that locates every problem, the JSON Schema.

A playbook is YAML written by people, so this package is strict about what it
accepts and precise about where it refuses::

    loads(text, filename) / load(path)  ->  Playbook, or SpecError listing every Problem
    expand(step, values)                ->  a copy of the step with ${...} substituted
    json_schema()                       ->  the schema editors use, short forms included

References (``${name}``, ``${env:NAME}``, ``${droplet.attribute}``; ``$${`` is
a literal ``${``) appear in step values only. ``load()`` checks that each one
can be resolved; fields that must match a pattern are checked with each
reference standing for a plain word, then checked again by ``expand()`` once
the real value is known. Variable values are inserted verbatim, never
expanded themselves.

The modules, each importing only those above it::

    references   the reference language: tokens, substitution, preview
    fields       field types and the checks of one value
    locations    where a value is: paths such as steps[3].apt, and Source
    models       the models of the parts: droplets, steps, secrets
    attachments  the files file: steps take from beside the playbook (src:, template:)
    checks       the checks across fields, over plain data: duplicates, references, cycles
    playbook     the Playbook model, which raises what the checks find
    expansion    substitutions() and expand()
    source       the YAML loader: loads(), load(), every problem located
    schema       the JSON Schema

This module only gathers the public names; other modules of poseidon import
them from here.
"""

from __future__ import annotations

from poseidon.spec.attachments import MAX_FILE_BYTES, AttachmentError, Attachments
from poseidon.spec.attachments import content as file_content
from poseidon.spec.checks import process_conflicts
from poseidon.spec.expansion import expand, substitutions
from poseidon.spec.fields import USER_NAME_RE, droplet_name_problem
from poseidon.spec.locations import Source
from poseidon.spec.models import (
    STEP_KINDS,
    STEP_MODELS,
    AptStep,
    ChdirStep,
    CreateDroplet,
    DropletRef,
    FileStep,
    GitStep,
    NamedDroplet,
    NohupStep,
    PipRStep,
    PipStep,
    ReadyCheck,
    Report,
    RunStep,
    SecretVar,
    ServiceStep,
    Step,
    StepBase,
    TaggedDroplets,
)
from poseidon.spec.models import (
    DNSRecord as DNSRecord,
)
from poseidon.spec.playbook import Playbook
from poseidon.spec.references import DROPLET_ATTRIBUTES, MAX_VALUE_CHARS, parts, references
from poseidon.spec.references import preview as preview
from poseidon.spec.schema import json_schema
from poseidon.spec.source import MAX_PLAYBOOK_BYTES, load, loads

__all__ = [
    "USER_NAME_RE",
    "DROPLET_ATTRIBUTES",
    "MAX_FILE_BYTES",
    "MAX_PLAYBOOK_BYTES",
    "MAX_VALUE_CHARS",
    "STEP_KINDS",
    "STEP_MODELS",
    "SecretVar",
    "AptStep",
    "AttachmentError",
    "Attachments",
    "ChdirStep",
    "CreateDroplet",
    "DropletRef",
    "FileStep",
    "GitStep",
    "NamedDroplet",
    "NohupStep",
    "PipRStep",
    "PipStep",
    "Playbook",
    "ReadyCheck",
    "Report",
    "RunStep",
    "ServiceStep",
    "Source",
    "Step",
    "StepBase",
    "TaggedDroplets",
    "droplet_name_problem",
    "expand",
    "file_content",
    "json_schema",
    "load",
    "loads",
    "parts",
    "process_conflicts",
    "references",
    "substitutions",
]
