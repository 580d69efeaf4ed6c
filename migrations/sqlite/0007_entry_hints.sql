-- An optional Workload API hint per entry (the `hint` of its SVIDs).
ALTER TABLE entries ADD COLUMN hint TEXT;
