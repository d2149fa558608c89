-- tapd schema version 5: the tamper-evident audit chain.
--
-- Every audit event gets its position in the chain (seq: 1, 2, … without gaps) and the SHA-256
-- of its predecessor's canonical encoding (prev_hash, hex; see src/store/chain.rs). The events
-- stored before this version are numbered in the order they were written (id) and linked by
-- tapd in the same transaction that runs this script. audit_chain holds the chain head and the
-- signed retention checkpoint (last pruned seq, its hash, how many were pruned).
ALTER TABLE audit ADD COLUMN seq BIGINT;
ALTER TABLE audit ADD COLUMN prev_hash TEXT COLLATE "C";
CREATE UNIQUE INDEX audit_seq ON audit (seq);

CREATE TABLE audit_chain (
    id                 SMALLINT PRIMARY KEY CHECK (id = 1),
    head_seq           BIGINT NOT NULL,
    head_hash          TEXT COLLATE "C" NOT NULL,
    checkpoint_seq     BIGINT,
    checkpoint_hash    TEXT COLLATE "C",
    checkpoint_count   BIGINT,
    checkpoint_key_id  TEXT COLLATE "C",
    checkpoint_mac     TEXT COLLATE "C"
);
INSERT INTO audit_chain (id, head_seq, head_hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
