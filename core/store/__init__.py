"""Shared state: the journal of record (with replay keys), tokens, risk state, rate limits.

* ``protocols`` — what the rest of the router may ask of each store (``Journal``,
  ``TokenStore``, ``RiskStore``, ``RateStore``).
* ``states`` — ``AlertState`` and ``FlattenState``, and every list of states derived from them.
* ``journal``, ``tokens``, ``risk`` — what every backend shares: returned types, stored
  formats, checks.
* ``factory`` — ``StateBackend``: reads the state URL once and opens every store on
  ``sqlite/`` (files under DATA_DIR) or ``redis/`` (one Redis for every machine).
"""
