"""The perplexity filter's settings (CCNet-style KenLM perplexity, absolute thresholds), defined in
`lm_platform.recipe.filter_settings` and importable from here.

The filter itself runs in `lm_platform.data.curation.curate` (`PerplexityGate`): it scores documents with the
language's reference model, which the chain's other filters do not need.
"""

from __future__ import annotations

from lm_platform.recipe.filter_settings import PerplexityFilter as PerplexityFilter
