"""TFS's gRPC API."""
