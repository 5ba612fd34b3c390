"""Embedding cache: extract per-layer tokens once into content-addressed Zarr stores; read them fast.

Modules, one job each (none calls back into a module that imports it):
    spec        TokenSpec (what changes the stored bytes) and RunOptions (how to run)
    fs          where a store lives: a local folder or an fsspec URL (s3://, gs://, ...); the storage seam
    keys        content key, digest, store path
    codec       storage dtypes, int8 quantisation, encode for storage / decode to float
    layout      StoreLayout: shapes and shards of a store
    disk        free space, sizes, disk-full errors
    lock        ExtractionLock (file locks; lease objects on object stores)
    shards      ShardReader: chunk reads straight from Zarr v3 shard files
    store       TokenStore: creation, shard commits, completion records, verification
    pipeline    decode + frontend in DataLoader workers, clip labels and folds
    planning    plan() -> Plan, DryRun
    extraction  extract(): the write path
    reader      CacheReader, open_cache()
    online      OnlineTokens: the live backbone as TokenData
"""

from probekit.cache.extraction import Extraction, extract, run_extraction
from probekit.cache.keys import default_cache_dir, key_digest
from probekit.cache.planning import DryRun, Plan, plan
from probekit.cache.reader import CacheReader, open_cache
from probekit.cache.spec import RunOptions, TokenSpec
from probekit.cache.store import TokenStore, list_stores, remove_store

__all__ = [
    "CacheReader",
    "DryRun",
    "Extraction",
    "Plan",
    "RunOptions",
    "TokenSpec",
    "TokenStore",
    "default_cache_dir",
    "extract",
    "key_digest",
    "list_stores",
    "open_cache",
    "plan",
    "remove_store",
    "run_extraction",
]
