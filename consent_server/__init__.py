"""The consent authority: a gRPC service that decides whether a business may message a customer."""

__version__ = "0.1.0"
