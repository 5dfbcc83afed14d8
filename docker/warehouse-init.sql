-- Demo warehouse for docker-compose: the same shape as `make demo`'s SQLite warehouse.
CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, phone TEXT, email TEXT, loyalty_tier TEXT, ltv NUMERIC(12, 2));
INSERT INTO customers
SELECT i, '+1415' || lpad((2000000 + i)::text, 7, '0'), 'customer' || i || '@example.com',
       (ARRAY['bronze', 'silver', 'gold'])[1 + i % 3], i * 12.5
FROM generate_series(0, 1999) AS i;

CREATE TABLE shipments (order_id TEXT PRIMARY KEY, phone TEXT, email TEXT, shipped_at TIMESTAMP, carrier TEXT,
                        tracking_url TEXT);
INSERT INTO shipments
SELECT 'order-' || (1000 + i), '+1415' || lpad((2000000 + i)::text, 7, '0'), NULL,
       date_trunc('day', now() AT TIME ZONE 'UTC') - interval '1 day' + i * interval '37 minutes',
       (ARRAY['fedex', 'ups', 'usps'])[1 + i % 3], 'https://track.example.com/' || (1000 + i)
FROM generate_series(0, 29) AS i;

CREATE TABLE vip_members (phone TEXT PRIMARY KEY, email TEXT, first_name TEXT);
INSERT INTO vip_members
SELECT '+1415' || lpad((2000000 + i)::text, 7, '0'), 'customer' || i || '@example.com', 'Vip' || i
FROM generate_series(0, 398, 2) AS i;
