//! The dataset formats. Each module opens one format and implements
//! [`Dataset`](crate::dataset::Dataset) for it.

pub mod array;
pub mod cifar;
pub mod folder;
pub mod idx;
pub mod manifest;
pub mod stl10;
