//! The PostgreSQL backend's typed errors: a server that does not answer,
//! refused credentials, a bad URL or schema name, a schema of a newer
//! tributary or of another application; and many processes migrating one
//! new schema at once.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tributary_postgres::{Database, PostgresError, SCHEMA_VERSION};

use crate::postgres_support::{TestSchema, url};

#[tokio::test]
async fn a_server_that_does_not_answer_is_unreachable() {
    // A port nobody listens on any more.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let err = Database::builder(format!("postgres://postgres@127.0.0.1:{port}/test"))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, PostgresError::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot reach PostgreSQL at 127.0.0.1:{port}/test")),
        "{err}"
    );
}

/// A server that answers the startup message as PostgreSQL does when a
/// password is wrong.
async fn refusing_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        loop {
            let len = socket.read_i32().await.unwrap();
            let mut body = vec![0; usize::try_from(len).unwrap() - 4];
            socket.read_exact(&mut body).await.unwrap();
            // An SSL request gets "no"; the startup message gets the error.
            if body.len() == 4 && body == 80_877_103i32.to_be_bytes() {
                socket.write_all(b"N").await.unwrap();
                continue;
            }
            break;
        }
        let mut fields = Vec::new();
        for (tag, value) in [
            (b'S', "FATAL"),
            (b'V', "FATAL"),
            (b'C', "28P01"),
            (b'M', "password authentication failed for user \"alice\""),
        ] {
            fields.push(tag);
            fields.extend_from_slice(value.as_bytes());
            fields.push(0);
        }
        fields.push(0);
        let mut message = vec![b'E'];
        message.extend_from_slice(&(i32::try_from(fields.len()).unwrap() + 4).to_be_bytes());
        message.extend_from_slice(&fields);
        socket.write_all(&message).await.unwrap();
        let _ = socket.shutdown().await;
    });
    port
}

#[tokio::test]
async fn refused_credentials_are_an_authentication_error_without_the_password() {
    let port = refusing_server().await;
    let err = Database::builder(format!("postgres://alice:hunter2@127.0.0.1:{port}/db"))
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PostgresError::Authentication { user, .. } if user == "alice"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("refused to authenticate user `alice`"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn a_bad_url_or_schema_name_is_refused_before_connecting() {
    let err = Database::connect("postgres://127.0.0.1:notaport/x")
        .await
        .unwrap_err();
    assert!(matches!(err, PostgresError::InvalidUrl { .. }), "{err:?}");
    for schema in [
        "Tributary",
        "1st",
        "a-b",
        "x\"; DROP TABLE y; --",
        &"a".repeat(41),
    ] {
        let err = Database::builder("postgres://postgres@127.0.0.1:1/test")
            .schema(schema)
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, PostgresError::InvalidSchema { schema: s } if s == schema),
            "{err:?}"
        );
    }
}

#[tokio::test]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn a_schema_of_a_newer_tributary_is_refused() {
    let schema = TestSchema::new("too_new");
    schema.connect().await.close().await.unwrap();
    let client = schema.client().await;
    client
        .batch_execute(&format!(
            "INSERT INTO \"{}\".tributary_migrations VALUES ({}, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
            schema.name,
            SCHEMA_VERSION + 1
        ))
        .await
        .unwrap();
    let err = Database::builder(url())
        .schema(&schema.name)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PostgresError::SchemaTooNew { found, supported, .. }
            if *found == SCHEMA_VERSION + 1 && *supported == SCHEMA_VERSION),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade tributary"), "{err}");
}

#[tokio::test]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn a_schema_holding_another_applications_tables_is_foreign() {
    let schema = TestSchema::new("foreign");
    let client = schema.client().await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA \"{0}\"; CREATE TABLE \"{0}\".checkpoints (id int)",
            schema.name
        ))
        .await
        .unwrap();
    let err = Database::builder(url())
        .schema(&schema.name)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PostgresError::Foreign { table, .. } if table == "checkpoints"),
        "{err:?}"
    );
    // Nothing of tributary's was added to it.
    let tables: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = $1",
            &[&schema.name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn handles_opening_a_new_schema_at_once_migrate_it_once() {
    let schema = TestSchema::new("migrate_race");
    let opened = futures_util::future::join_all((0..6).map(|_| schema.connect())).await;
    assert_eq!(opened.len(), 6);
    let client = schema.client().await;
    let versions: Vec<i32> = client
        .query(
            &format!(
                "SELECT version FROM \"{}\".tributary_migrations ORDER BY version",
                schema.name
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    // Every migration once, in order.
    let all: Vec<i32> = (1..=i32::try_from(SCHEMA_VERSION).unwrap()).collect();
    assert_eq!(versions, all);
}
