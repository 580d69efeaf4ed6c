-- The foreign trust domains whose bundles a workload of this entry receives
-- (a JSON array of trust domain names, each with a federation relationship
-- when the entry was written).
ALTER TABLE entries ADD COLUMN federates_with TEXT NOT NULL DEFAULT '[]';
