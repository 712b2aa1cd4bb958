SELECT id, status, meta FROM orders WHERE id IN ('o02', 'o09') ORDER BY id
