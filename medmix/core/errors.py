"""Errors, split by what the build does about them.

`RowError` loses one row (it is quarantined with its reason and counted); every other
`MedmixError` stops the build, because going on would give a wrong or unsafe mixture
(a checksum mismatch, a hostile archive, a recipe that does not resolve).
"""

from __future__ import annotations


class MedmixError(Exception):
    """Stops the build with a message a user can act on."""


class RowError(MedmixError):
    """One input row or file is bad; the build quarantines it and goes on."""

    def __init__(self, reason: str, *, file: str | None = None) -> None:
        super().__init__(reason if file is None else f"{file}: {reason}")
        self.reason = reason
        self.file = file


class FetchError(MedmixError):
    """A download failed for good (after retries) or its bytes are not the pinned ones."""


class UnsafeArchiveError(MedmixError):
    """An archive tried to write outside its target or past a size limit."""


class ManualFilesMissing(MedmixError):
    """A gated or registration-only source needs files the user must place by hand."""


class RecipeError(MedmixError):
    """A recipe is invalid; the message names the file, the line, the key and the fix."""


class LicenseRefused(MedmixError):
    """A recipe asks for rows whose license or evaluation status it has not accepted."""
