//! How many servers keep a copy of each of koan's streams and buckets
//! (`koan.nats.replicas`): chosen when a transport connects, given to the streams
//! it makes, and to those made before with fewer. A stream's durable consumers
//! follow it (koan leaves their `num_replicas` at 0: the stream's).
//!
//! With one copy, the server holding it down meant every enqueue refused ("no
//! stream found") for as long as it was down, and its store lost meant accepted
//! jobs lost (found by a probe on a 3-node cluster).

use std::time::Duration;

use async_nats::ServerInfo;
use async_nats::jetstream::{self, stream};

use crate::options::NatsOptions;

/// The most copies chosen without `koan.nats.replicas`: three servers keep a
/// stream available with one of them down, at a third of the writes' cost of five.
const AUTOMATIC_MAX: usize = 3;

/// The copies koan's streams are kept in, and whether the configuration said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replicas {
    count: usize,
    configured: bool,
}

impl Replicas {
    /// `koan.nats.replicas` if set, else by what the server this client connected
    /// to says of its cluster; the log says which, and why.
    pub(crate) fn choose(opts: &NatsOptions, info: &ServerInfo) -> Replicas {
        if let Some(count) = opts.replicas {
            tracing::info!(
                replicas = count,
                "koan's streams and buckets are kept on {count} server(s), as `koan.nats.replicas` says"
            );
            return Replicas {
                count,
                configured: true,
            };
        }
        let (count, why) = automatic(info.cluster.as_deref(), &info.connect_urls);
        tracing::info!(
            replicas = count,
            "koan's streams and buckets are kept on {count} server(s): {why} (set `koan.nats.replicas` to choose)"
        );
        Replicas {
            count,
            configured: false,
        }
    }

    /// How many copies a stream made now gets.
    pub(crate) fn count(self) -> usize {
        self.count
    }

    /// What to tell of a stream's creation refused with `error`, when its copies
    /// may be why: more than the cluster has servers with JetStream up
    /// ("insufficient resources"), or any on a server not in a cluster
    /// ("replicas > 1 not supported in non-clustered mode").
    pub(crate) fn refused(self, error: &str) -> Option<String> {
        let copies = error.contains("replicas") || error.contains("insufficient resources");
        (self.count > 1 && copies).then(|| {
            format!(
                "it is to be kept on {} servers (`koan.nats.replicas`, KOAN__NATS__REPLICAS): has the server a cluster with that many servers up?",
                self.count
            )
        })
    }

    /// What a stream kept on `had` servers is to be set to, if anything: the
    /// chosen count when it has fewer; a configured count also when it has more
    /// (one host started while a server was down does not lower the others').
    fn change_from(self, had: usize) -> Option<usize> {
        let had = had.max(1);
        (had < self.count || (self.configured && had > self.count)).then_some(self.count)
    }
}

/// The count chosen for a server in the cluster named `cluster` (none: a single
/// server) that advertises `connect_urls` (its own and those of its cluster's
/// servers up now), and why.
fn automatic(cluster: Option<&str>, connect_urls: &[String]) -> (usize, String) {
    let Some(cluster) = cluster else {
        return (1, "the server is not in a cluster".to_owned());
    };
    let mut servers: Vec<&String> = connect_urls.iter().collect();
    servers.sort();
    servers.dedup();
    match servers.len() {
        0 => (
            1,
            format!(
                "the server is in cluster `{cluster}` but does not advertise its servers (`no_advertise`), so their number is unknown"
            ),
        ),
        n => (
            n.min(AUTOMATIC_MAX),
            format!(
                "the server is in cluster `{cluster}`, which has {n} server(s) up (at most {AUTOMATIC_MAX} are chosen)"
            ),
        ),
    }
}

/// Sets the stream `had` describes to `replicas`' count if it is to change,
/// saying so; the configuration the stream has afterwards. A refusal (a cluster
/// with fewer servers up than asked) is a warning naming the stream and the fix:
/// the stream keeps working with the copies it has.
pub(crate) async fn keep(
    js: &jetstream::Context,
    had: stream::Config,
    replicas: Replicas,
) -> stream::Config {
    let Some(count) = replicas.change_from(had.num_replicas) else {
        return had;
    };
    let name = had.name.clone();
    let from = had.num_replicas.max(1);
    let wanted = stream::Config {
        num_replicas: count,
        ..had.clone()
    };
    match js.update_stream(&wanted).await {
        Ok(info) => {
            tracing::info!(
                stream = %name,
                from,
                to = count,
                "stream's copies changed to this host's replicas"
            );
            settled(js, &name, count).await;
            info.config
        }
        Err(e) => {
            tracing::warn!(
                stream = %name,
                from,
                wanted = count,
                error = %e,
                "could not change how many servers keep the stream: it keeps {from}; start the host again once the cluster has {count} servers with JetStream up, or run `nats stream edit {name} --replicas {count}`"
            );
            had
        }
    }
}

/// How long a stream whose copies changed is given to elect its leader and
/// bring its copies up to date.
const SETTLE: Duration = Duration::from_secs(10);

/// Waits (up to [`SETTLE`]) until stream `name` has a leader and `count` copies
/// up to date: meanwhile the server answers a write to it "no stream found" (a
/// host's first heartbeat after it raised the registry's copies failed so).
async fn settled(js: &jetstream::Context, name: &str, count: usize) {
    let ready = async {
        loop {
            let cluster = match js.get_stream(name).await {
                Ok(mut stream) => stream.info().await.ok().and_then(|i| i.cluster.clone()),
                Err(_) => None,
            };
            let ready = cluster.is_some_and(|c| {
                c.leader.is_some()
                    && c.replicas.len() + 1 == count
                    && c.replicas.iter().all(|r| r.current && !r.offline)
            });
            if ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(SETTLE, ready).await.is_err() {
        tracing::warn!(
            stream = %name,
            replicas = count,
            "the stream's copies are not up to date {SETTLE:?} after they changed: writes to it may fail until they are"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("127.0.0.1:{}", 4222 + i)).collect()
    }

    #[test]
    fn a_single_server_keeps_one_copy_and_a_cluster_up_to_three() {
        assert_eq!(automatic(None, &urls(1)).0, 1);
        assert_eq!(automatic(Some("c"), &urls(1)).0, 1);
        assert_eq!(automatic(Some("c"), &urls(2)).0, 2);
        assert_eq!(automatic(Some("c"), &urls(3)).0, 3);
        assert_eq!(automatic(Some("c"), &urls(5)).0, 3);
        // An address advertised twice is one server.
        let mut twice = urls(2);
        twice.push(twice[0].clone());
        assert_eq!(automatic(Some("c"), &twice).0, 2);
        let (n, why) = automatic(Some("c"), &[]);
        assert_eq!(n, 1);
        assert!(why.contains("no_advertise"), "{why}");
    }

    #[test]
    fn streams_with_fewer_copies_are_raised_and_only_a_configured_count_lowers() {
        let chosen = Replicas {
            count: 3,
            configured: false,
        };
        assert_eq!(chosen.change_from(1), Some(3));
        assert_eq!(chosen.change_from(0), Some(3));
        assert_eq!(chosen.change_from(3), None);
        assert_eq!(chosen.change_from(5), None);
        let configured = Replicas {
            count: 3,
            configured: true,
        };
        assert_eq!(configured.change_from(5), Some(3));
        assert_eq!(configured.change_from(3), None);
        let single = Replicas {
            count: 1,
            configured: false,
        };
        assert_eq!(single.change_from(0), None);
        assert_eq!(single.change_from(1), None);
    }
}
