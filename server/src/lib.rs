//! The Lianxin server: the network edge of the system.
//!
//! Module map:
//! - [`config`]: configuration from defaults, file, environment and flags.
//! - [`auth`]: password hashing, session tokens, registration.
//! - [`http`]: the routes on the listening port (`/ws`, `/healthz`, `/readyz`, `/metrics`).
//! - [`media`]: `POST /media` uploads and `GET /media/{id}` (ranges, cache headers, access).
//! - [`session`]: one WebSocket connection's task.
//! - [`limits`]: rate limits (requests per connection, sign-in attempts).
//! - [`transport`]: the accept loop: handshake deadline, TLS, `Origin` checks.
//! - [`seed`]: the demo county seeded into an empty database.
//! - [`backup`]: `POST /admin/backup` (a running server's consistent snapshot), `lianxin backup`
//!   and `lianxin restore`.
//! - [`admin`]: the administrator's commands (communities, grids, staff, jurisdiction import).
//! - [`web`]: the embedded web pages (`/board`).
//! - [`webhook`]: bad reviews POSTed to a configured URL, with retries.
//! - [`server`]: start-up and graceful shutdown, given a listener and a shutdown future.

pub mod admin;
pub mod auth;
pub mod backup;
pub mod collect;
pub mod config;
pub mod http;
pub mod limits;
pub mod media;
pub mod populate;
pub mod seed;
pub mod server;
pub mod session;
pub mod transport;
pub mod upload;
pub mod web;
pub mod webhook;
