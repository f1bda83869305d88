//! hf-mount: Hugging Face Hub repos and buckets as local folders.
//!
//! An actor engine (`actors`) owns all filesystem state behind one
//! backend-neutral message API (`engine`); thin frontends (`frontends`)
//! translate the kernel's protocol into it. `hub` speaks to the Hub and CAS.

pub mod actors;
pub mod cli;
pub mod config;
pub mod config_file;
pub mod control;
pub mod daemon;
pub mod engine;
pub mod error;
pub mod frontends;
pub mod hub;
pub mod metrics;
pub mod telemetry;
pub mod types;
