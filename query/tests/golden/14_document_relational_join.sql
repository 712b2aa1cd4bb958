SELECT u.name AS user_name, c.name AS customer_name, c.region FROM document.users u JOIN customers c ON substr(lower(u.name), 1, 1) = substr(lower(c.name), 1, 1) ORDER BY u.name
