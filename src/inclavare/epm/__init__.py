"""epm, the enclave pool manager: a daemon on a Unix socket holding bundle caches for rune (see daemon.py).

The original's operations over its Cache record {type, subType, ID, savePath, parent, size, created, options}:
GetCache, PickCache, SaveCache, ListCache, DeleteCache. The wire format is one JSON object per line each way
(protocol.py); the standard library only, so that a client (rune) pays no import beyond json and socket.
"""
