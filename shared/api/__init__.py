"""The public HTTP API's shapes: request bodies and answers, one module per context.

One definition for two readers: the services validate the request bodies with these
models (catalog, acl, datasets), and the gateway describes every public route with
them in `/openapi.json` without importing any service. Ingest parses its own bodies
in its domain (it names every fault of a manifest at once); the models here describe
those bodies for the document. Answers are described, not enforced: a service builds
its answer as a dict, and the fuzz test (tests/e2e/test_fuzz.py) checks each answer
against its model.
"""
