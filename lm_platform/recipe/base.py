"""What every recipe section shares: strict, frozen models and the name/license patterns."""

from __future__ import annotations

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
