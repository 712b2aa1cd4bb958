SELECT * EXCLUDE (_updated_ms) FROM orders ORDER BY id
