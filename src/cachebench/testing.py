"""Pytest plugin for testing code against the local cache emulator (fixture ``cache_emulator``)."""

from __future__ import annotations
