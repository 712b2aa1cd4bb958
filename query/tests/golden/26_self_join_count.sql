SELECT a.id, count(b.id) AS cheaper FROM orders a JOIN orders b ON b.total < a.total GROUP BY a.id ORDER BY cheaper DESC, a.id LIMIT 3
