"""The end-of-run report of ``fetch``, Scrapy's stats as the model: counts per host and per
cause, the slowest hosts, and where the failed URLs went (a list ``fetch`` takes back)."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from ._store import Record, host_of

__all__ = ["Stats", "render"]

#: Hosts listed as slowest, at most.
SLOWEST = 5


@dataclass(slots=True)
class _Host:
    ok: int = 0
    failed: int = 0
    retries: int = 0
    seconds: float = 0.0
    bytes: int = 0

    @property
    def mean_seconds(self) -> float:
        count = self.ok + self.failed
        return self.seconds / count if count else 0.0


class Stats:
    """Counts of one run, fed each record as it ends."""

    def __init__(self) -> None:
        self.hosts: dict[str, _Host] = collections.defaultdict(_Host)
        self.causes: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[int] = collections.Counter()

    def add(self, record: Record) -> None:
        host = self.hosts[host_of(record.url)]
        host.retries += record.retries
        host.seconds += record.seconds
        host.bytes += record.size
        if record.status is not None:
            self.statuses[record.status] += 1
        if record.ok:
            host.ok += 1
        else:
            host.failed += 1
            self.causes[record.error or "?"] += 1

    def report(
        self,
        *,
        elapsed: float,
        skipped: int,
        interrupted: bool,
        not_started: int,
        failed_file: str,
        failed_urls: int,
        resume_command: str | None = None,
    ) -> dict[str, Any]:
        """Everything the text report shows, as JSON-ready values."""
        ok = sum(h.ok for h in self.hosts.values())
        failed = sum(h.failed for h in self.hosts.values())
        slowest = sorted(self.hosts.items(), key=lambda item: -item[1].mean_seconds)[:SLOWEST]
        return {
            "elapsed_seconds": round(elapsed, 3),
            "interrupted": interrupted,
            "fetched": ok,
            "failed": failed,
            "skipped_already_fetched": skipped,
            "not_started": not_started,
            "retries": sum(h.retries for h in self.hosts.values()),
            "bytes": sum(h.bytes for h in self.hosts.values()),
            "urls_per_second": round((ok + failed) / elapsed, 1) if elapsed > 0 else None,
            "per_host": {
                name: {
                    "fetched": h.ok,
                    "failed": h.failed,
                    "retries": h.retries,
                    "bytes": h.bytes,
                    "mean_seconds": round(h.mean_seconds, 4),
                }
                for name, h in sorted(self.hosts.items())
            },
            "per_cause": dict(self.causes.most_common()),
            "per_status": {str(k): v for k, v in sorted(self.statuses.items())},
            "slowest_hosts": [
                {"host": name, "mean_seconds": round(h.mean_seconds, 4)} for name, h in slowest
            ],
            "failed_urls_file": failed_file,
            "failed_urls": failed_urls,
            # A command that runs as printed: the failed URLs (interrupted: every URL not
            # fetched) into the same output, skipping what is done.
            "resume_command": resume_command,
        }


def render(report: dict[str, Any]) -> str:
    """The report as text, for the terminal."""
    lines = [
        ("fetch interrupted" if report["interrupted"] else "fetch finished")
        + f" after {report['elapsed_seconds']:.1f} s: {report['fetched']} fetched, "
        f"{report['failed']} failed, {report['skipped_already_fetched']} already fetched"
        + (f", {report['not_started']} not started" if report["not_started"] else "")
        + f"; {report['retries']} retries, {report['bytes']} bytes"
        + (f", {report['urls_per_second']}/s" if report["urls_per_second"] else "")
    ]
    hosts = report["per_host"]
    if hosts:
        width = max(len(name) for name in hosts)
        lines.append(f"  {'host':<{width}}  fetched  failed  retries  mean s")
        lines.extend(
            f"  {name:<{width}}  {h['fetched']:7d}  {h['failed']:6d}  {h['retries']:7d}  "
            f"{h['mean_seconds']:6.3f}"
            for name, h in hosts.items()
        )
    if report["per_cause"]:
        lines.append("  failures by cause:")
        lines.extend(f"    {cause:<32} {n:6d}" for cause, n in report["per_cause"].items())
    if report["slowest_hosts"]:
        slow = ", ".join(
            f"{item['host']} {item['mean_seconds']:.3f} s" for item in report["slowest_hosts"]
        )
        lines.append(f"  slowest hosts (mean per URL): {slow}")
    if report["failed_urls"]:
        lines.append(f"  {report['failed_urls']} failed URLs in {report['failed_urls_file']}")
    if report.get("resume_command"):
        what = "to fetch the rest" if report["interrupted"] else "to retry the failed URLs"
        lines.append(f"  {what}: {report['resume_command']}")
    return "\n".join(lines)
