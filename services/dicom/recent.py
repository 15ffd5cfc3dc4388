"""The series this process assembled lately, by file id and content.

A batch of a DICOM upload is admitted against the series its folder already has, and
joined to them in slice order: read back from the database, each batch of a growing series
decoded every instance the series had (a 3,000-instance series, 15 batches: 22,000
instances' facts). A series' row names its content (`sha256`, over its instances' in
order), so what is remembered under the same file id and content is the series as the
database has it, whichever process or transaction wrote it, and whether or not the
transaction that assembled it here committed.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.dicom.domain import Series

if TYPE_CHECKING:
    from services.dicom.handlers import Part

# Instances remembered at most (about 300 bytes each), the least recently used forgotten.
MAX_INSTANCES = 100_000


@dataclass(frozen=True)
class Remembered:
    sha256: str
    series: Series
    parts: dict[str, Part]  # by SOPInstanceUID


class Recent:
    def __init__(self, max_instances: int = MAX_INSTANCES) -> None:
        self.max_instances = max_instances
        self.held = 0
        self.series: OrderedDict[uuid.UUID, Remembered] = OrderedDict()

    def get(self, file_id: uuid.UUID, sha256: str | None) -> Remembered | None:
        found = self.series.get(file_id)
        if found is None or sha256 is None or found.sha256 != sha256:
            return None
        self.series.move_to_end(file_id)
        return found

    def put(self, file_id: uuid.UUID, remembered: Remembered) -> None:
        if (old := self.series.pop(file_id, None)) is not None:
            self.held -= old.series.instance_count
        if remembered.series.instance_count > self.max_instances:
            return
        self.series[file_id] = remembered
        self.held += remembered.series.instance_count
        while self.held > self.max_instances:
            _, gone = self.series.popitem(last=False)
            self.held -= gone.series.instance_count
