"""What ``/metrics``, ``/healthz`` and ``/readyz`` keep between requests, per server."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from emaild.app import App
from emaild.component import Host
from emaild.observe.exposition import Scrape
from emaild.observe.figures import FiguresCache
from emaild.observe.readiness import Readiness
from emaild.observe.spool import spool_path


@dataclass
class OpsState:
    scrape: Scrape
    readiness: Readiness

    @classmethod
    def build(cls, app: App, host: Host | None) -> OpsState:
        cache = FiguresCache(app.db, app.pipeline.clock, lambda: app.config.metrics.cache_seconds)
        readiness = Readiness(
            app.db,
            cache,
            alert_after=lambda: app.config.alerts.alert_after_seconds,
            host_problems=host.problems if host is not None else None,
            channel_names=host.channel_names if host is not None else None,
        )
        return cls(Scrape(cache, spool_path(app.config.state_dir)), readiness)


def allowed(client: str | None, networks: list[str]) -> bool:
    """True when ``client`` (an IP address) is in one of ``networks``."""
    if not client:
        return False
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(net) for net in networks)
