//! The local admin API: HTTP/1.1 with Graph-shaped JSON on a Unix socket, the caller
//! identified by SO_PEERCRED. `server` serves it; `client` is what `tapctl` speaks.
//!
//! May depend on: `service`, `model`, `policy`. Only this module knows HTTP status codes.

pub mod client;
mod error;
pub mod graph;
pub mod server;

pub use server::{bind_socket, serve, SocketOptions};
