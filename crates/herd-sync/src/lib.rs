//! File distribution (rsync modules and Encluster's `dua`, reborn), the parts without a network:
//!
//! - [`manifest`]: what a tree holds (paths, kinds, sizes, modes, owners, mtimes, symlink
//!   targets, and BLAKE3 hashes when asked), read without following symlinks;
//! - [`plan`]: what must change in a destination to make it the source (create, replace, fix
//!   metadata, delete), in an order that is always safe to apply;
//! - [`apply`]: applying a plan under a destination root: paths are checked (no `..`, no
//!   absolute paths, no symlink leading out), new content goes to a temporary file that is
//!   renamed into place, so an interrupted sync leaves every file old or new.
//!
//! The agent carries manifests and content between nodes; this crate decides and writes.

pub mod apply;
pub mod delta;
pub mod dest;
pub mod manifest;
pub mod path;
pub mod plan;
