-- zoo registry schema (Postgres).

CREATE TABLE models (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL,
    created_by  TEXT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE versions (
    model       TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
    version     TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('uploading', 'ready', 'failed')),
    format      TEXT,
    sha256      TEXT,
    size        BIGINT NOT NULL DEFAULT 0,
    task        TEXT,
    runtime     TEXT,
    servable    BOOLEAN NOT NULL DEFAULT FALSE,
    reason      TEXT,
    signature   TEXT,
    labels      TEXT NOT NULL DEFAULT '[]',
    warmup_ms   DOUBLE PRECISION,
    created_at  TIMESTAMPTZ NOT NULL,
    created_by  TEXT NOT NULL,
    PRIMARY KEY (model, version)
);
CREATE INDEX versions_sha256 ON versions(sha256);
CREATE INDEX versions_status ON versions(status, created_at);

CREATE TABLE aliases (
    model      TEXT NOT NULL,
    alias      TEXT NOT NULL,
    version    TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES versions(model, version) ON DELETE CASCADE
);

CREATE TABLE alias_history (
    id           BIGSERIAL PRIMARY KEY,
    model        TEXT NOT NULL,
    alias        TEXT NOT NULL,
    from_version TEXT,
    to_version   TEXT,
    changed_at   TIMESTAMPTZ NOT NULL,
    changed_by   TEXT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    hash         TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    models       TEXT NOT NULL DEFAULT '[]',
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
