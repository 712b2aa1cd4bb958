SELECT o.id, o.customer, c.name FROM orders o LEFT JOIN customers c ON o.customer = c.id WHERE c.id IS NULL ORDER BY o.id
