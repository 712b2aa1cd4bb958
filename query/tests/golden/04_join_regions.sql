SELECT c.region, count(o.id) AS orders, round(sum(o.total), 2) AS revenue FROM orders o JOIN customers c ON o.customer = c.id GROUP BY c.region ORDER BY revenue DESC
