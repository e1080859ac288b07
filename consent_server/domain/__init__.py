"""Pure domain logic: no gRPC, no Redis. Values, normalisation, validation, the decision rule."""
