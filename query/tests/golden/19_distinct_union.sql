SELECT region AS label FROM customers UNION SELECT status FROM orders ORDER BY label
