"""The facts Liandong carries: event types, Avro schemas, the envelope and its serde.

Nothing here performs I/O at import time and nothing here imports another Liandong package.
"""
