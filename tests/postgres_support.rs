//! Helpers of the PostgreSQL tests: the server's URL, and a schema of the
//! test's own, dropped when the test ends, so tests run in parallel and
//! never touch the shared database's other contents.

use tributary_postgres::Database;

/// `TRIBUTARY_POSTGRES_URL`; the tests that call this are ignored without
/// it.
pub(crate) fn url() -> String {
    std::env::var("TRIBUTARY_POSTGRES_URL")
        .expect("TRIBUTARY_POSTGRES_URL is set (the test is ignored otherwise)")
}

/// A schema of the test's own (`t_{name}_{random}`), dropped with the
/// guard.
#[derive(Debug)]
pub(crate) struct TestSchema {
    pub(crate) name: String,
}

impl TestSchema {
    pub(crate) fn new(name: &str) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        TestSchema {
            name: format!("t_{name}_{}", &suffix[..10]),
        }
    }

    /// A database handle on the schema.
    pub(crate) async fn connect(&self) -> Database {
        Database::builder(url())
            .schema(&self.name)
            .connect()
            .await
            .unwrap()
    }

    /// A plain connection for checks the API does not offer.
    pub(crate) async fn client(&self) -> tokio_postgres::Client {
        client().await
    }
}

/// A plain connection to the test database; its driver runs on the
/// caller's runtime until the client is dropped.
pub(crate) async fn client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Its own thread and runtime: the test's runtime may be shutting
        // down.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&url(), tokio_postgres::NoTls).await
                {
                    let driver = tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .await;
                    drop(client);
                    let _ = driver.await;
                }
            });
        })
        .join();
    }
}
