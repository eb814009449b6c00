//! What a scenario loads: the Lianxin server started by this tool, the bare relay (spawned or in
//! this process), or a server already running (`--target`).

use std::net::SocketAddr;

use anyhow::Context;
use tokio::task::JoinHandle;

use crate::cli::CommonArgs;
use crate::procstat::{self, Snapshot};
use crate::progress;
use crate::relay;
use crate::report::TargetInfo;
use crate::spawn::{self, ServerSetup, Spawned};

/// Which kind of target to run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The Lianxin server.
    Server,
    /// The bare relay.
    Relay,
}

/// A running target.
#[derive(Debug)]
pub struct Target {
    /// `server`, `relay` or `external`.
    pub label: &'static str,
    /// Its WebSocket URL.
    pub url: String,
    /// Its process, when this tool started it as one.
    pub pid: Option<u32>,
    /// Seconds from starting its process until it answered, when this tool started it.
    pub ready_secs: Option<f64>,
    spawned: Option<Spawned>,
    in_process: Option<(JoinHandle<()>, tokio::sync::oneshot::Sender<()>)>,
}

impl Target {
    /// Starts (or points at) the target the options ask for; a server this tool starts gets
    /// what `setup` asks for.
    pub async fn start(
        common: &CommonArgs,
        kind: Kind,
        setup: &ServerSetup,
    ) -> anyhow::Result<Target> {
        match (kind, &common.target) {
            (Kind::Server, Some(url)) => Ok(Target::external(url, "external")),
            (Kind::Relay, Some(url)) if common.relay => Ok(Target::external(url, "external-relay")),
            (Kind::Server, None) => {
                let bin = match &common.server_bin {
                    Some(b) => b.clone(),
                    None => spawn::default_server_bin()?,
                };
                progress::note(&match &setup.data_dir {
                    Some(d) => format!("starting {} on {}", bin.display(), d.display()),
                    None => format!("starting {} on a fresh data folder", bin.display()),
                });
                let spawned = Spawned::server(&bin, &common.server_log, setup).await?;
                Ok(Target {
                    label: "server",
                    url: spawned.url.clone(),
                    pid: Some(spawned.pid),
                    ready_secs: Some(spawned.ready_after.as_secs_f64()),
                    spawned: Some(spawned),
                    in_process: None,
                })
            }
            (Kind::Relay, _) if common.relay_in_process => {
                let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                    .await
                    .context("binding the in-process relay")?;
                let url = format!("ws://{}/ws", listener.local_addr()?);
                let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
                let task = tokio::spawn(async move {
                    let _ = relay::serve(listener, async move {
                        let _ = stop_rx.await;
                    })
                    .await;
                });
                Ok(Target {
                    label: "relay",
                    url,
                    pid: None,
                    ready_secs: None,
                    spawned: None,
                    in_process: Some((task, stop_tx)),
                })
            }
            (Kind::Relay, _) => {
                let bin = std::env::current_exe().context("locating this executable")?;
                progress::note("starting the bare relay");
                let spawned = Spawned::relay(&bin).await?;
                Ok(Target {
                    label: "relay",
                    url: spawned.url.clone(),
                    pid: Some(spawned.pid),
                    ready_secs: Some(spawned.ready_after.as_secs_f64()),
                    spawned: Some(spawned),
                    in_process: None,
                })
            }
        }
    }

    fn external(url: &str, label: &'static str) -> Target {
        Target {
            label,
            url: url.to_owned(),
            pid: None,
            ready_secs: None,
            spawned: None,
            in_process: None,
        }
    }

    /// A reading of the target's process, when this tool started it.
    pub fn snapshot(&self) -> Option<Snapshot> {
        procstat::read(Some(self.pid?)).ok()
    }

    /// Fails when the target's process has died.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(s) = &mut self.spawned
            && let Some(status) = s.exited()
        {
            anyhow::bail!(
                "{} exited during the run ({status}); its log ends with:\n{}",
                self.url,
                s.log_tail(20)
            );
        }
        Ok(())
    }

    /// For the report.
    pub fn info(&self) -> TargetInfo {
        TargetInfo {
            kind: self.label.to_owned(),
            url: self.url.clone(),
            pid: self.pid,
        }
    }

    /// Stops what this tool started.
    pub async fn stop(mut self) {
        if let Some(s) = self.spawned.take() {
            s.stop();
        }
        if let Some((task, stop)) = self.in_process.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}
