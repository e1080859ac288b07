"""Generated from proto/consent/v1 by `make proto`. Do not edit."""
