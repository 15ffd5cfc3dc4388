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
    "PatientName": "00100010",
    "PatientBirthDate": "00100030",
    "StudyDate": "00080020",
    "StudyDescription": "00081030",
    "StudyID": "00200010",
    "AccessionNumber": "00080050",
    "ReferringPhysicianName": "00080090",
    "SeriesNumber": "00200011",
    "SeriesDescription": "0008103E",
    "SOPClassUID": "00080016",
}
# Keys a viewer's study list sends that are returned but not matched.
UNMATCHED = ("StudyTime",)
CONTROLS = ("limit", "offset", "includefield", "fuzzymatching")
MAX_LIMIT = 1000
