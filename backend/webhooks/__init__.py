"""Webhooks: which callback URLs are safe to call (``urls``) and how deliveries are signed
(``signing``). The worker delivers them (``backend.queue.webhooks``)."""
