SELECT column1 AS n, column2 AS word FROM (VALUES (1, 'one'), (2, 'two')) ORDER BY n
