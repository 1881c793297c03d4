//! Three `nats-server -js` processes routed into one JetStream cluster, each
//! with its own store and free ports, ready once every member knows the
//! cluster's metadata leader, advertises all three and answers JetStream.

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{Failed, NatsServer};
use crate::{TempDir, free_port, wait_for};

/// How many servers the cluster has.
const SIZE: usize = 3;

/// A JetStream cluster of three servers on loopback (`n1`, `n2`, `n3`, in
/// cluster `koan`); each killed, and its store removed, on drop.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts the three servers and waits until the cluster is ready for
    /// JetStream.
    pub async fn start() -> anyhow::Result<NatsCluster> {
        // Blocks for a moment, as a single server's start does.
        let cluster = Self::spawn_all()?;
        for node in &cluster.nodes {
            node.wait_jetstream().await?;
        }
        Ok(cluster)
    }

    /// Starts the processes on free ports, again on others when one was taken
    /// meanwhile, and waits until each one's routes make the cluster.
    fn spawn_all() -> anyhow::Result<NatsCluster> {
        'attempt: for _ in 0..5 {
            let ports: Vec<(u16, u16)> = (0..SIZE).map(|_| (free_port(), free_port())).collect();
            let routes = ports
                .iter()
                .map(|(_, route)| format!("nats://127.0.0.1:{route}"))
                .collect::<Vec<_>>()
                .join(",");
            let mut nodes = Vec::new();
            for (i, (port, route)) in ports.iter().enumerate() {
                let mut node = NatsServer {
                    child: None,
                    port: *port,
                    dir: TempDir::new("koan-nats-cluster"),
                    log_from: 0,
                    args: [
                        "-n".to_owned(),
                        format!("n{}", i + 1),
                        "--cluster_name".to_owned(),
                        "koan".to_owned(),
                        "--cluster".to_owned(),
                        format!("nats://127.0.0.1:{route}"),
                        "--routes".to_owned(),
                        routes.clone(),
                    ]
                    .into(),
                };
                match node.spawn() {
                    Ok(()) => nodes.push(node),
                    // The others are dropped, so killed.
                    Err(Failed::PortTaken) => continue 'attempt,
                    Err(Failed::Other(e)) => return Err(e),
                }
            }
            let cluster = NatsCluster { nodes };
            cluster.wait_routed()?;
            return Ok(cluster);
        }
        anyhow::bail!("no free ports for a nats-server cluster after 5 attempts")
    }

    /// Waits until every member has heard of the metadata leader and tells its
    /// clients of all three members (its INFO's `connect_urls`).
    fn wait_routed(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + crate::PATIENCE;
        for node in &self.nodes {
            loop {
                if node.log().contains("metadata leader") && node.advertised()? == SIZE {
                    break;
                }
                if Instant::now() > deadline {
                    anyhow::bail!(
                        "nats-server on port {} did not join the cluster; its log:\n{}",
                        node.port,
                        node.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Every member's URL, comma-separated (`koan.nats.url`'s form).
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(NatsServer::url).collect();
        urls.join(",")
    }

    /// The member named `name` (`n1`, `n2`, `n3`), as a stream's
    /// `cluster.leader` names it.
    pub fn node(&mut self, name: &str) -> anyhow::Result<&mut NatsServer> {
        let i = name
            .strip_prefix('n')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=SIZE).contains(n))
            .ok_or_else(|| anyhow::anyhow!("no member `{name}` in the test cluster"))?;
        Ok(&mut self.nodes[i - 1])
    }
}

impl NatsServer {
    /// How many servers this one's INFO lists for its clients to connect to.
    fn advertised(&self) -> anyhow::Result<usize> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        let info: serde_json::Value = serde_json::from_str(
            line.strip_prefix("INFO ")
                .ok_or_else(|| anyhow::anyhow!("no INFO from nats-server: {line}"))?,
        )?;
        Ok(info["connect_urls"].as_array().map_or(0, Vec::len))
    }

    /// Waits until this server answers a JetStream request without an error
    /// (a member that has not yet caught up with the metadata answers "JetStream
    /// system temporarily unavailable").
    async fn wait_jetstream(&self) -> anyhow::Result<()> {
        let client = async_nats::connect(self.url()).await?;
        let what = format!("JetStream on {}", self.url());
        wait_for(&what, async || {
            let Ok(answer) = client.request("$JS.API.INFO", "".into()).await else {
                return Ok(None);
            };
            let answer: serde_json::Value = serde_json::from_slice(&answer.payload)?;
            Ok(answer.get("error").is_none().then_some(()))
        })
        .await
    }
}
