//! Cross-crate test support for portcullis: the plain reference model the
//! core is checked against, and helpers that start real servers.

pub mod gen;
pub mod model;
pub mod redis_server;
