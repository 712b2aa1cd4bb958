SELECT id, upper(name) AS up, length(name) AS len, substr(name, 1, 3) AS prefix, name LIKE '%o%' AS has_o FROM customers ORDER BY id
