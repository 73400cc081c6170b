//! The cluster executor on Redis Streams (see `cluster_fleet`), and the
//! Redis persister's contract.

use std::sync::Arc;

use tributary::Persister;
use tributary_cluster::RedisPersister;

use crate::cluster_support::Backend;
use crate::persister_contract::Open;
use crate::stream_support::{service_url, unique};

crate::cluster_tests!(
    Backend::Redis,
    10_000,
    #[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
);

/// A key prefix of its own, connected again on every call.
fn redis() -> Open {
    let prefix = unique("cp");
    Arc::new(move || {
        let prefix = prefix.clone();
        Box::pin(async move {
            let url = service_url("TRIBUTARY_REDIS_URL");
            let p: Arc<dyn Persister> = Arc::new(
                RedisPersister::connect_with_prefix(&url, &prefix)
                    .await
                    .unwrap(),
            );
            p
        })
    })
}

mod persister {
    use super::redis;

    crate::persister_contract_tests!(
        redis(),
        #[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
    );
}
