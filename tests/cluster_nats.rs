//! The cluster executor on NATS JetStream (see `cluster_fleet`);
//! checkpoints still go to Redis.

use crate::cluster_support::Backend;

crate::cluster_tests!(
    Backend::Nats,
    2_000,
    #[cfg_attr(
        not(all(tributary_nats, tributary_redis)),
        ignore = "needs TRIBUTARY_NATS_URL and TRIBUTARY_REDIS_URL"
    )]
);
