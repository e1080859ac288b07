"""gRPC servicers: proto <-> domain conversion and error mapping. No Redis here."""
