//! yubikey-val 2.41's two tables, as its `ykval-db.sql` creates them.
//!
//! The columns, types and keys are yubikey-val's to the letter, so that a validator can be
//! pointed at a database yubikey-val filled (or a dump of one) and its `ykval-export`,
//! `ykval-import` and `ykval-gen-clients` files fit. yubikey-val's third table, `queue`
//! (its sync queue), is not made: the counters live in one database whose replication is
//! the database's. The same text serves PostgreSQL, MySQL/MariaDB and SQLite (yubikey-val
//! uses it for the first two; SQLite reads `BOOLEAN` and `INT` by their affinity), with
//! `IF NOT EXISTS` so `db-init` leaves tables that are there alone.

/// `clients`: one row per API client, `secret` its HMAC key in base64, `created` a Unix
/// time.
pub const CLIENTS: &str = "CREATE TABLE IF NOT EXISTS clients (
  id INT NOT NULL UNIQUE,
  active BOOLEAN DEFAULT TRUE,
  created INT NOT NULL,
  secret VARCHAR(60) NOT NULL DEFAULT '',
  email VARCHAR(255),
  notes VARCHAR(100) DEFAULT '',
  otp VARCHAR(100) DEFAULT '',
  PRIMARY KEY (id)
)";

/// `yubikeys`: one row per YubiKey seen, its last accepted counters, timestamp and the
/// nonce of the request that set them; `created` and `modified` Unix times (`modified`
/// -1 until a first OTP is accepted).
pub const YUBIKEYS: &str = "CREATE TABLE IF NOT EXISTS yubikeys (
  active BOOLEAN DEFAULT TRUE,
  created INT NOT NULL,
  modified INT NOT NULL,
  yk_publicname VARCHAR(16) UNIQUE NOT NULL,
  yk_counter INT NOT NULL,
  yk_use INT NOT NULL,
  yk_low INT NOT NULL,
  yk_high INT NOT NULL,
  nonce VARCHAR(40) DEFAULT '',
  notes VARCHAR(100) DEFAULT '',
  PRIMARY KEY (yk_publicname)
)";
