"""The result cache: L1 (Redis), L2 (Firestore) and the tiered cache in front of them."""

from __future__ import annotations

from backend.cache.base import (
    CachedImage,
    CacheError,
    CacheLayer,
    EntryTooLarge,
    ImageInfo,
    L1Layer,
)
from backend.cache.firestore_l2 import FirestoreL2, create_firestore_client
from backend.cache.redis_l1 import RedisL1
from backend.cache.tiered import TieredCache

__all__ = [
    "CacheError",
    "CacheLayer",
    "CachedImage",
    "EntryTooLarge",
    "FirestoreL2",
    "ImageInfo",
    "L1Layer",
    "RedisL1",
    "TieredCache",
    "create_firestore_client",
]
