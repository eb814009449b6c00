//! The Lianxin domain, running as ractor actors.
//!
//! Module map:
//! - [`clock`]: the one source of time (system clock in production, manual clock in tests).
//! - [`domain`]: plain, actor-free domain logic: access rules, the petition state machine,
//!   deadlines, the office-hours calendar and the supervision ladder.
//! - [`county`]: the running domain: starts the grid actors, routes requests, answers queries.
//! - [`grid`]: the grid actor: routes new petitions ("@"), supervises petition and worker actors.
//! - [`worker`]: the worker actor: on-duty status and connected devices.
//! - [`petition`]: the petition actor: numbers, stores and fans out a petition's changes.
//! - [`supervisor`]: the supervisor actor: fires reminders and escalations when they fall due.
//! - [`board`]: the board actor: live response boards for supervisors.
//! - [`reports`]: appraisal reports (frozen once their month is over) and manual points entries.
//! - [`ticker`]: the periodic nudge of the supervisor and board actors.
//! - [`hub`]: live delivery of feed events to connected sessions.
//! - [`error`]: the domain's error type and its protocol error codes.

pub mod board;
pub mod clock;
pub mod county;
pub mod domain;
pub mod error;
pub mod grid;
pub mod hub;
pub mod petition;
pub mod reports;
pub mod supervisor;
pub mod ticker;
pub mod worker;
