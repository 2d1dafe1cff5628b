"""A throwaway PostgreSQL for the tests: a cluster on a free port with the feedback store's
role, and a new database per test."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from iris_stack.postgres import Postgres
from iris_stack.process import running
from iris_testing.ports import free_port

#: The role the tests' stores connect as; its password must never appear in a message.
ROLE, PASSWORD = "feedback", "pw-not-in-messages"

#: A throwaway cluster need not survive a power cut: without fsync its commits, new databases
#: and shutdown checkpoint wait for no disk flush (seconds in all on a slow disk). Locks and
#: visibility, which the tests are about, are the same.
THROWAWAY = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@contextlib.contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    """A PostgreSQL cluster on a free port with the store's role; removed afterwards. Under
    /tmp: the server's system user cannot enter pytest's (root-only) temporary folders."""
    folder = Path(tempfile.mkdtemp(prefix="iris-pg-"))
    try:
        cluster = Postgres(folder, free_port())
        cluster.init(sync=False)
        with running(cluster.service(THROWAWAY), timeout_s=30):
            cluster.create_role(ROLE, PASSWORD)
            yield cluster
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def new_database(cluster: Postgres) -> str:
    """A new, empty database owned by the store's role; its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    cluster.create_database(name, ROLE)
    return cluster.url(name, ROLE, PASSWORD)
