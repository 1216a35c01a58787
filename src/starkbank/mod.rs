//! The Stark Bank API v2 as stark-sweep uses it: keys, signing, the HTTP client, typed
//! resources, webhook events and their signature, and its answers with payers' data taken out
//! (`redact`). Nothing here touches SQLite or the CLI.

pub mod answers;
pub mod client;
pub mod event;
pub mod keys;
pub mod pyjson;
pub mod redact;
pub mod resources;
pub mod sign;
pub mod time;
pub mod verify;

pub use client::{ApiError, Client, ClientConfig, DEFAULT_CONNECT_TIMEOUT_SECS, DEFAULT_TIMEOUT_SECS};

/// The API hosts of the two real environments.
pub const SANDBOX_URL: &str = "https://sandbox.api.starkbank.com";
pub const PRODUCTION_URL: &str = "https://api.starkbank.com";
