"""consentctl: the operators' command line."""
