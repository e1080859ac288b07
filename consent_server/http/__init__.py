"""The optional HTTP edge (SPEC §12): WhatsApp webhooks and consent link pages."""
