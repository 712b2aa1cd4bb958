SELECT id, CASE WHEN total >= 200 THEN 'large' WHEN total >= 50 THEN 'medium' ELSE 'small' END AS size FROM orders ORDER BY id
