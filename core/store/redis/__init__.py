"""The Redis backend: every store on one shared client (``backend.RedisBackend``); calls that
cannot reach Redis raise ``StoreUnavailable`` (``client.guarded``)."""
