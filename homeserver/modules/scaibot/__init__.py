"""ScaiBot (seed 002, CONTRACT 13), mounted under ``/v1/modules/scaibot/``."""
