-- tapd schema version 6: the tamper-evident audit chain.
--
-- Every audit event gets its position in the chain (seq: 1, 2, … without gaps) and the SHA-256
-- of its predecessor's canonical encoding (prev_hash, hex; see src/store/chain.rs). The events
-- stored before this version are numbered in the order they were written (id) and linked by
-- tapd in the same transaction that runs this script. audit_chain holds the chain head and the
-- signed retention checkpoint (last pruned seq, its hash, how many were pruned).
ALTER TABLE audit ADD COLUMN seq INTEGER;
ALTER TABLE audit ADD COLUMN prev_hash TEXT;
CREATE UNIQUE INDEX audit_seq ON audit (seq);

CREATE TABLE audit_chain (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    head_seq           INTEGER NOT NULL,
    head_hash          TEXT NOT NULL,
    checkpoint_seq     INTEGER,
    checkpoint_hash    TEXT,
    checkpoint_count   INTEGER,
    checkpoint_key_id  TEXT,
    checkpoint_mac     TEXT
);
INSERT INTO audit_chain (id, head_seq, head_hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
