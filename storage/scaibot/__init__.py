"""ScaiBot storage: ``bots`` (bots, tones, escalation rules, embed-token rows) and
``conversations`` (conversations, messages, escalations and hand-offs)."""
