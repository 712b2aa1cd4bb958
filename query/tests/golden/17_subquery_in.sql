SELECT name FROM customers WHERE id IN (SELECT customer FROM orders WHERE status = 'paid') ORDER BY name
