//! The state of the connection to the NATS server, followed from the client's
//! connect and disconnect events.

use std::sync::Arc;

use tokio::sync::watch;

/// Whether the connection to the NATS server is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connected: calls, events and publishes reach the server.
    Connected,
    /// The server is gone; the client keeps reconnecting in the background.
    Disconnected,
}

impl std::fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConnectionState::Connected => "connected",
            ConnectionState::Disconnected => "disconnected",
        })
    }
}

/// The sending side, fed by the client's event callback, and how many times the
/// connection came back.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionWatch(
    Arc<watch::Sender<ConnectionState>>,
    Arc<std::sync::atomic::AtomicU64>,
);

impl ConnectionWatch {
    /// Starts as connected: the client exists only once its first connect succeeded.
    pub(crate) fn new() -> Self {
        ConnectionWatch(
            Arc::new(watch::Sender::new(ConnectionState::Connected)),
            Arc::default(),
        )
    }

    pub(crate) fn set(&self, state: ConnectionState) {
        let changed = self
            .0
            .send_if_modified(|s| std::mem::replace(s, state) != state);
        if changed && state == ConnectionState::Connected {
            self.1.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// How many times the connection came back after it was lost.
    pub(crate) fn reconnects(&self) -> u64 {
        self.1.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn get(&self) -> ConnectionState {
        *self.0.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<ConnectionState> {
        self.0.subscribe()
    }
}

/// The servers `koan.nats.url` lists, comma-separated (blanks around them and
/// empty entries skipped): the client tries each until one answers, and knows
/// the others when it reconnects. A bad entry is a `Config` error naming it.
pub(crate) fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>, koan::Error> {
    let addrs = url
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry.parse().map_err(|e| {
                koan::Error::new(
                    koan::error::ErrorKind::Config,
                    format!(
                        "`{entry}` in `koan.nats.url` ({url}) is not a NATS server's address: {e}"
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err(koan::Error::new(
            koan::error::ErrorKind::Config,
            format!("`koan.nats.url` (`{url}`) names no server"),
        ));
    }
    Ok(addrs)
}

/// The server a client connected through `url` is on, for messages: `url` when
/// it names one; of a list, the server's address as it announced it (its name
/// when it listens on every interface) and the list.
pub(crate) fn server_named(url: &str, info: &async_nats::ServerInfo) -> String {
    if !url.contains(',') {
        return url.to_owned();
    }
    let unspecified = info
        .host
        .parse::<std::net::IpAddr>()
        .map_or(info.host.is_empty(), |ip| ip.is_unspecified());
    if unspecified {
        format!("server `{}` of {url}", info.server_name)
    } else if info.host.contains(':') {
        format!("nats://[{}]:{} (of {url})", info.host, info.port)
    } else {
        format!("nats://{}:{} (of {url})", info.host, info.port)
    }
}

/// Times the client said a subscription of this process was a slow consumer.
static SLOW: koan::transport::Sparse = koan::transport::Sparse::new();

/// The client's options for `opts` (credentials, TLS), named after `host_id`, its
/// connect and disconnect events reported to `watch`.
pub(crate) fn connect_options(
    opts: &crate::options::NatsOptions,
    host_id: &str,
    watch: ConnectionWatch,
) -> async_nats::ConnectOptions {
    let mut co = async_nats::ConnectOptions::new()
        .name(format!("koan {host_id}"))
        .event_callback(move |event| {
            let watch = watch.clone();
            async move {
                match event {
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS disconnected; reconnecting");
                        watch.set(ConnectionState::Disconnected);
                    }
                    async_nats::Event::Connected => {
                        tracing::info!("NATS connected");
                        watch.set(ConnectionState::Connected);
                    }
                    // Messages the client dropped because this host did not read
                    // them in time (events behind a stalled `Overflow::Wait`
                    // subscriber, say): said, at the 1st, 2nd, 4th, … time, where
                    // they went by at debug level (found by a probe).
                    async_nats::Event::SlowConsumer(sid) => {
                        if let Some(n) = SLOW.hit() {
                            tracing::warn!(subscription = sid, times = n, "NATS dropped messages this host did not read in time (a slow consumer: events from other processes behind a stalled subscriber are lost)");
                        }
                    }
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            }
        });
    if let Some((u, p)) = &opts.user_password {
        co = co.user_and_password(u.clone(), p.clone());
    }
    if let Some(t) = &opts.token {
        co = co.token(t.clone());
    }
    if let Some(seed) = &opts.nkey_seed {
        co = co.nkey(seed.clone());
    }
    if opts.tls_required {
        co = co.require_tls(true);
    }
    if let Some(ca) = &opts.tls_ca_file {
        co = co.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &opts.tls_client_cert {
        co = co.add_client_certificate(cert.clone(), key.clone());
    }
    co
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_servers_is_split_and_a_bad_entry_named() {
        let addrs = server_addrs(" nats://127.0.0.1:5101, ,127.0.0.1:5102,")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(addrs.len(), 2);
        let e =
            server_addrs("nats://127.0.0.1:5101,nats://127.0.0.1:port").expect_err("a bad port");
        assert!(e.message().contains("`nats://127.0.0.1:port`"), "{e}");
        assert!(server_addrs(" , ").is_err());
    }

    #[test]
    fn a_list_names_the_server_connected_to() {
        let info = async_nats::ServerInfo {
            host: "127.0.0.1".to_owned(),
            port: 5102,
            server_name: "n2".to_owned(),
            ..Default::default()
        };
        assert_eq!(server_named("nats://a:1", &info), "nats://a:1");
        let list = "nats://127.0.0.1:5101,nats://127.0.0.1:5102";
        assert_eq!(
            server_named(list, &info),
            format!("nats://127.0.0.1:5102 (of {list})")
        );
        let everywhere = async_nats::ServerInfo {
            host: "0.0.0.0".to_owned(),
            ..info
        };
        assert_eq!(
            server_named(list, &everywhere),
            format!("server `n2` of {list}")
        );
    }
}
