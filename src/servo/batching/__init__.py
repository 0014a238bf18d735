"""Server-side batching: TFS's shared batch scheduler and the servable wrapper."""
