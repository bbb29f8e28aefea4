"""The Redis spool: several collectors share one queue (docs/redis.md). Needs the
`redis` extra: ``pip install 'yespo-collector[redis]'``."""

from .spool import RedisSpool

__all__ = ["RedisSpool"]
