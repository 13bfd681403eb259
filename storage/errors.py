"""Storage's own errors. Only ``homeserver/errors.py`` turns them into wire errors.

StorageError
├── Conflict            a unique key is taken (username, DM pair)
├── NotFound            a row that must exist does not
└── MigrationError      the schema on disk is newer or broken
"""

from __future__ import annotations


class StorageError(Exception):
    pass


class Conflict(StorageError):
    pass


class NotFound(StorageError):
    pass


class MigrationError(StorageError):
    pass
