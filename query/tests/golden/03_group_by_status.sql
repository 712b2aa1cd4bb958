SELECT status, count(*) AS n, sum(total) AS revenue, avg(qty) AS avg_qty, min(placed) AS first, max(placed) AS last FROM orders GROUP BY status ORDER BY status
