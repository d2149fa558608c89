//! Unit tests of what only the SQLite backend has: migrations, pragmas, file modes. The
//! behaviour every backend shares is in `tests/store_conformance.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;

use super::*;

/// Each group's id and transitive member ids, as `groups()` returns them.
async fn members_by_group(store: &SqliteStore) -> Vec<(String, Vec<String>)> {
    let groups = store.groups().await.unwrap();
    groups
        .into_iter()
        .map(|g| (g.id, g.member_user_ids))
        .collect()
}

fn pragma(conn: &Connection, name: &str) -> String {
    conn.query_row(&format!("PRAGMA {name}"), [], |row| {
        let v: rusqlite::types::Value = row.get(0)?;
        Ok(match v {
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Text(t) => t,
            other => format!("{other:?}"),
        })
    })
    .unwrap()
}

#[tokio::test]
async fn migrates_an_empty_file_and_sets_durable_pragmas() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.db");
    std::fs::File::create(&path).unwrap();
    let store = SqliteStore::open(&path, DEFAULT_BUSY_TIMEOUT)
        .await
        .unwrap();
    {
        let writer = store.writer.lock().await;
        assert_eq!(pragma(&writer, "user_version"), SCHEMA_VERSION.to_string());
        assert_eq!(
            pragma(&writer, "application_id"),
            schema::APPLICATION_ID.to_string()
        );
        assert_eq!(pragma(&writer, "journal_mode"), "wal");
        // 2 = FULL: acknowledged writes survive kill -9 and power loss.
        assert_eq!(pragma(&writer, "synchronous"), "2");
        assert_eq!(pragma(&writer, "foreign_keys"), "1");
        assert_eq!(pragma(&writer, "busy_timeout"), "5000");
        let tables: i64 = writer
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN \
                 ('users', 'groups', 'group_members', 'policy', 'taps', 'methods', 'audit', \
                 'sync_status')",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(tables, 8);
    }
    assert_eq!(store.policy().await.unwrap(), TapPolicy::default());
    drop(store);
    // Opening again is a no-op migration.
    let store = SqliteStore::open(&path, Duration::from_millis(250))
        .await
        .unwrap();
    let reader = store.readers.as_ref().unwrap().acquire().await.unwrap();
    let conn = reader.conn.as_ref().unwrap();
    assert_eq!(pragma(conn, "query_only"), "1");
    assert_eq!(pragma(conn, "busy_timeout"), "250");
}

#[tokio::test]
async fn refuses_a_schema_newer_than_this_binary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    drop(
        SqliteStore::open(&path, DEFAULT_BUSY_TIMEOUT)
            .await
            .unwrap(),
    );
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    match SqliteStore::open(&path, DEFAULT_BUSY_TIMEOUT).await {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!(found, SCHEMA_VERSION + 1);
            assert_eq!(supported, SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[tokio::test]
async fn refuses_another_applications_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "application_id", 0x1234).unwrap();
    }
    let err = SqliteStore::open(&path, DEFAULT_BUSY_TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

#[tokio::test]
async fn creates_private_directory_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("nested").join("tapd.db");
    drop(
        SqliteStore::open(&path, DEFAULT_BUSY_TIMEOUT)
            .await
            .unwrap(),
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&path), 0o600);
}

#[tokio::test]
async fn unopenable_path_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    // A path below a regular file can be neither created nor opened.
    let err = SqliteStore::open(&file.join("tapd.db"), DEFAULT_BUSY_TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn undecodable_rows_are_corrupt() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    store
        .writer
        .lock()
        .await
        .execute("INSERT INTO policy (id, body) VALUES (1, 'not json')", [])
        .unwrap();
    let err = store.policy().await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

#[test]
fn busy_and_locked_map_to_unavailable() {
    let busy =
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
    assert!(matches!(map_err(busy), StoreError::Unavailable(_)));
    let locked = rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_LOCKED),
        Some("locked".to_owned()),
    );
    assert!(matches!(map_err(locked), StoreError::Unavailable(_)));
    let corrupt = rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        None,
    );
    assert!(matches!(map_err(corrupt), StoreError::Corrupt(_)));
}

#[test]
fn audit_limit_defaults_and_caps() {
    let (sql, values) = audit_query(&AuditFilter::default());
    assert!(!sql.contains("WHERE"), "{sql}");
    assert_eq!(values.last(), Some(&rusqlite::types::Value::Integer(100)));
    let (_, values) = audit_query(&AuditFilter {
        limit: 5000,
        ..AuditFilter::default()
    });
    assert_eq!(values.last(), Some(&rusqlite::types::Value::Integer(1000)));
}

#[tokio::test]
async fn version_3_carries_version_2_memberships_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(include_str!("migrations/0001_initial.sql"))
            .unwrap();
        conn.execute_batch(include_str!("migrations/0002_web_sessions.sql"))
            .unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute_batch(
            "INSERT INTO users (id, dn, username, upn, display_name, mail, account_enabled) VALUES \
               ('u-a', 'uid=a', 'a', 'a@x', 'A', NULL, 1), \
               ('u-b', 'uid=b', 'b', 'b@x', 'B', NULL, 1), \
               ('u-c', 'uid=c', 'c', 'c@x', 'C', NULL, 0); \
             INSERT INTO \"groups\" (id, dn, display_name) VALUES ('g1', 'cn=g1', 'G1'), \
               ('g2', 'cn=g2', 'G2'); \
             INSERT INTO user_groups (user_id, group_id) VALUES ('u-a', 'g2'), ('u-a', 'g1'), \
               ('u-b', 'g2'), ('u-b', 'outside-scope');",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path, DEFAULT_BUSY_TIMEOUT)
        .await
        .unwrap();
    let groups_of = |u: Option<User>| u.unwrap().group_ids;
    assert_eq!(groups_of(store.user("u-a").await.unwrap()), ["g1", "g2"]);
    assert_eq!(
        groups_of(store.user("u-b").await.unwrap()),
        ["g2", "outside-scope"]
    );
    assert!(groups_of(store.user("u-c").await.unwrap()).is_empty());
    let members = members_by_group(&store).await;
    assert_eq!(
        members,
        [
            ("g1".to_owned(), vec!["u-a".to_owned()]),
            ("g2".to_owned(), vec!["u-a".to_owned(), "u-b".to_owned()]),
        ]
    );

    // Later syncs keep list and index in line: b leaves g2, a is deleted.
    let mut b = store.user("u-b").await.unwrap().unwrap();
    b.group_ids = vec!["g1".to_owned()];
    let plan = SyncPlan {
        upsert_users: vec![b],
        delete_user_ids: vec!["u-a".to_owned()],
        ..SyncPlan::default()
    };
    crate::store::apply_sync_leased(&store, &plan)
        .await
        .unwrap();
    let members = members_by_group(&store).await;
    assert_eq!(
        members,
        [
            ("g1".to_owned(), vec!["u-b".to_owned()]),
            ("g2".to_owned(), vec![]),
        ]
    );
    let writer = store.writer.lock().await;
    let rows: i64 = writer
        .query_row("SELECT count(*) FROM group_members", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 1, "no membership rows left behind");
}
