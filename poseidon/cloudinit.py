"""cloud-init user data: poseidon's cloud-config joined to a playbook's own.

A droplet boots with one user data. :func:`join` puts poseidon's settings
(a mapping of cloud-config) into whatever the playbook gave, in a form
cloud-init reads:

- nothing: poseidon's cloud-config alone;
- cloud-config: merged into the same document (the playbook's settings win);
- a script or any other cloud-init format: the second part of a MIME
  multipart message, after poseidon's cloud-config;
- a MIME multipart message: poseidon's part in front.

Imports only :mod:`poseidon.errors` (and PyYAML, when called).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from poseidon.errors import UsageError

if TYPE_CHECKING:
    from email.message import Message

__all__ = ["join"]

# cloud-init recognizes user data by its first line (case and leading space ignored).
_PART_TYPES = (
    ("#cloud-config-archive", "cloud-config-archive"),
    ("#cloud-config-jsonp", "cloud-config-jsonp"),
    ("#cloud-config", "cloud-config"),
    ("#cloud-boothook", "cloud-boothook"),
    ("#include-once", "x-include-once-url"),
    ("#include", "x-include-url"),
    ("#part-handler", "part-handler"),
    ("## template: jinja", "jinja2"),
    ("#!", "x-shellscript"),
)


def join(ours: dict[str, Any], theirs: str | None, owned: Mapping[str, str] | None = None) -> str:
    """User data that applies ``ours`` (cloud-config settings) and ``theirs`` (a playbook's user data).

    ``owned`` names the settings only poseidon may make, each with the message that refuses
    ``theirs`` when it makes one. Raises :class:`UsageError` for that, for cloud-config that
    is not a YAML mapping, and for user data in no format cloud-init knows.
    """
    owned = owned or {}
    if theirs is None or not theirs.strip():
        return _cloud_config(ours)
    head = theirs.lstrip().lower()
    if head.startswith(("content-type:", "mime-version:")):
        return _into_multipart(theirs, ours, owned)
    subtype = next((t for prefix, t in _PART_TYPES if head.startswith(prefix)), None)
    if subtype is None:
        raise UsageError(
            "user_data is in no format cloud-init knows: start it with #cloud-config, #! (a script)"
            " or another cloud-init header"
        )
    if subtype == "cloud-config":
        return _cloud_config(_merge(_their_config(theirs, owned), ours))
    return _multipart(ours, [_text_part(theirs, subtype)])


def _their_config(text: str, owned: Mapping[str, str]) -> dict[str, Any]:
    import yaml

    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"user_data is not valid cloud-config YAML: {exc}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise UsageError("user_data's cloud-config must be a mapping")
    for name, refusal in owned.items():
        if name in config:
            raise UsageError(refusal)
    return config


def _merge(theirs: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Their settings first and winning, then poseidon's (those poseidon owns are never theirs: refused before)."""
    merged = dict(theirs)
    for name, value in ours.items():
        merged.setdefault(name, value)
    return merged


def _cloud_config(config: dict[str, Any]) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        # Multi-line text (the private key) as a literal block, as a person would write it.
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    return "#cloud-config\n" + yaml.dump(config, Dumper=Dumper, sort_keys=False, default_flow_style=False)


def _text_part(text: str, subtype: str) -> Message:
    from email.mime.text import MIMEText

    return MIMEText(text, subtype)


def _multipart(ours: dict[str, Any], parts: list[Message]) -> str:
    from email.mime.multipart import MIMEMultipart

    message = MIMEMultipart()
    message.attach(_text_part(_cloud_config(ours), "cloud-config"))
    for part in parts:
        message.attach(part)
    return message.as_string()


def _into_multipart(text: str, ours: dict[str, Any], owned: Mapping[str, str]) -> str:
    """Put poseidon's cloud-config in front of a MIME message's parts."""
    import email

    message = email.message_from_string(text)
    theirs: dict[str, Any] = {}
    for part in message.walk():
        if part.get_content_type() == "text/cloud-config":
            payload = part.get_payload(decode=True)
            theirs.update(_their_config(payload.decode(errors="replace") if isinstance(payload, bytes) else "", owned))
    # cloud-init merges the parts' cloud-config: leave the settings a part of theirs makes to that part alone.
    ours = {name: value for name, value in ours.items() if name not in theirs}
    if not message.is_multipart():
        return _multipart(ours, [message])
    payload = message.get_payload()
    assert isinstance(payload, list)
    payload.insert(0, _text_part(_cloud_config(ours), "cloud-config"))
    return message.as_string()
