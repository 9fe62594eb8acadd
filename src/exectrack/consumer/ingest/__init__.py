"""Where an event becomes a row: records -> events -> folds -> one transaction.

- ``decode``: a fetched batch of Kafka records -> per-execution fold states and dead letters
- ``fold``: the fold itself, pure (CONTRACT.md "The fold"): events -> one row's fields
- ``writer``: one transaction per batch, retries, isolating what the database refuses
- ``pipeline``: batch N is written while batch N+1 is decoded
- ``anomalies``: what the fold tolerates but an operator should hear about
"""

__all__ = ["anomalies", "decode", "fold", "pipeline", "writer"]
