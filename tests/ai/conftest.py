"""Fixtures for the AI-room tests (the harness lives in ai_support)."""

from tests.ai.ai_support import env

__all__ = ["env"]
