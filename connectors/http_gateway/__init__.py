"""The HTTP gateway: CloudEvents over HTTP in, Avro on Kafka out."""
