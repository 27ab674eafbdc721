"""The one error type of the registry package."""

from __future__ import annotations


class RegistryError(RuntimeError):
    """A registry or promotion step cannot proceed; the message says why and what to do."""
