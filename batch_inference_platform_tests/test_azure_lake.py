"""The lake on Azure Blob / ADLS, emulated by Azurite: the whole graph materializes with every
Delta table under ``az://``, credentials come from the environment (account key here), the
processed input is archived with its retention, and a missing credential fails clearly."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import pytest
from azure.storage.blob import BlobServiceClient

from batch_inference_platform.lib.lake.azure import storage_options
from batch_inference_platform.lib.lake.catalog import UNPARTITIONED
from batch_inference_platform.lib.lake.layout import DeploymentTables, LakeLayout
from batch_inference_platform.lib.lake.tables import read_partition, snapshot

from .conftest import Platform, PlatformFactory, check_evaluations, failure_messages
from .servers import AZURITE_ACCOUNT, AZURITE_KEY, azurite

DAYS = [dt.date(2026, 11, d) for d in (2, 3, 4)]
OPTIONS = '{use_emulator: "true", allow_http: "true"}'


@dataclass
class AzureLake:
    platform: Platform
    layout: LakeLayout
    tables: DeploymentTables
    """The credit_risk deployment's tables, with the emulator's credentials."""
    result: dg.ExecuteInProcessResult


def _on_azure(root: str) -> dict[str, dict[str, str]]:
    """The credit_risk deployment with its source table under ``root`` too."""
    return {"source": {"table": f"{root}/features/credit_risk"}}


@pytest.fixture(scope="module")
def azure_lake(
    make_platform: PlatformFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AzureLake]:
    with azurite(tmp_path_factory.mktemp("azurite")) as url, pytest.MonkeyPatch.context() as env:
        env.setenv("AZURITE_BLOB_STORAGE_URL", url.rsplit("/", 1)[0])
        env.setenv("AZURE_STORAGE_ACCOUNT_NAME", AZURITE_ACCOUNT)
        env.setenv("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY)
        BlobServiceClient.from_connection_string(
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={url};"
        ).create_container("lake")
        platform = make_platform(
            "azure_lake",
            LAKE__ROOT="az://lake/bip",
            LAKE__STORAGE_OPTIONS=OPTIONS,
            LAKE__AZURE_AUTH="account-key",
            LAKE__ARCHIVE_RETENTION="1d",
            deployment=_on_azure("az://lake/bip"),
        )
        for day in DAYS:
            assert platform.generate(day).success
        assert platform.train().success
        layout = LakeLayout(
            "az://lake/bip",
            storage_options("account-key", {"use_emulator": "true", "allow_http": "true"}),
        )
        tables = layout.deployment(platform.deployment)
        result = platform.score_range(DAYS[0], DAYS[-1])
        yield AzureLake(platform, layout, tables, result)


def test_the_whole_graph_materializes_on_azure(azure_lake: AzureLake) -> None:
    assert azure_lake.result.success, failure_messages(azure_lake.result)
    assert all(check.passed for check in check_evaluations(azure_lake.result).values())
    tables = azure_lake.tables
    for table in (tables.features, tables.validated, tables.predictions):
        assert table.uri.startswith("az://lake/bip/")
    assert tables.predictions.uri == "az://lake/bip/predictions/credit_risk"
    for day in DAYS:
        rows = sum(
            b.num_rows
            for b in read_partition(tables.predictions, tables.partitioning, day.isoformat())
        )
        assert rows > 0
    catalog = snapshot(azure_lake.layout.catalog, UNPARTITIONED)
    assert catalog.dataset.count_rows() >= len(DAYS) * 2


def test_processed_input_is_archived_with_its_retention(azure_lake: AzureLake) -> None:
    tables = azure_lake.tables
    archive = snapshot(tables.archived_features, tables.partitioning)
    assert tables.archived_features.uri == "az://lake/bip/archive/features/credit_risk"
    # Retention 1 day, latest day 11-04: 11-02 was archived and then expired.
    assert archive.partitions() == [day.isoformat() for day in DAYS[1:]]


def test_a_missing_credential_names_the_variable(
    azure_lake: AzureLake, make_platform: PlatformFactory
) -> None:
    broken = make_platform(
        "azure_no_sas",
        LAKE__ROOT="az://lake/other",
        LAKE__STORAGE_OPTIONS=OPTIONS,
        LAKE__AZURE_AUTH="sas",
        deployment=_on_azure("az://lake/other"),
    )
    result = broken.job("generate_features_job").execute_in_process(
        partition_key=DAYS[0].isoformat(), instance=broken.instance, raise_on_error=False
    )
    assert not result.success
    assert "lake.azure-auth needs the environment variable AZURE_STORAGE_SAS_TOKEN" in (
        failure_messages(result)
    )


def test_no_credential_reaches_the_resource_config(azure_lake: AzureLake) -> None:
    resources = azure_lake.platform.defs.resources or {}
    assert AZURITE_KEY not in str(resources["lake"])
