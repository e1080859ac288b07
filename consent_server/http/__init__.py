"""The optional HTTP edge: WhatsApp webhooks and consent link pages."""
