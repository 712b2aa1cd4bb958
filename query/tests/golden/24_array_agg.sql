SELECT customer, array_agg(id ORDER BY id) AS ids FROM orders GROUP BY customer ORDER BY customer
