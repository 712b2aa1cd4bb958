SELECT id, score FROM document.users WHERE score IS NOT NULL AND active IS NULL ORDER BY id
