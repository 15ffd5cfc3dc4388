"""Generated from proto/files/v1/files.proto by `make proto`; not edited by hand."""
