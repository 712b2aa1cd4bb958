SELECT count(DISTINCT customer) AS customers, count(*) AS orders, sum(qty) AS items FROM orders
