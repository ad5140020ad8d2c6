//! Bad records: what to do with them (`on_bad_record = "fail" | "skip"`) and how skipped
//! ones are reported (one JSON object per line in `errors.jsonl`). Nothing is dropped
//! silently: a skipped record is listed with its index, id and reason, and counted.

use crate::error::{DataError, Result};
use serde::{Deserialize, Serialize};

/// The policy for records that cannot be read or decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBadRecord {
    /// Stop at the first bad record with an error naming it (the default).
    #[default]
    Fail,
    /// Leave it out, list it in `errors.jsonl` and count it in the metrics.
    Skip,
}

impl std::str::FromStr for OnBadRecord {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fail" => Ok(OnBadRecord::Fail),
            "skip" => Ok(OnBadRecord::Skip),
            _ => Err(DataError::invalid(format!("on_bad_record '{s}'"), "use fail or skip")),
        }
    }
}

/// One record left out, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRecord {
    pub index: u64,
    pub id: String,
    pub reason: String,
}

impl BadRecord {
    /// The error this record is under `on_bad_record = "fail"`.
    pub fn into_error(self, dataset: &str) -> DataError {
        DataError::BadRecord { dataset: dataset.to_string(), index: self.index, id: self.id, reason: self.reason }
    }
}

/// `errors.jsonl`: one JSON object per bad record, in index order.
pub fn to_jsonl(bad: &[BadRecord]) -> String {
    let mut out = String::new();
    for b in bad {
        out.push_str(&serde_json::to_string(b).expect("plain struct"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_bad_records_serialise() {
        assert_eq!("skip".parse::<OnBadRecord>().unwrap(), OnBadRecord::Skip);
        assert!("ignore".parse::<OnBadRecord>().unwrap_err().to_string().contains("fail or skip"));
        let b = vec![BadRecord { index: 3, id: "s3://b/x.jpg".into(), reason: "corrupt \"JPEG\"".into() }];
        let text = to_jsonl(&b);
        assert_eq!(text, "{\"index\":3,\"id\":\"s3://b/x.jpg\",\"reason\":\"corrupt \\\"JPEG\\\"\"}\n");
        let back: BadRecord = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(back, b[0]);
        let e = b[0].clone().into_error("folder:/d").to_string();
        assert!(e.contains("record 3") && e.contains("x.jpg") && e.contains("skip"), "{e}");
    }
}
