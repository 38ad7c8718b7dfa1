"""URL domain allow/deny lists: a domain matches itself and its subdomains."""

from __future__ import annotations

from urllib.parse import urlsplit

from lm_platform.data.corpus.text import Doc
from lm_platform.data.curation.filters.base import Filter
from lm_platform.recipe.filter_settings import UrlDomainFilter as UrlDomainFilter


def domain_of(url: str) -> str:
    host = urlsplit(url if "://" in url else f"http://{url}").hostname or ""
    return host.lower().removeprefix("www.")


def _matches(domain: str, patterns: frozenset[str]) -> str | None:
    parts = domain.split(".")
    for i in range(len(parts)):
        if ".".join(parts[i:]) in patterns:
            return ".".join(parts[i:])
    return None


class UrlDomain(Filter):
    name = "url_domain"

    def __init__(self, cfg, lang: str):
        super().__init__(cfg, lang)
        self.deny = frozenset(d.lower().removeprefix("www.") for d in cfg.deny)
        self.allow = frozenset(d.lower().removeprefix("www.") for d in cfg.allow)

    def check(self, doc: Doc) -> str | None:
        if not doc.url:
            return "no url" if self.cfg.require_url else None
        domain = domain_of(doc.url)
        hit = _matches(domain, self.deny)
        if hit:
            return f"domain {domain} on the deny list ({hit})"
        if self.allow and not _matches(domain, self.allow):
            return f"domain {domain} not on the allow list"
        return None
