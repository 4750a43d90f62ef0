"""The site catalog: the assets and standards this agent judges by, sent to the API at
start and after every reload, so that an API without the site's files (fleet mode) can
list them and keep every standard version it has seen (SPEC 7.3, 7.5).

It travels through the outbox like the engine's events (rules.events.SiteCatalog), so it
reaches the API in `patrol run` and `patrol agent` alike, and waits there while the API is
down. Building it never stops the agent: a catalog that cannot be made is logged and
skipped; the next reload or start sends one again.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import yaml

from rules.events import SiteCatalog
from rules.standard import Standard

if TYPE_CHECKING:
    from agent.pipeline import Pipeline
    from agent.site import Site, StandardSource

log = logging.getLogger("patrol.catalog")


def site_catalog(site: Site, at: float) -> SiteCatalog:
    """The catalog of `site` as loaded, dated `at`."""
    assets = [asset.model_dump(mode="json") for asset in site.config.assets]
    standards = [catalog_entry(standard, site.sources.get(standard.id))
                 for standard in site.standards]
    return SiteCatalog(site.id, at, assets, standards)


def catalog_entry(standard: Standard, source: StandardSource | None) -> dict[str, Any]:
    """One standard as CatalogStandard's fields: its summary, its definition as JSON
    (NaN and infinities as null, durations as written: `10m`) and its YAML text."""
    definition = json.loads(standard.model_dump_json(by_alias=True))
    text = source.text if source is not None else None
    if text is None:
        text = yaml.safe_dump(definition, sort_keys=False, allow_unicode=True)
    return {
        "id": standard.id, "version": standard.version, "title": standard.title,
        "clause": standard.clause, "category": standard.category,
        "severity": standard.severity, "department": standard.department,
        "kind": standard.kind, "metric": standard.metric, "expr": standard.expr,
        "definition": definition, "text": text,
        "file": source.file if source is not None else None,
    }


def publish_catalog(site: Site, pipeline: Pipeline, at: float) -> bool:
    """Queue the site's catalog in the outbox; False (logged) when it cannot be made."""
    try:
        catalog = site_catalog(site, at)
    except Exception as exc:  # the agent judges on without it
        log.error("the site catalog (assets and standards for the API) could not be made: "
                  "%s: %s", type(exc).__name__, exc)
        return False
    pipeline.publish(catalog)
    log.info("site catalog %s queued: %d assets, %d standards", catalog.id,
             len(catalog.assets), len(catalog.standards))
    return True
