SELECT id, meta FROM orders WHERE meta IS NOT NULL ORDER BY id
