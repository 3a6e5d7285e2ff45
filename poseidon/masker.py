"""The mask over what a run reports: every secret it knows becomes ``***``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Masker"]


class Masker:
    """Replaces every secret (secret vars, git tokens, the API token) with ``***`` in what a run reports."""

    def __init__(self, secrets: Iterable[str], also: Callable[[str], str] | None = None) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        #: Another mask after these: the API client's, for its token (which the client alone holds).
        self.also = also

    def text(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return self.also(text) if self.also else text

    def frame(self, frame: Any) -> Any:
        if frame is None or not self.secrets:
            return frame
        for column in frame.columns:
            if frame[column].dtype.kind not in "biufc":  # text columns, whatever pandas calls them
                frame[column] = frame[column].map(lambda v: self.text(v) if isinstance(v, str) else v)
        return frame
