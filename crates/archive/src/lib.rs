//! Function packages: format sniffing (runtime-protocol §5.10) and extraction
//! that never writes outside its folder.

mod extract;
mod format;

pub use extract::{extract, extract_file, ExtractError, Limits, Stats};
pub use format::{sniff, Format};
