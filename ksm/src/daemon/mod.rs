//! `ksm serve`: the daemon validation servers call, and the socket operator tools share
//! its HSMs through.
//!
//! - [`serve`]: start-up and shut-down, with the settings of [`crate::settings`];
//!   [`instance`]: one daemon per socket and PID file;
//! - [`server`], [`connections`], [`answer`], [`metrics`]: the HTTP API, its connection
//!   cap, its answer lines and counters; [`tls`]: the API over TLS;
//! - [`pool`]: the HSMs, spreading and failover between them, and tools' leases; each device
//!   is owned by one thread behind a bounded queue ([`owner`]: the loop every kind runs,
//!   [`hsm1_owner`]: a YubiHSM 1, serial or soft, [`hsm2_owner`]: a YubiHSM 2 with its
//!   sessions, and [`hsm2_audit`]: what that owner does with the device's audit log), and
//!   [`health`]: what is known of each;
//! - [`systemd`]: the listening socket systemd passes and the readiness notices;
//! - [`val`]: the YK-VAL verify API on the same listener (`--val-db-url`);
//! - [`sharing`]: the socket operator tools use while the daemon owns the HSMs, and
//!   [`tool_frame`]: what it forwards.

pub mod answer;
pub mod connections;
pub mod health;
pub mod hsm1_owner;
pub mod hsm2_audit;
pub mod hsm2_owner;
pub mod instance;
pub mod metrics;
pub mod owner;
pub mod pool;
pub mod serve;
pub mod server;
pub mod sharing;
pub mod systemd;
pub mod tls;
pub mod tool_frame;
pub mod val;
