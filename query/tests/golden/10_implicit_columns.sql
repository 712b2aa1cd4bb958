SELECT id, _revision, _shard >= 0 AS has_shard, _lsn > 0 AS has_lsn, _updated_ms > 0 AS has_ts FROM orders WHERE id IN ('o01', 'o02') ORDER BY id
