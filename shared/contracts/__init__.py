"""Event contracts shared by every context. The only code services share besides the kit."""

from shared.contracts import acl, catalog, datasets, dicom, ingest, thumbnails
from shared.contracts.envelope import Event

REGISTRY: dict[str, type[Event]] = {
    event.type: event
    for module in (catalog, ingest, dicom, datasets, acl, thumbnails)
    for event in module.EVENTS
}
