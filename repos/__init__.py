"""Date-sharded repositories for scheduled entities: the protocol and its adapters."""
