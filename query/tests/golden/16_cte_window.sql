WITH ranked AS (SELECT id, customer, total, row_number() OVER (PARTITION BY customer ORDER BY total DESC) AS rk FROM orders) SELECT customer, id, total FROM ranked WHERE rk = 1 ORDER BY customer
