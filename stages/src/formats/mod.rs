//! Readers and writers of the on-disk annotation formats.

pub mod pts;
