//! Everything that talks to the Hub and the CAS: the HTTP client, token
//! sources, source parsing and URL building, and the xet adapter.

pub mod client;
pub mod plans;
pub mod retry;
pub mod source;
pub mod token;
pub mod upload;
pub mod xet;

pub use client::{BatchLine, HubClient, HubError, Probe, RemoteEntry, RemoteFile, RemoteKind};
pub use source::{Source, SourceKind};
pub use token::TokenSource;
pub use upload::{StreamingUpload, UploadError, UploadSession, Uploaded, XetUploader};
pub use xet::XetAdapter;
