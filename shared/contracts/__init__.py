"""Event contracts shared by every context. The only code services share besides the kit."""

from shared.contracts import acl, catalog, datasets, dicom, ingest, renditions, thumbnails
from shared.contracts.envelope import Event

REGISTRY: dict[str, type[Event]] = {
    event.type: event
    for module in (catalog, ingest, dicom, datasets, acl, thumbnails, renditions)
    for event in module.EVENTS
}

# Published types no read model or reaction consumes, and why (tests/unit/test_reactions.py
# holds every other type to having a consumer).
READ_BY_NO_ONE: dict[str, str] = {
    ingest.ImportObjectsRequested.type: "read back from its job's stream when an import resumes",
    # The rows of ingest.webhooks are the webhooks' state; these are for the audit trail.
    ingest.WebhookRegistered.type: "the audit trail's (ingest.webhooks is written beside it)",
    ingest.WebhookRemoved.type: "the audit trail's (ingest.webhooks is written beside it)",
    ingest.WebhookSecretRotated.type: "the audit trail's (ingest.webhooks is written beside it)",
}
