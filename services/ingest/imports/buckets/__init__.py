"""A customer's bucket, as ingest reads it: `port` (what imports ask of a bucket, and
the problems it answers with) and `s3` (the adapter kept: aiohttp for HTTP, botocore
for AWS Signature V4 and credentials; see bench/README.md for why it, not obstore nor
aiobotocore's client). `listing` parses what S3 answers; `content` hashes and sniffs an
object as it streams."""
