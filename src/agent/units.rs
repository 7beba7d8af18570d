//! systemd's change signals for the daemon, over its own async D-Bus connection: the manager's
//! `UnitFilesChanged` (enable, disable, mask, daemon-reload) and `PropertiesChanged` of each unit
//! the policy names (started, stopped, failed).
//!
//! Owns subscribing and forwarding "something about units changed" to the daemon's loop. The
//! checks themselves still go through [`crate::systemd`].

use anyhow::{Context, Result};
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedSender;
use zbus::fdo::PropertiesProxy;

use crate::systemd::dbus::{ManagerProxy, system_bus_address};

/// What a forwarding task sends when its signal stream ended without being stopped: the bus went
/// away (dbus restarted). The daemon subscribes again.
pub const LOST: &str = "systemd: the system bus connection was lost";

/// Unit properties whose change can change a unit item's verdict.
const WATCHED: &[&str] = &["ActiveState", "SubState", "LoadState", "UnitFileState"];

/// A handle that stops the forwarding tasks when dropped (policy reload, shutdown).
pub struct UnitSignals {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _conn: zbus::Connection,
}

impl Drop for UnitSignals {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Subscribes to systemd's signals for `units`; each one sends a description to `tx`.
pub async fn watch(units: &[String], tx: UnboundedSender<String>) -> Result<UnitSignals> {
    let address = system_bus_address();
    let conn = zbus::conn::Builder::address(address.as_str())
        .build()
        .await
        .with_context(|| format!("connecting to the system bus at {address}"))?;
    let m = ManagerProxy::new(&conn).await?;
    // Without a subscriber systemd does not emit unit signals.
    m.subscribe().await.context("Subscribe")?;
    let mut tasks = Vec::new();
    let mut files = m.receive_unit_files_changed().await?;
    let t = tx.clone();
    tasks.push(tokio::spawn(async move {
        while files.next().await.is_some() {
            if t.send("systemd: unit files changed".to_string()).is_err() {
                return;
            }
        }
        let _ = t.send(LOST.to_string());
    }));
    for name in units {
        let path = m
            .load_unit(name)
            .await
            .with_context(|| format!("LoadUnit({name})"))?;
        let props = PropertiesProxy::builder(&conn)
            .destination("org.freedesktop.systemd1")
            .path(path)
            .build()
            .await?;
        let mut changed = props.receive_properties_changed().await?;
        let (t, name) = (tx.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(sig) = changed.next().await {
                let Ok(args) = sig.args() else { continue };
                if args.interface_name.as_str() != "org.freedesktop.systemd1.Unit" {
                    continue;
                }
                let keys: Vec<&str> = args
                    .changed_properties
                    .keys()
                    .copied()
                    .filter(|k| WATCHED.contains(k))
                    .collect();
                if keys.is_empty() && args.invalidated_properties.is_empty() {
                    continue;
                }
                if t.send(format!("systemd: {name} changed")).is_err() {
                    return;
                }
            }
            let _ = t.send(LOST.to_string());
        }));
    }
    Ok(UnitSignals { tasks, _conn: conn })
}
