//! The production [`MetaStore`]: a real etcd cluster through the `etcd-client` crate.
//!
//! Invariant: compare-and-put is one etcd transaction comparing the key's mod revision, so two
//! nodes racing to write the placement can never both win.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp, WatchOptions, WatchStream,
};
use themis_log::seam::{LeaseId, MetaError, MetaStore, MetaValue, MetaWatch};
use tokio::sync::Mutex;

/// Cluster metadata in etcd.
pub struct EtcdMetaStore {
    client: Client,
    endpoints: Vec<String>,
    /// Open keep-alive streams by lease.
    keepers: Mutex<BTreeMap<LeaseId, (LeaseKeeper, LeaseKeepAliveStream)>>,
}

impl std::fmt::Debug for EtcdMetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdMetaStore")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

fn unavailable(e: etcd_client::Error) -> MetaError {
    MetaError::Unavailable(e.to_string())
}

impl EtcdMetaStore {
    /// Connects to etcd at `endpoints` (`host:port` or `http://host:port`, comma-separated).
    pub async fn connect(endpoints: &str) -> Result<Self, MetaError> {
        let endpoints: Vec<String> = endpoints
            .split(',')
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(MetaError::Unavailable("no etcd endpoint given".into()));
        }
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5));
        let cannot = |e: etcd_client::Error| {
            MetaError::Unavailable(format!(
                "cannot connect to etcd at {}: {e}",
                endpoints.join(",")
            ))
        };
        let mut client = Client::connect(&endpoints, Some(options))
            .await
            .map_err(cannot)?;
        // The client connects lazily: one request tells now whether etcd answers.
        client.status().await.map_err(cannot)?;
        Ok(Self {
            client,
            endpoints,
            keepers: Mutex::default(),
        })
    }
}

#[async_trait]
impl MetaStore for EtcdMetaStore {
    async fn get(&self, key: &str) -> Result<Option<MetaValue>, MetaError> {
        let answer = self
            .client
            .clone()
            .get(key, None)
            .await
            .map_err(unavailable)?;
        Ok(answer.kvs().first().map(|kv| MetaValue {
            value: Bytes::copy_from_slice(kv.value()),
            mod_revision: kv.mod_revision(),
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, MetaValue)>, MetaError> {
        let answer = self
            .client
            .clone()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        answer
            .kvs()
            .iter()
            .map(|kv| {
                let key = kv
                    .key_str()
                    .map_err(|e| MetaError::Unavailable(format!("a key is not UTF-8: {e}")))?;
                Ok((
                    key.to_owned(),
                    MetaValue {
                        value: Bytes::copy_from_slice(kv.value()),
                        mod_revision: kv.mod_revision(),
                    },
                ))
            })
            .collect()
    }

    async fn compare_and_put(
        &self,
        key: &str,
        expected: i64,
        value: Bytes,
    ) -> Result<Option<i64>, MetaError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key, value.to_vec(), None)]);
        let answer = self.client.clone().txn(txn).await.map_err(unavailable)?;
        Ok(answer
            .succeeded()
            .then(|| answer.header().map_or(0, |h| h.revision())))
    }

    async fn put(&self, key: &str, value: Bytes, lease: Option<LeaseId>) -> Result<i64, MetaError> {
        let options = lease.map(|l| PutOptions::new().with_lease(l));
        match self.client.clone().put(key, value.to_vec(), options).await {
            Ok(answer) => Ok(answer.header().map_or(0, |h| h.revision())),
            Err(e) if lease.is_some() && e.to_string().contains("requested lease not found") => {
                Err(MetaError::LeaseExpired(lease.unwrap_or_default()))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, MetaError> {
        let seconds = ttl.as_secs().max(1) as i64;
        let answer = self
            .client
            .clone()
            .lease_grant(seconds, None)
            .await
            .map_err(unavailable)?;
        Ok(answer.id())
    }

    async fn watch(&self, prefix: &str) -> Result<Box<dyn MetaWatch>, MetaError> {
        let stream = self
            .client
            .clone()
            .watch(prefix, Some(WatchOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        Ok(Box::new(EtcdWatch { stream }))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), MetaError> {
        let mut keepers = self.keepers.lock().await;
        let (keeper, stream) = match keepers.entry(lease) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => v.insert(
                self.client
                    .clone()
                    .lease_keep_alive(lease)
                    .await
                    .map_err(unavailable)?,
            ),
        };
        let renewed = async {
            keeper.keep_alive().await?;
            stream.message().await
        }
        .await;
        match renewed {
            Ok(Some(answer)) if answer.ttl() > 0 => Ok(()),
            Ok(Some(_)) => {
                keepers.remove(&lease);
                Err(MetaError::LeaseExpired(lease))
            }
            Ok(None) => {
                keepers.remove(&lease);
                Err(MetaError::Unavailable(
                    "etcd closed the keep-alive stream".into(),
                ))
            }
            Err(e) => {
                keepers.remove(&lease);
                Err(unavailable(e))
            }
        }
    }
}

/// An etcd watch on a prefix.
struct EtcdWatch {
    stream: WatchStream,
}

#[async_trait]
impl MetaWatch for EtcdWatch {
    async fn changed(&mut self) -> Result<(), MetaError> {
        loop {
            match self.stream.message().await.map_err(unavailable)? {
                Some(answer) if answer.canceled() => {
                    return Err(MetaError::Unavailable(format!(
                        "etcd canceled the watch: {}",
                        answer.cancel_reason()
                    )));
                }
                Some(answer) if !answer.events().is_empty() => return Ok(()),
                // The creation notice, or progress without events.
                Some(_) => {}
                None => return Err(MetaError::Unavailable("etcd closed the watch".into())),
            }
        }
    }
}
