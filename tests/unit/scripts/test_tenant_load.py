"""scripts/tenant_load.py: its command line and its table (tests/e2e/test_tenants.py runs it)."""

from __future__ import annotations

import argparse

import pytest

from tests.helpers import load_script

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tenant_load():
    return load_script("tenant_load")


def test_a_tenant_is_name_key_and_clients(tenant_load) -> None:
    load = tenant_load.TenantLoad.parse("batch=sk-a:b:6")  # a key may hold colons
    assert (load.name, load.key, load.clients) == ("batch", "sk-a:b", 6)
    for bad in ("batch", "batch=key", "batch=key:0", "=key:2", "batch=:2"):
        with pytest.raises(argparse.ArgumentTypeError):
            tenant_load.TenantLoad.parse(bad)


def test_the_table_has_one_row_per_tenant(tenant_load) -> None:
    high = tenant_load.Outcome([200, 200, 200, 429], [0.1, 0.2, 0.3])
    low = tenant_load.Outcome([429, 429, "ConnectError"], [])
    assert tenant_load.table({"interactive": high, "batch": low}).splitlines() == [
        "| tenant | sent | 200 | 429 | other | success | TTFT p50 ms | TTFT p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        "| interactive | 4 | 3 | 1 | 0 | 75.0 % | 200 | 300 |",
        "| batch | 3 | 0 | 2 | 1 | 0.0 % | - | - |",
    ]
