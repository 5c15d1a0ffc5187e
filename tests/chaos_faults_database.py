"""Chaos scenarios of the database: silent (``partition``), slow (``slowdb``), turned read-only (``readonly``).

The first two act on the harness's :class:`~chaos_database.TcpProxy`; ``readonly`` on the database itself,
as a failover's demotion does, so it needs a database of its own (:func:`~chaos_database.dedicated_database`).
"""

from __future__ import annotations

import sqlalchemy as sa
from chaos_database import TcpProxy
from chaos_scenario_harness import Scenario, ScenarioHarness


def _proxy(h: ScenarioHarness) -> TcpProxy:
    assert h.db is not None and h.db.proxy is not None, "this scenario needs PostgreSQL behind the harness's proxy"
    return h.db.proxy


class Partition(Scenario):
    name = "partition"
    description = "database silent (packets dropped, nothing closed)"

    def start(self, h: ScenarioHarness) -> None:
        # Open connections and new ones alike go silent; at the end new ones get through again while
        # those opened before stay silent for ever (a stale pooled connection must be noticed).
        _proxy(h).blackhole(new_connections=True)

    def end(self, h: ScenarioHarness) -> None:
        _proxy(h).restore()


class SlowDatabase(Scenario):
    name = "slowdb"
    description = "database slow, not absent"

    def __init__(self, delay: float = 0.1) -> None:  # per chunk each way: +200 ms a round trip
        self.delay = delay

    def start(self, h: ScenarioHarness) -> None:
        _proxy(h).slow(self.delay)

    def end(self, h: ScenarioHarness) -> None:
        _proxy(h).restore()


class ReadOnlyPrimary(Scenario):
    name = "readonly"
    description = "primary turned read-only (pooled sessions stay read-only after)"

    def _database(self, h: ScenarioHarness) -> str:
        name = sa.make_url(h.database_url).database
        assert name and h.admin_url, "readonly needs a PostgreSQL database of its own (dedicated_database)"
        return name

    def _admin(self, h: ScenarioHarness, *statements: str) -> None:
        admin = sa.create_engine(h.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                for statement in statements:
                    connection.execute(sa.text(statement), {"n": self._database(h)})
        finally:
            admin.dispose()

    def start(self, h: ScenarioHarness) -> None:
        name = self._database(h)
        self._admin(
            h,
            f'ALTER DATABASE "{name}" SET default_transaction_read_only = on',
            # Sessions read the setting when they start: end the current ones, as the demotion does.
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()",
        )

    def end(self, h: ScenarioHarness) -> None:
        # The promoted primary accepts writes from new sessions; sessions opened during the fault
        # keep default_transaction_read_only = on, as connections still open to the demoted one do.
        self._admin(h, f'ALTER DATABASE "{self._database(h)}" SET default_transaction_read_only = off')

    def cleanup(self, h: ScenarioHarness) -> None:
        # Whatever the outcome, the next scenario starts with no read-only session left.
        self._admin(h, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n "
                       "AND pid <> pg_backend_pid()")
