SELECT id, customer, total FROM orders WHERE total > 100 AND status <> 'refunded' ORDER BY total DESC
