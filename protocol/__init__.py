"""The ScaiWave wire protocol: pure data and rules (stdlib + orjson only, no I/O, no clock)."""
