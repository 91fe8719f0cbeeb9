//! A simulated endpoint-management, mail and directory API.
//!
//! Devices have services (`running` / `stopped`), a network profile and a
//! VPN tunnel; mailboxes have a quota, a usage and a tenant ceiling; access
//! groups have members (adding a member twice is not an error). A
//! device can be seeded as *wedged*: restarting its services "works" but its
//! tunnel stays down — the case where a remediation runs and does not fix.
//! A device's print driver can be seeded *faulty*: the spooler starts on a
//! restart and crashes again at once, until the driver is rolled back to
//! the one before it — which fails on a device that has no earlier driver.
//! Errors use one envelope, `{"error": {"code", "message"}}`, with real
//! status codes (404 unknown device, 422 above the ceiling).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, Serialize)]
pub struct Device {
    pub services: BTreeMap<String, String>,
    pub network_profile: String,
    pub tunnel_up: bool,
    /// Restarts succeed but the tunnel never comes up.
    pub wedged: bool,
    /// The print driver installed, and the one before it: what a rollback
    /// goes back to (`None`: there is none to go back to).
    pub print_driver: String,
    pub previous_print_driver: Option<String>,
    /// The installed print driver crashes the spooler right after it starts.
    pub faulty_print_driver: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Mailbox {
    pub quota_mb: u64,
    pub used_mb: u64,
}

#[derive(Debug, Default)]
pub struct World {
    pub devices: BTreeMap<String, Device>,
    pub mailboxes: BTreeMap<String, Mailbox>,
    pub quota_ceiling_mb: u64,
    /// Access groups (`VPN-Users`) and their members.
    pub groups: BTreeMap<String, BTreeSet<String>>,
    /// Every call, as "METHOD path".
    pub calls: Vec<String>,
}

/// The simulator's state, shared with the server.
#[derive(Debug, Clone, Default)]
pub struct Sim {
    world: Arc<Mutex<World>>,
}

impl Sim {
    /// The world the demo scenarios start from.
    pub fn demo() -> Sim {
        let sim = Sim::default();
        {
            let mut world = sim.world();
            world.quota_ceiling_mb = 102_400;
            world.devices.insert(
                "LAPTOP-0042".into(),
                device(&[("vpnagent", "stopped"), ("spooler", "running")], false),
            );
            world.devices.insert(
                "LAPTOP-0077".into(),
                device(&[("vpnagent", "running"), ("spooler", "running")], true),
            );
            // A site's twelve endpoints whose spooler keeps crashing; on
            // LAPTOP-0307 it is its print driver, with none before it.
            for number in 301..=312 {
                let mut endpoint = device(&[("spooler", "stopped")], false);
                if number == 307 {
                    endpoint.faulty_print_driver = true;
                    endpoint.previous_print_driver = None;
                }
                world.devices.insert(format!("LAPTOP-0{number}"), endpoint);
            }
            // The production web servers whose web service answers 5xx.
            for server in ["WEB-01", "WEB-03"] {
                world
                    .devices
                    .insert(server.into(), device(&[("w3svc", "degraded")], false));
            }
            // The laptop whose VPN client an agent proposes to restart.
            world.devices.insert(
                "LAPTOP-0107".into(),
                device(&[("vpnagent", "stopped"), ("spooler", "running")], false),
            );
            world.mailboxes.insert(
                "j.doe".into(),
                Mailbox {
                    quota_mb: 51_200,
                    used_mb: 48_640,
                },
            );
            world.groups.insert(
                "VPN-Users".into(),
                BTreeSet::from(["alice".into(), "bob".into()]),
            );
        }
        sim
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().expect("simulator lock")
    }

    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/devices/{device}", get(show_device))
            .route("/devices/{device}/services/{service}", get(show_service))
            .route(
                "/devices/{device}/services/{service}/restart",
                post(restart_service),
            )
            .route(
                "/devices/{device}/network-profile",
                put(set_network_profile),
            )
            .route(
                "/devices/{device}/print-driver/rollback",
                post(roll_back_print_driver),
            )
            .route("/devices/{device}/vpn", get(show_vpn))
            .route("/mailboxes/{user}", get(show_mailbox))
            .route("/mailboxes/{user}/quota", put(set_quota))
            .route("/groups/{group}/members", get(show_members))
            .route(
                "/groups/{group}/members/{user}",
                get(show_membership).put(add_member),
            )
            .with_state(self.clone())
    }

    /// Starts the simulator on a free loopback port.
    pub async fn start(&self) -> std::io::Result<crate::Running> {
        crate::serve(self.router()).await
    }
}

fn device(services: &[(&str, &str)], wedged: bool) -> Device {
    Device {
        services: services
            .iter()
            .map(|(name, status)| (name.to_string(), status.to_string()))
            .collect(),
        network_profile: "corporate-default".into(),
        tunnel_up: !wedged
            && services
                .iter()
                .any(|(name, status)| *name == "vpnagent" && *status == "running"),
        wedged,
        print_driver: "4.2.0".into(),
        previous_print_driver: Some("4.1.3".into()),
        faulty_print_driver: false,
    }
}

type Reply = (StatusCode, Json<Value>);

fn error(status: StatusCode, code: &str, message: String) -> Reply {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
}

fn unknown_device(device: &str) -> Reply {
    error(
        StatusCode::NOT_FOUND,
        "device_not_found",
        format!("no managed device `{device}`"),
    )
}

async fn show_device(State(sim): State<Sim>, Path(device): Path<String>) -> Reply {
    let mut world = sim.world();
    world.calls.push(format!("GET /devices/{device}"));
    match world.devices.get(&device) {
        Some(found) => (
            StatusCode::OK,
            Json(
                json!({"device": device, "managed": true, "network_profile": found.network_profile, "services": found.services}),
            ),
        ),
        None => unknown_device(&device),
    }
}

async fn show_service(
    State(sim): State<Sim>,
    Path((device, service)): Path<(String, String)>,
) -> Reply {
    let mut world = sim.world();
    world
        .calls
        .push(format!("GET /devices/{device}/services/{service}"));
    let Some(found) = world.devices.get(&device) else {
        return unknown_device(&device);
    };
    match found.services.get(&service) {
        Some(status) => (
            StatusCode::OK,
            Json(json!({"device": device, "service": service, "status": status})),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            "service_not_found",
            format!("`{device}` has no service `{service}`"),
        ),
    }
}

async fn restart_service(
    State(sim): State<Sim>,
    Path((device, service)): Path<(String, String)>,
) -> Reply {
    let mut world = sim.world();
    world
        .calls
        .push(format!("POST /devices/{device}/services/{service}/restart"));
    let Some(found) = world.devices.get_mut(&device) else {
        return unknown_device(&device);
    };
    let Some(status) = found.services.get_mut(&service) else {
        return error(
            StatusCode::NOT_FOUND,
            "service_not_found",
            format!("`{device}` has no service `{service}`"),
        );
    };
    // The restart itself works; a faulty print driver crashes the spooler
    // again right after, which only a later read shows.
    *status = if service == "spooler" && found.faulty_print_driver {
        "stopped".into()
    } else {
        "running".into()
    };
    if service == "vpnagent" && !found.wedged {
        found.tunnel_up = true;
    }
    (
        StatusCode::OK,
        Json(json!({"device": device, "service": service, "status": "running"})),
    )
}

/// Goes back to the print driver before the installed one, and restarts
/// the spooler on it; 409 when there is no earlier driver.
async fn roll_back_print_driver(State(sim): State<Sim>, Path(device): Path<String>) -> Reply {
    let mut world = sim.world();
    world
        .calls
        .push(format!("POST /devices/{device}/print-driver/rollback"));
    let Some(found) = world.devices.get_mut(&device) else {
        return unknown_device(&device);
    };
    let Some(previous) = found.previous_print_driver.take() else {
        return error(
            StatusCode::CONFLICT,
            "no_previous_driver",
            format!(
                "`{device}` has no print driver before {} to roll back to",
                found.print_driver
            ),
        );
    };
    let from = std::mem::replace(&mut found.print_driver, previous.clone());
    found.faulty_print_driver = false;
    if let Some(spooler) = found.services.get_mut("spooler") {
        *spooler = "running".into();
    }
    (
        StatusCode::OK,
        Json(json!({"device": device, "print_driver": previous, "rolled_back_from": from})),
    )
}

#[derive(Debug, Deserialize)]
struct ProfileBody {
    profile: String,
}

async fn set_network_profile(
    State(sim): State<Sim>,
    Path(device): Path<String>,
    Json(body): Json<ProfileBody>,
) -> Reply {
    let mut world = sim.world();
    world
        .calls
        .push(format!("PUT /devices/{device}/network-profile"));
    let Some(found) = world.devices.get_mut(&device) else {
        return unknown_device(&device);
    };
    let previous = std::mem::replace(&mut found.network_profile, body.profile.clone());
    (
        StatusCode::OK,
        Json(json!({"device": device, "previous": previous, "network_profile": body.profile})),
    )
}

async fn show_vpn(State(sim): State<Sim>, Path(device): Path<String>) -> Reply {
    let mut world = sim.world();
    world.calls.push(format!("GET /devices/{device}/vpn"));
    let Some(found) = world.devices.get(&device) else {
        return unknown_device(&device);
    };
    let tunnel = if found.tunnel_up { "up" } else { "down" };
    let mut body = json!({"device": device, "tunnel": tunnel});
    if found.wedged {
        body["last_error"] = json!("IKE authentication failed: machine certificate expired");
    }
    (StatusCode::OK, Json(body))
}

fn mailbox_json(user: &str, mailbox: &Mailbox) -> Value {
    let usage = (mailbox.used_mb as f64 * 1000.0 / mailbox.quota_mb.max(1) as f64).round() / 10.0;
    json!({"user": user, "quota_mb": mailbox.quota_mb, "used_mb": mailbox.used_mb, "usage_percent": usage})
}

async fn show_mailbox(State(sim): State<Sim>, Path(user): Path<String>) -> Reply {
    let mut world = sim.world();
    world.calls.push(format!("GET /mailboxes/{user}"));
    match world.mailboxes.get(&user) {
        Some(mailbox) => (StatusCode::OK, Json(mailbox_json(&user, mailbox))),
        None => error(
            StatusCode::NOT_FOUND,
            "mailbox_not_found",
            format!("no mailbox for `{user}`"),
        ),
    }
}

#[derive(Debug, Deserialize)]
struct QuotaBody {
    quota_mb: u64,
}

async fn set_quota(
    State(sim): State<Sim>,
    Path(user): Path<String>,
    Json(body): Json<QuotaBody>,
) -> Reply {
    let mut world = sim.world();
    world.calls.push(format!("PUT /mailboxes/{user}/quota"));
    let ceiling = world.quota_ceiling_mb;
    if body.quota_mb > ceiling {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "above_ceiling",
            format!(
                "quota {} MB is above the tenant ceiling of {ceiling} MB",
                body.quota_mb
            ),
        );
    }
    let Some(mailbox) = world.mailboxes.get_mut(&user) else {
        return error(
            StatusCode::NOT_FOUND,
            "mailbox_not_found",
            format!("no mailbox for `{user}`"),
        );
    };
    mailbox.quota_mb = body.quota_mb;
    let reply = mailbox_json(&user, mailbox);
    (StatusCode::OK, Json(reply))
}

fn unknown_group(group: &str) -> Reply {
    error(
        StatusCode::NOT_FOUND,
        "group_not_found",
        format!("no group `{group}`"),
    )
}

async fn show_members(State(sim): State<Sim>, Path(group): Path<String>) -> Reply {
    let mut world = sim.world();
    world.calls.push(format!("GET /groups/{group}/members"));
    match world.groups.get(&group) {
        Some(members) => (
            StatusCode::OK,
            Json(json!({"group": group, "members": members})),
        ),
        None => unknown_group(&group),
    }
}

/// Ensures `user` is a member: one who already is answers the same.
async fn add_member(State(sim): State<Sim>, Path((group, user)): Path<(String, String)>) -> Reply {
    let mut world = sim.world();
    world
        .calls
        .push(format!("PUT /groups/{group}/members/{user}"));
    let Some(members) = world.groups.get_mut(&group) else {
        return unknown_group(&group);
    };
    let added = members.insert(user.clone());
    (
        StatusCode::OK,
        Json(json!({"group": group, "user": user, "added": added, "member": true})),
    )
}

async fn show_membership(
    State(sim): State<Sim>,
    Path((group, user)): Path<(String, String)>,
) -> Reply {
    let mut world = sim.world();
    world
        .calls
        .push(format!("GET /groups/{group}/members/{user}"));
    match world.groups.get(&group) {
        Some(members) => (
            StatusCode::OK,
            Json(json!({"group": group, "user": user, "member": members.contains(&user)})),
        ),
        None => unknown_group(&group),
    }
}
