-- Serving settings given at deploy (batching, instances, load policy, limits), as JSON.
ALTER TABLE versions ADD COLUMN serving TEXT NOT NULL DEFAULT '{}';
