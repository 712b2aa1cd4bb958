SELECT id, name, since, vip, coalesce(vip, false) AS vip_or_false FROM customers ORDER BY id
