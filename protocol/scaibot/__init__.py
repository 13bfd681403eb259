"""Pure rules of the ScaiBot module (seed 002, CONTRACT 13).

- ``bots``: bot config, slug and status validation;
- ``tone``: tone validation and the system-prompt assembly;
- ``escalation``: rule validation and trigger evaluation;
- ``embed``: embed-token signing and verification (``now`` passed in);
- ``sse``: the Server-Sent-Events named-event encoder.
"""
