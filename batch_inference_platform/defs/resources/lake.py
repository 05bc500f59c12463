"""``lake``: the Delta lake the platform reads features from and writes results to."""

import dagster as dg
import pydantic

from batch_inference_platform.lib.lake.azure import storage_options as azure_storage_options
from batch_inference_platform.lib.lake.layout import LakeLayout


class LakeResource(dg.ConfigurableResource):
    """The Delta lake the platform reads features from and writes results to."""

    root: str
    storage_options: dict[str, str] = pydantic.Field(default_factory=dict)
    """Non-secret delta-rs options (e.g. ``use_emulator``); credentials come from the
    environment according to ``azure_auth`` when the layout is built."""
    azure_auth: str = "none"
    archive_root: str = ""
    archive_retention_days: float = 400

    @property
    def layout(self) -> LakeLayout:
        options = azure_storage_options(self.azure_auth, self.storage_options)  # type: ignore[arg-type]
        return LakeLayout(self.root, options or None, self.archive_root)

    @property
    def options(self) -> dict[str, str]:
        """The storage options with credentials (never log them)."""
        return azure_storage_options(self.azure_auth, self.storage_options)  # type: ignore[arg-type]
