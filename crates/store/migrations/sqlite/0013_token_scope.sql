-- What an agent's token lets it propose: runbooks and targets by pattern
-- and the highest risk, as JSON (`{"runbooks": ["restart-*"],
-- "targets": ["LT-*"], "max_risk": "reversible"}`); NULL limits nothing.
ALTER TABLE api_tokens ADD COLUMN scope TEXT;
