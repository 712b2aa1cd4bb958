SELECT id, name, age, score, active, city, tags, address, _revision FROM document.users ORDER BY id
