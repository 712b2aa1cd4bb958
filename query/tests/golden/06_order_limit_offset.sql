SELECT id, total FROM orders ORDER BY total DESC, id LIMIT 3 OFFSET 1
