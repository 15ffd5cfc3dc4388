"""DICOMweb's query keys (PS3.18 10.6), by keyword: those the DICOM context matches, those
it takes but cannot match (it keeps no such attribute), and the controls. The gateway
declares them (only declared parameters reach a service); the DICOM context
parses them (services/dicom/dicomweb.py)."""

from __future__ import annotations

MATCHED = {
    "StudyInstanceUID": "0020000D",
    "SeriesInstanceUID": "0020000E",
    "SOPInstanceUID": "00080018",
    "PatientID": "00100020",
    "Modality": "00080060",
    "ModalitiesInStudy": "00080061",
    "InstanceNumber": "00200013",
}
# Keys a viewer's study list sends (OHIF's, Slicer's) that are not kept.
UNMATCHED = (
    "PatientName",
    "PatientBirthDate",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
    "SeriesNumber",
    "SeriesDescription",
    "SOPClassUID",
)
CONTROLS = ("limit", "offset", "includefield", "fuzzymatching")
MAX_LIMIT = 1000
