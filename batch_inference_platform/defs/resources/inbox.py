"""``inbox``: the durable inbox the webhook receivers write and the sensors read."""

import dagster as dg

from batch_inference_platform.lib.inbox.store import WebhookInbox


class InboxResource(dg.ConfigurableResource):
    """The durable inbox the webhook receivers write and the sensors read."""

    url: str

    @property
    def store(self) -> WebhookInbox:
        return WebhookInbox(self.url)
