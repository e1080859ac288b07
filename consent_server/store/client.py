"""The Redis client type every store module takes: one node or a cluster (fakeredis is a
single-node client)."""

from __future__ import annotations

from typing import TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster

RedisClient: TypeAlias = aioredis.Redis | RedisCluster
#: What ``RedisClient.pipeline()`` returns; its ``execute()`` replies are untyped (Any).
RedisPipeline: TypeAlias = Pipeline | ClusterPipeline

#: One value in a reply: bytes, or str from a client made with ``decode_responses=True``
#: (redis-py cannot know which, so its stubs say both); ``records.text`` decodes it once.
Reply: TypeAlias = bytes | str
