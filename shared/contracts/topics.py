"""One topic per producing context, keyed by stream id."""

CATALOG = "files.catalog"
INGEST = "files.ingest"
DICOM = "files.dicom"
DATASETS = "files.datasets"
ACL = "files.acl"
THUMBNAILS = "files.thumbnails"

ALL = (CATALOG, INGEST, DICOM, DATASETS, ACL, THUMBNAILS)


def dead_letters(topic: str) -> str:
    return f"{topic}.dlq"
