//! End-to-end tests: the real binary, real HTTP, real SQLite files and PostgreSQL databases.

mod bad_input;
mod cluster;
mod console;
mod contract;
mod crash;
mod delivery;
mod designer;
mod e2;
mod entitlements;
mod eventsub;
mod hard_edges;
mod helpers;
mod reload;
mod sandbox;
mod vhs;
