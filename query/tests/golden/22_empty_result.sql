SELECT id FROM orders WHERE total < 0
