"""The Redis client type every store module takes: one node or a cluster (fakeredis is a
single-node client)."""

from __future__ import annotations

from typing import TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

RedisClient: TypeAlias = aioredis.Redis | RedisCluster
