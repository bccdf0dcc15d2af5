"""epm, the enclave pool manager: a daemon on a Unix socket holding bundle caches for rune and a pool of
pre-initialised enclaves for PAL v3 runtimes (see daemon.py, store.py, pool.py).

The original's operations over its Cache record {type, subType, ID, savePath, parent, size, created, options}:
GetCache, PickCache, SaveCache, ListCache, DeleteCache; PickEnclave hands out one pooled enclave as a file
descriptor. The wire format is one JSON object per line each way, several requests per connection (protocol.py);
rune's side (inclavare/enclave/epm_client.py) uses `_socket` and the `_json` accelerator only.
"""
