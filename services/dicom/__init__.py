"""The DICOM context: instances read from uploaded files, grouped into series (issue 5)."""
