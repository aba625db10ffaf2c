#![doc = include_str!("../README.md")]
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod codec;
#[cfg(feature = "ekv")]
#[cfg_attr(docsrs, doc(cfg(feature = "ekv")))]
pub mod ekv_backend;
pub mod error;
pub mod flash;
pub mod identity;
pub mod key;
mod log;
#[cfg(feature = "mqtt")]
#[cfg_attr(docsrs, doc(cfg(feature = "mqtt")))]
pub mod mqtt;
pub mod persistence;
pub mod store;

#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub mod file_flash;

#[cfg(feature = "adapter")]
#[cfg_attr(docsrs, doc(cfg(feature = "adapter")))]
pub mod adapter;

pub use error::{Error, GeometryError};
pub use identity::{Adopted, Identity, IdentityName};
pub use key::{Key, Kind, ParseKeyError};
pub use log::{KEY_CURSORS, KEYS_BATCH, Maintenance, MountReport};
pub use persistence::{Blocking, Persistence, Transform, Transformed};
pub use store::{Config, KeyCursor, Store, Usage};
