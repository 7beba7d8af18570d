//! The live backend: systemd's own D-Bus API (`org.freedesktop.systemd1`) over the system bus,
//! with zbus on a private current-thread tokio runtime.
//!
//! Owns the proxies, connecting (with an error that names the bus and points to `--root` when
//! there is no bus), and waiting for a start or stop job through the `JobRemoved` signal, with a
//! timeout. It never runs `systemctl`.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use zbus::OwnedObjectPath;

use super::{FileChange, UnitManager, UnitRuntime, UnitState};

/// Where the system bus is when `DBUS_SYSTEM_BUS_ADDRESS` does not say.
pub const DEFAULT_BUS: &str = "unix:path=/run/dbus/system_bus_socket";

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    fn get_unit_file_state(&self, file: &str) -> zbus::Result<String>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn mask_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    fn unmask_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<(String, String, String)>)>;
    fn disable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    fn reload(&self) -> zbus::Result<()>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reload_or_try_restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn try_restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn subscribe(&self) -> zbus::Result<()>;
    #[allow(clippy::type_complexity)]
    fn list_jobs(
        &self,
    ) -> zbus::Result<
        Vec<(
            u32,
            String,
            String,
            String,
            OwnedObjectPath,
            OwnedObjectPath,
        )>,
    >;
    #[zbus(property)]
    fn system_state(&self) -> zbus::Result<String>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    fn unit_files_changed(&self) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn condition_result(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn condition_timestamp(&self) -> zbus::Result<u64>;
    /// (type, trigger, negate, parameter, state): state < 0 failed.
    #[zbus(property)]
    fn conditions(&self) -> zbus::Result<Vec<(String, bool, bool, String, i32)>>;
    #[zbus(property)]
    fn active_enter_timestamp(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn state_change_timestamp(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn drop_in_paths(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn need_daemon_reload(&self) -> zbus::Result<bool>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Service {
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn exec_main_start_timestamp(&self) -> zbus::Result<u64>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Socket",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Socket {
    #[zbus(property)]
    fn listen(&self) -> zbus::Result<Vec<(String, String)>>;
    #[zbus(property, name = "BindIPv6Only")]
    fn bind_ipv6_only(&self) -> zbus::Result<String>;
}

/// The condition that failed, in unit-file syntax, from systemd's `Conditions` list. After a
/// `daemon-reload` systemd re-reads the unit and forgets each condition's state while keeping
/// `ConditionResult`: then every condition of the unit is named as a candidate. `None` when the
/// unit has no condition left (a drop-in removed it): the old result no longer applies.
pub fn failed_condition(conditions: &[(String, bool, bool, String, i32)]) -> Option<String> {
    let show = |(kind, _, negate, param, _): &(String, bool, bool, String, i32)| {
        format!("{kind}={}{param}", if *negate { "!" } else { "" })
    };
    if let Some(c) = conditions.iter().find(|c| c.4 < 0) {
        return Some(show(c));
    }
    match conditions.len() {
        0 => None,
        1 => Some(show(&conditions[0])),
        _ => Some(format!(
            "one of {}",
            conditions.iter().map(show).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// A connection to systemd on the system bus.
pub struct DbusUnits {
    rt: tokio::runtime::Runtime,
    conn: zbus::Connection,
    address: String,
    job_timeout: Duration,
}

/// The bus address to use: `DBUS_SYSTEM_BUS_ADDRESS`, or the standard socket.
pub fn system_bus_address() -> String {
    std::env::var("DBUS_SYSTEM_BUS_ADDRESS").unwrap_or_else(|_| DEFAULT_BUS.to_string())
}

impl DbusUnits {
    pub fn connect(job_timeout: Duration) -> Result<Self> {
        let address = system_bus_address();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the D-Bus runtime")?;
        let conn = rt
            .block_on(async { zbus::conn::Builder::address(address.as_str()).build().await })
            .with_context(|| {
                format!(
                    "cannot connect to the system bus at {address}: is systemd (with dbus) running here? \
                     To manage the unit files of an image offline, use --root DIR"
                )
            })?;
        Ok(DbusUnits {
            rt,
            conn,
            address,
            job_timeout,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn manager(&self) -> Result<ManagerProxy<'_>> {
        self.rt
            .block_on(ManagerProxy::new(&self.conn))
            .context("creating the systemd manager proxy")
    }

    /// Runs a unit job (`start`, `stop`, `reload-or-try-restart`, `try-restart`) and waits for its
    /// `JobRemoved` signal.
    fn run_job(&self, verb: &str, name: &str) -> Result<String> {
        let timeout = self.job_timeout;
        self.rt.block_on(async {
            let m = ManagerProxy::new(&self.conn).await?;
            m.subscribe().await.ok(); // already subscribed is fine
            // Listen before queuing the job so its end cannot be missed.
            let mut removed = m.receive_job_removed().await?;
            let job = match verb {
                "start" => m.start_unit(name, "replace").await,
                "reload-or-try-restart" => m.reload_or_try_restart_unit(name, "replace").await,
                "try-restart" => m.try_restart_unit(name, "replace").await,
                _ => m.stop_unit(name, "replace").await,
            }
            .map_err(|e| anyhow!("{verb} {name}: {}", describe(&e)))?;
            let wait = async {
                while let Some(sig) = removed.next().await {
                    let args = sig.args()?;
                    if args.job == job {
                        return Ok::<String, anyhow::Error>(args.result.clone());
                    }
                }
                bail!("the system bus closed while waiting for the {verb} job of {name}")
            };
            match tokio::time::timeout(timeout, wait).await {
                Ok(r) => r,
                Err(_) => bail!(
                    "the {verb} job of {name} did not finish within {}s",
                    timeout.as_secs()
                ),
            }
        })
    }
}

/// The D-Bus error name and message, in one line.
fn describe(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, msg, _) => {
            format!("{}: {}", name.as_str(), msg.as_deref().unwrap_or(""))
        }
        other => other.to_string(),
    }
}

fn is_not_found(e: &zbus::Error) -> bool {
    let s = describe(e);
    s.contains("FileNotFound") || s.contains("NoSuchUnit") || s.contains("No such file")
}

fn changes(v: Vec<(String, String, String)>) -> Vec<FileChange> {
    v.into_iter()
        .map(|(kind, path, dest)| FileChange { kind, path, dest })
        .collect()
}

impl UnitManager for DbusUnits {
    fn state(&self, name: &str) -> Result<UnitState> {
        let m = self.manager()?;
        self.rt.block_on(async {
            let file_state = match m.get_unit_file_state(name).await {
                Ok(s) => s,
                Err(e) if is_not_found(&e) => "not-found".to_string(),
                Err(e) => bail!("GetUnitFileState({name}): {}", describe(&e)),
            };
            let path = m
                .load_unit(name)
                .await
                .map_err(|e| anyhow!("LoadUnit({name}): {}", describe(&e)))?;
            let u = UnitProxy::builder(&self.conn).path(path).build().await?;
            let active = u.active_state().await?;
            let sub = u.sub_state().await?;
            // ConditionResult and ConditionTimestamp survive a daemon-reload; the per-condition
            // states do not.
            let mut condition_failed = None;
            if !u.condition_result().await? && u.condition_timestamp().await? > 0 {
                condition_failed = failed_condition(&u.conditions().await?);
            }
            Ok(UnitState {
                unit_file_state: file_state,
                active_state: Some(active),
                sub_state: Some(sub),
                condition_failed,
                missing_links: Vec::new(),
            })
        })
    }

    fn mask(&self, name: &str) -> Result<Vec<FileChange>> {
        let m = self.manager()?;
        let r = self.rt.block_on(m.mask_unit_files(&[name], false, false));
        r.map(changes)
            .map_err(|e| anyhow!("MaskUnitFiles({name}): {}", describe(&e)))
    }

    fn unmask(&self, name: &str) -> Result<Vec<FileChange>> {
        let m = self.manager()?;
        let r = self.rt.block_on(m.unmask_unit_files(&[name], false));
        r.map(changes)
            .map_err(|e| anyhow!("UnmaskUnitFiles({name}): {}", describe(&e)))
    }

    fn enable(&self, name: &str) -> Result<Vec<FileChange>> {
        let m = self.manager()?;
        let r = self.rt.block_on(m.enable_unit_files(&[name], false, false));
        r.map(|(_, c)| changes(c))
            .map_err(|e| anyhow!("EnableUnitFiles({name}): {}", describe(&e)))
    }

    fn disable(&self, name: &str) -> Result<Vec<FileChange>> {
        let m = self.manager()?;
        let r = self.rt.block_on(m.disable_unit_files(&[name], false));
        r.map(changes)
            .map_err(|e| anyhow!("DisableUnitFiles({name}): {}", describe(&e)))
    }

    fn reload(&self) -> Result<()> {
        let m = self.manager()?;
        self.rt
            .block_on(m.reload())
            .map_err(|e| anyhow!("Reload: {}", describe(&e)))
    }

    fn start(&self, name: &str) -> Result<String> {
        self.run_job("start", name)
    }

    fn settle(&self) -> Result<(String, Vec<String>)> {
        let m = self.manager()?;
        let state = self
            .rt
            .block_on(m.system_state())
            .map_err(|e| anyhow!("SystemState: {}", describe(&e)))?;
        let jobs = self
            .rt
            .block_on(m.list_jobs())
            .map_err(|e| anyhow!("ListJobs: {}", describe(&e)))?;
        Ok((
            state,
            jobs.into_iter()
                .map(|(_, unit, kind, _, _, _)| format!("{unit} ({kind})"))
                .collect(),
        ))
    }

    fn stop(&self, name: &str) -> Result<String> {
        self.run_job("stop", name)
    }

    fn runtime(&self, name: &str) -> Result<UnitRuntime> {
        let m = self.manager()?;
        self.rt.block_on(async {
            let path = m
                .load_unit(name)
                .await
                .map_err(|e| anyhow!("LoadUnit({name}): {}", describe(&e)))?;
            let u = UnitProxy::builder(&self.conn)
                .path(path.clone())
                .build()
                .await?;
            let mut rt = UnitRuntime {
                load_state: u.load_state().await?,
                active_state: u.active_state().await?,
                sub_state: u.sub_state().await?,
                active_enter_usec: u.active_enter_timestamp().await?,
                state_change_usec: u.state_change_timestamp().await?,
                drop_in_paths: u.drop_in_paths().await?,
                need_daemon_reload: u.need_daemon_reload().await?,
                ..UnitRuntime::default()
            };
            if name.ends_with(".service") {
                let s = ServiceProxy::builder(&self.conn)
                    .path(path.clone())
                    .build()
                    .await?;
                rt.main_pid = s.main_pid().await.unwrap_or(0);
                rt.exec_main_start_usec = s.exec_main_start_timestamp().await.unwrap_or(0);
            }
            if name.ends_with(".socket") && rt.load_state == "loaded" {
                let s = SocketProxy::builder(&self.conn).path(path).build().await?;
                rt.listen = s.listen().await?;
                rt.bind_ipv6_only = s.bind_ipv6_only().await.unwrap_or_default();
            }
            Ok(rt)
        })
    }

    fn reload_or_try_restart(&self, name: &str) -> Result<String> {
        self.run_job("reload-or-try-restart", name)
    }

    fn try_restart(&self, name: &str) -> Result<String> {
        self.run_job("try-restart", name)
    }
}

/// Calls one method of a systemd service activated on demand (timedated, localed).
fn call<B>(service: &str, path: &str, method: &str, body: &B) -> zbus::Result<()>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    let address = system_bus_address();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| zbus::Error::Failure(format!("starting the D-Bus runtime: {e}")))?;
    rt.block_on(async {
        let conn = zbus::conn::Builder::address(address.as_str())
            .build()
            .await?;
        let proxy = zbus::Proxy::new(&conn, service, path, service).await?;
        proxy.call_method(method, body).await.map(|_| ())
    })
}

/// `org.freedesktop.timedate1.SetTimezone(tz, false)`: systemd-timedated (activated on demand)
/// points /etc/localtime at the zone and tells the running system.
pub fn set_timezone(tz: &str) -> Result<()> {
    call(
        "org.freedesktop.timedate1",
        "/org/freedesktop/timedate1",
        "SetTimezone",
        &(tz, false),
    )
    .map_err(|e| anyhow!("systemd-timedated SetTimezone({tz}): {}", describe(&e)))
}
