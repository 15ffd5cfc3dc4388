"""The thumbnails context: small pictures of stored content, drawn by reaction (issue 14)."""
