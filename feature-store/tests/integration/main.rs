//! Integration tests against real components: the online-store contract run against the
//! memory store and a real `redis-server`, and the Kafka ingester against a real `tansu`
//! broker (see `feature_store::testkit`; `scripts/setup.sh` installs both). One binary.

mod common;
mod ingest;
mod store_contract;
