"""What every recipe section shares: strict, frozen models, the name/license patterns, and the near-name
suggestion that recipe errors end with."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
# SPDX license identifiers (and LicenseRef-*) are letters, digits, '.', '-' and '+'.
SPDX_PATTERN = r"^(LicenseRef-[A-Za-z0-9.\-]+|[A-Za-z0-9][A-Za-z0-9.\-+]*)$"


class Strict(BaseModel):
    """A recipe section: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_Strict = Strict

# The name the filter modules use.
StrictConfig = Strict


def near_name(value: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice `value` was most likely meant to be (a different case, or a close spelling), or None."""
    choices = [c for c in choices if isinstance(c, str)]
    if not isinstance(value, str) or not value or not choices:
        return None
    lower = {c.lower(): c for c in choices}
    if value.lower() in lower:
        return lower[value.lower()]
    found = difflib.get_close_matches(value.lower(), list(lower), n=1, cutoff=cutoff)
    return lower[found[0]] if found else None


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """`"; did you mean 'x'?"` for the near choice, else `""`."""
    near = near_name(value, choices)
    return f"; did you mean '{near}'?" if near else ""


def unknown(what: str, value: str, choices: Iterable[str]) -> str:
    """`unknown <what> '<value>'`, then the near name if there is one, else the known names."""
    choices = list(choices)
    near = near_name(value, choices)
    if near:
        return f"unknown {what} '{value}'; did you mean '{near}'?"
    return f"unknown {what} '{value}' (known: {', '.join(choices) or 'none'})"
