SELECT id, data FROM document.users ORDER BY id
