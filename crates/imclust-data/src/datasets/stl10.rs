//! PLACEHOLDER: being written.
use crate::dataset::{Dataset, DatasetSpec, Record};
use crate::error::{DataError, Result};
use crate::storage::Location;

pub struct Stl10 {
    spec: DatasetSpec,
}

impl Stl10 {
    pub async fn open(spec: DatasetSpec, _root: Location) -> Result<Self> {
        Err(DataError::invalid(spec.to_string(), "not implemented yet"))
    }
}

#[async_trait::async_trait]
impl Dataset for Stl10 {
    fn spec(&self) -> &DatasetSpec { &self.spec }
    fn len(&self) -> u64 { 0 }
    fn class_names(&self) -> Option<&[String]> { None }
    fn fingerprint(&self) -> &str { "" }
    async fn read(&self, _range: std::ops::Range<u64>) -> Result<Vec<Record>> { Ok(vec![]) }
}
